"""`nvbind metrics`: Prometheus text exposition (format 0.0.4).

GPU figures come from NVML (utilisation, memory, temperature, power, running processes),
through the same backend interface the simulated host uses in tests; processes are
attributed to containers through /proc/<pid>/cgroup. nvbind's own counters come from its
log: hook invocations by stage and outcome, and a duration histogram per stage.
`--listen ADDR` serves /metrics over HTTP (loopback by default).
"""

import json
import re

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ID = re.compile(r"(?:docker|libpod|crio|cri-containerd|containerd)-([0-9a-f]{12,64})\.scope|/([0-9a-f]{64})(?:/|$)")


def container_of(root: str, pid: int) -> str | None:
    """The container id of `pid`, from its cgroup path (docker, podman, CRI-O, containerd,
    plain runc with cgroupfs); None for host processes."""
    try:
        with open(f"{root.rstrip('/')}/proc/{pid}/cgroup") as f:
            text = f.read(65536)
    except OSError:
        return None
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        m = _ID.search(path)
        if m:
            return m.group(1) or m.group(2)
    for line in text.splitlines():      # runc/crun with cgroupfs: /<id> or /machine/<id>
        path = line.split(":", 2)[-1].rstrip("/")
        last = path.rsplit("/", 1)[-1]
        if last and path.count("/") >= 1 and not last.endswith((".slice", ".scope", ".service")) \
                and last not in ("", "user", "init.scope"):
            return last
    return None


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(d: dict) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in d.items()) + "}" if d else ""


class Exposition:
    def __init__(self):
        self.families: dict[str, tuple[str, str, list]] = {}

    def add(self, name, kind, help_, labels, value):
        fam = self.families.setdefault(name, (kind, help_, []))
        fam[2].append((labels, value))

    def text(self) -> str:
        out = []
        for name, (kind, help_, samples) in self.families.items():
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                suffix, labels = labels.pop("__suffix", ""), labels
                out.append(f"{name}{suffix}{_labels(labels)} {_num(value)}")
        return "\n".join(out) + "\n"


def _num(v) -> str:
    if v == float("inf"):
        return "+Inf"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def gpu_metrics(exp: Exposition, inv, telemetry, root: str) -> None:
    for g in inv.gpus:
        base = {"gpu": str(g.index), "uuid": g.uuid}
        exp.add("nvbind_gpu_info", "gauge", "GPUs nvbind sees (value 1)",
                {**base, "model": g.model, "bus_id": g.bus_id, "driver": inv.driver_version or ""}, 1)
    if telemetry is None:
        return
    for s in telemetry.stats():
        base = {"gpu": str(s["index"]), "uuid": s["uuid"]}
        exp.add("nvbind_gpu_utilization_ratio", "gauge", "GPU busy time, 0..1", dict(base), s["util"] / 100)
        exp.add("nvbind_gpu_memory_used_bytes", "gauge", "GPU memory in use", dict(base), s["mem_used"])
        exp.add("nvbind_gpu_memory_total_bytes", "gauge", "GPU memory in all", dict(base), s["mem_total"])
        exp.add("nvbind_gpu_temperature_celsius", "gauge", "GPU temperature", dict(base), s["temp"])
        exp.add("nvbind_gpu_power_watts", "gauge", "GPU power draw", dict(base), s["power_mw"] / 1000)
        per: dict[str, int] = {}
        for pid, used in s["processes"]:
            cid = container_of(root, pid) or "host"
            per[cid] = per.get(cid, 0) + (used or 0)
        for cid, used in sorted(per.items()):
            exp.add("nvbind_container_gpu_memory_used_bytes", "gauge",
                    "GPU memory used by the processes of a container ('host': outside containers)",
                    {**base, "container": cid}, used)


def log_metrics(exp: Exposition, log_path: str | None) -> None:
    counts: dict[tuple, int] = {}
    hist: dict[str, list] = {}
    if log_path:
        try:
            with open(log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - (64 << 20)))      # the newest 64 MiB at most
                data = f.read().decode("utf-8", "replace")
        except OSError:
            data = ""
        for line in data.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict) or "stage" not in e:
                continue
            key = (str(e["stage"]), str(e.get("outcome", "unknown")))
            counts[key] = counts.get(key, 0) + 1
            d = e.get("duration_ms")
            if isinstance(d, (int, float)):
                h = hist.setdefault(key[0], [[0] * len(BUCKETS), 0, 0.0])
                for i, b in enumerate(BUCKETS):
                    if d / 1000 <= b:
                        h[0][i] += 1
                h[1] += 1
                h[2] += d / 1000
    for (stage, outcome), n in sorted(counts.items()):
        exp.add("nvbind_hook_invocations_total", "counter", "hook runs by stage and outcome (from the log)",
                {"stage": stage, "outcome": outcome}, n)
    for stage, (buckets, count, total) in sorted(hist.items()):
        for b, n in zip(BUCKETS, buckets):
            exp.add("nvbind_hook_duration_seconds", "histogram", "hook run time (from the log)",
                    {"__suffix": "_bucket", "stage": stage, "le": _num(b)}, n)
        exp.add("nvbind_hook_duration_seconds", "histogram", "",
                {"__suffix": "_bucket", "stage": stage, "le": "+Inf"}, count)
        exp.add("nvbind_hook_duration_seconds", "histogram", "", {"__suffix": "_sum", "stage": stage}, total)
        exp.add("nvbind_hook_duration_seconds", "histogram", "", {"__suffix": "_count", "stage": stage}, count)


def collect(inv, telemetry, root: str, log_path: str | None) -> str:
    exp = Exposition()
    gpu_metrics(exp, inv, telemetry, root)
    log_metrics(exp, log_path)
    exp.add("nvbind_up", "gauge", "1 when nvbind could read the host",
            {"backend": "nvml" if telemetry is not None else "procfs"}, 1 if inv.driver_version else 0)
    return exp.text()


def serve(addr: str, render, max_requests: int | None = None) -> None:
    """A minimal HTTP/1.0 server for GET /metrics (no http.server: keeps the build small)."""
    import socket
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(16)
    print(f"serving http://{addr}/metrics", flush=True)
    served = 0
    while max_requests is None or served < max_requests:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            try:
                req = conn.recv(4096).decode("latin-1")
            except OSError:
                continue
            parts = req.split(" ", 2)
            if len(parts) >= 2 and parts[0] == "GET" and parts[1].split("?")[0] == "/metrics":
                body, status = render().encode(), "200 OK"
            else:
                body, status = b"not found: try /metrics\n", "404 Not Found"
            conn.sendall(f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            served += 1


def main(settings, ns) -> int:
    """`nvbind metrics [--listen [ADDR:]PORT]`."""
    import sys
    from nvbind.host import inventory
    listen = ns.listen
    if listen and ":" not in listen:
        listen = f"127.0.0.1:{listen}"

    def render() -> str:
        backend, _ = inventory.backend_for(settings.root)
        try:
            inv = inventory.build(settings.root, backend)
            return collect(inv, backend if backend.name == "nvml" else None, settings.root,
                           settings.log)
        finally:
            getattr(backend, "close", lambda: None)()
    if listen:
        serve(listen, render)
        return 0
    sys.stdout.write(render())
    return 0

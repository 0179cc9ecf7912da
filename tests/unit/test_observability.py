"""doctor, metrics and info on simulated hosts: every check and every metric family."""
import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import nvbind_cmd, run_nvbind
from nvbind.admin import metrics
from nvbind.host import inventory
from nvbind.host.procfs import ProcfsBackend


@pytest.fixture
def root(sim_root, tmp_path):
    r = str(tmp_path / "root")
    subprocess.run(["cp", "-a", sim_root, r], check=True)
    return r


def doctor(root, tmp_path, **env):
    r = run_nvbind(["--root", root, "doctor", "--json"],
                   env={"NVBIND_CACHE_DIR": str(tmp_path / "cache"), "NVBIND_LOG": str(tmp_path / "log"), **env})
    out = json.loads(r.stdout)
    return r.returncode, {c["check"]: c for c in out["checks"]}, out


def test_doctor_healthy_sim_host(root, tmp_path):
    run_nvbind(["--root", root, "info", "--refresh"], env={"NVBIND_CACHE_DIR": str(tmp_path / "cache")})
    rc, checks, out = doctor(root, tmp_path)
    for name in ("driver", "driver libraries", "persistence", "device nodes", "ld cache",
                 "cgroups / live injection", "log file", "inventory cache", "lease directory"):
        assert checks[name]["status"] == "pass", checks[name]
    assert rc == out["exit_status"] == max({"pass": 0, "warn": 1, "fail": 3}[c["status"]]
                                            for c in checks.values())
    assert all(c["fix"] for c in checks.values() if c["status"] != "pass")


@pytest.mark.parametrize("breakage, check, status", [
    (lambda r, t: os.unlink(r + "/dev/nvidia1"), "device nodes", "fail"),
    (lambda r, t: os.unlink(r + "/dev/nvidiactl"), "device nodes", "fail"),
    (lambda r, t: os.unlink(r + "/proc/driver/nvidia/version"), "driver", "fail"),
    (lambda r, t: os.unlink(r + "/usr/lib64/libcuda.so.550.54.14"), "driver libraries", "fail"),
    (lambda r, t: os.unlink(r + "/run/nvidia-persistenced/socket"), "persistence", "warn"),
    (lambda r, t: os.unlink(r + "/etc/ld.so.cache"), "ld cache", "warn"),
    (lambda r, t: None, "inventory cache", "warn"),
])
def test_doctor_finds_each_problem(root, tmp_path, breakage, check, status):
    breakage(root, tmp_path)
    rc, checks, _ = doctor(root, tmp_path)
    assert checks[check]["status"] == status, checks[check]
    assert rc >= {"warn": 1, "fail": 3}[status]


def test_doctor_engines_and_cdi(root, tmp_path):
    hooks = os.path.join(root, "usr/share/containers/oci/hooks.d")
    os.makedirs(hooks)
    os.makedirs(root + "/usr/bin", exist_ok=True)
    with open(f"{hooks}/50-nvbind.json", "w") as f:
        json.dump({"version": "1.0.0", "hook": {"path": "/usr/local/bin/nvbind", "args": ["nvbind", "hook", "precreate"]},
                   "when": {"always": True}, "stages": ["precreate"]}, f)
    rc, checks, _ = doctor(root, tmp_path)
    assert checks["podman"]["status"] == "fail" and "without env" in checks["podman"]["detail"]
    assert checks["CDI spec"]["status"] == "warn"
    os.makedirs(root + "/etc/cdi")
    spec = root + "/etc/cdi/nvidia.json"
    assert run_nvbind(["--root", root, "cdi", "generate", "--output", spec],
                      env={"NVBIND_CACHE_DIR": str(tmp_path / "c")}).returncode == 0
    _, checks, _ = doctor(root, tmp_path)
    assert checks["CDI spec"]["status"] == "pass"
    os.unlink(root + "/usr/lib64/libnvidia-ml.so.550.54.14")      # a driver update later
    _, checks, _ = doctor(root, tmp_path)
    assert checks["CDI spec"]["status"] == "warn" and "stale" in checks["CDI spec"]["detail"]


def test_doctor_log_not_writable(root, tmp_path):
    _, checks, _ = doctor(root, tmp_path, NVBIND_LOG="/proc/nvbind-no/log")
    assert checks["log file"]["status"] == "fail"
    r = run_nvbind(["--root", root, "doctor"], env={"NVBIND_LOG": "/proc/nvbind-no/log"})
    assert r.returncode == 3 and b"[FAIL] log file" in r.stdout


# ---- metrics -------------------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
                     r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (-?[0-9.e+-]+|\+Inf|NaN)$')


def parse_exposition(text):
    """A strict reader of the Prometheus text format 0.0.4: every sample after its family's
    TYPE, labels well formed, histograms with increasing buckets ending in +Inf == _count."""
    assert text.endswith("\n")
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in types
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, line
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, line
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples.append((name, labels, float(m.group(3).replace("+Inf", "inf"))))
    for fam, kind in types.items():
        if kind == "histogram":
            for stage in {lab.get("stage") for n, lab, _ in samples if n == fam + "_count"}:
                b = [(lab["le"], v) for n, lab, v in samples if n == fam + "_bucket" and lab.get("stage") == stage]
                assert b[-1][0] == "+Inf" and [v for _, v in b] == sorted(v for _, v in b)
                count = next(v for n, lab, v in samples if n == fam + "_count" and lab.get("stage") == stage)
                assert b[-1][1] == count
    return types, samples


class FakeTelemetry(ProcfsBackend):
    """The NVML telemetry interface, answered from fixed figures for the simulated host."""
    name = "nvml"

    def stats(self):
        return [{"index": 0, "uuid": self.gpus()[0].uuid, "util": 37, "mem_used": 3 << 30,
                 "mem_total": 80 << 30, "temp": 41, "power_mw": 123456,
                 "processes": [(4242, 1 << 30), (4343, 2 << 30), (1, 5)]}]


def test_metrics_exposition(root, tmp_path):
    cid = "ab" * 32
    for pid, cg in ((4242, f"0::/system.slice/libpod-{cid}.scope\n"),
                    (4343, f"12:devices:/docker/{'cd' * 32}\n0::/\n"), (1, "0::/init.scope\n")):
        os.makedirs(f"{root}/proc/{pid}", exist_ok=True)
        with open(f"{root}/proc/{pid}/cgroup", "w") as f:
            f.write(cg)
    log = tmp_path / "log"
    log.write_text("\n".join(json.dumps(e) for e in (
        {"stage": "precreate", "outcome": "ok", "duration_ms": 20},
        {"stage": "precreate", "outcome": "ok", "duration_ms": 300},
        {"stage": "precreate", "outcome": "error", "duration_ms": 5},
        {"stage": "createRuntime", "outcome": "ok", "duration_ms": 70})) + "\nnot json\n")
    inv = inventory.build(root)
    text = metrics.collect(inv, FakeTelemetry(root), root, str(log))
    types, samples = parse_exposition(text)
    assert types["nvbind_hook_invocations_total"] == "counter"
    assert types["nvbind_hook_duration_seconds"] == "histogram"
    get = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples}
    uuid = inv.gpus[0].uuid
    g = (("gpu", "0"), ("uuid", uuid))
    assert get[("nvbind_gpu_utilization_ratio", g)] == 0.37
    assert get[("nvbind_gpu_memory_total_bytes", g)] == 80 << 30
    assert get[("nvbind_gpu_power_watts", g)] == 123.456
    assert get[("nvbind_gpu_temperature_celsius", g)] == 41
    per = {lab["container"]: v for n, lab, v in samples if n == "nvbind_container_gpu_memory_used_bytes"}
    assert per == {cid: 1 << 30, "cd" * 32: 2 << 30, "host": 5}
    calls = {(lab["stage"], lab["outcome"]): v for n, lab, v in samples if n == "nvbind_hook_invocations_total"}
    assert calls == {("precreate", "ok"): 2, ("precreate", "error"): 1, ("createRuntime", "ok"): 1}
    assert get[("nvbind_hook_duration_seconds_count", (("stage", "precreate"),))] == 3


def test_container_of_runtime_layouts(tmp_path):
    cases = {"0::/system.slice/crio-" + "e" * 64 + ".scope": "e" * 64,
             "0::/kubepods/besteffort/pod1/cri-containerd-" + "f" * 64 + ".scope": "f" * 64,
             "4:devices:/nvb-1234": "nvb-1234", "0::/user.slice/user-0.slice/session-1.scope": None}
    for i, (line, want) in enumerate(cases.items()):
        os.makedirs(tmp_path / "proc" / str(i))
        (tmp_path / "proc" / str(i) / "cgroup").write_text(line + "\n")
        assert metrics.container_of(str(tmp_path), i) == want, line


def test_metrics_listen(root, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen(nvbind_cmd() + ["--root", root, "metrics", "--listen", str(port)],
                         stdout=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "NVBIND_LOG": "off"})
    try:
        assert b"serving http://127.0.0.1:" in p.stdout.readline()
        for _ in range(50):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        types, samples = parse_exposition(body)
        assert "nvbind_gpu_info" in types and any(n == "nvbind_up" and v == 1 for n, _, v in samples)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
        assert e.value.code == 404
    finally:
        p.kill()
        p.wait()


def test_info_shows_cache_state(root, tmp_path):
    env = {"NVBIND_CACHE_DIR": str(tmp_path / "c")}
    assert b"missing or stale" in run_nvbind(["--root", root, "info"], env=env).stdout
    run_nvbind(["--root", root, "info", "--refresh"], env=env)
    out = json.loads(run_nvbind(["--root", root, "info", "--json"], env=env).stdout)
    assert out["cache"]["state"] == "fresh"


def test_notes_never_use_the_wording_podman_shows_instead_of_the_error(capsys):
    """podman shows only the first stderr line of a failed hook that matches its patterns
    (libpod/oci_util.go getOCIRuntimeError): warnings and notes must not match them, or
    they hide nvbind's error line (tests/packaging/test_deb.py shows it with podman)."""
    from nvbind import log
    podman = re.compile(r"(?i).*permission denied.*|.*operation not permitted.*|"
                        r".*executable file not found in.*|.*no such file or directory.*|"
                        r".*open executable.*")
    for text in ["warning: cannot write log /var/log/nvbind.log: Permission denied",
                 "warning: cannot write /run/nvbind: Operation not permitted",
                 "note: a: No such file or directory, b: PERMISSION DENIED, c: permission denied",
                 "executable file not found in $PATH; could not open executable"]:
        log.note(text)
        out = capsys.readouterr().err
        assert out.startswith("nvbind: ") and out.count("\n") == 1
        assert not podman.search(out), out
    log.note("warning: cannot write log x: Permission denied")
    assert capsys.readouterr().err == "nvbind: warning: cannot write log x: EACCES\n"

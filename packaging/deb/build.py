#!/usr/bin/env python3
"""Build dist/nvbind_<version>_amd64.deb from the frozen one-dir tree (`make deb`).

There is no debian/ source tree and no debhelper run: this script lays out the binary
package the way dh would (file modes, stripped objects, gzipped man page and changelog,
md5sums, conffiles, systemd maintainer-script snippets) and calls `dpkg-deb --build`.
Standard library only; needs binutils (readelf, strip, objdump) and dpkg-deb.

    python3 packaging/deb/build.py [--tree dist/nvbind-dir] [--version V] [--out dist]
"""

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PKG = "nvbind"
LIB = "/usr/lib/nvbind"
BIN = "/usr/bin/nvbind"
UNITDIR = "/lib/systemd/system"      # bookworm: units stay in /lib (merged-/usr moratorium)
UNITS_ENABLED = ["nvbind-cdi.service"]
UNITS_DISABLED = ["nvbind-metrics.service", "nvbind-device-plugin.service"]
HOOK_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NVBIND_LOG=/var/log/nvbind.log"]
MAINTAINER = "nvbind maintainers <maintainers@nvbind.invalid>"
# shared objects and executables: as dh_strip does it
STRIP = ["strip", "--remove-section=.comment", "--remove-section=.note", "--strip-unneeded"]
# only for macOS, or scripts to fetch sources: nothing on Linux reads them
DROP = ["nvbind_lazy/ctypes/macholib/fetch_macholib", "nvbind_lazy/ctypes/macholib/fetch_macholib.bat",
        "nvbind_lazy/ctypes/macholib/README.ctypes"]


def embedded_overrides(tree: str) -> str:
    """lintian-overrides' embedded-library lines for the libraries this tree carries (which
    depends on the Python it was built from), each by name: zlib (_internal/libz.so.1 beside
    python.org's zlib module, or linked into the launcher with Debian's built-in one), expat
    (linked into the launcher with Debian's built-in pyexpat, which names its version),
    libyaml (in PyYAML's C extension)."""
    with open(os.path.join(tree, "nvbind"), "rb") as f:
        launcher = f.read()
    found = []
    if os.path.exists(os.path.join(tree, "_internal", "libz.so.1")) or b"inflate " in launcher:
        found.append("zlib")
    if re.search(rb"expat_\d+\.\d+\.\d+", launcher):
        found.append("expat")
    yaml = os.path.join(tree, "_internal", "yaml")
    if os.path.isdir(yaml) and any(n.startswith("_yaml.") for n in os.listdir(yaml)):
        found.append("libyaml")
    return "\n".join(f"nvbind: embedded-library {n} [usr/lib/nvbind/*]" for n in found)


def version_from_source() -> str:
    with open(os.path.join(REPO, "hook", "nvbind", "__init__.py")) as f:
        m = re.search(r'^__version__\s*=\s*"([^"]+)"', f.read(), re.M)
    if not m:
        raise SystemExit("no __version__ in hook/nvbind/__init__.py")
    return m.group(1)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300, **kw)


def elf_kind(path: str) -> str | None:
    """'exec' (has a program interpreter), 'shared', or None for a file that is not ELF."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
    out = run(["readelf", "-hlW", path]).stdout
    # a static program (the shim's front end) has no interpreter but is an executable
    static = re.search(r"Type:\s+EXEC", out) is not None
    return "exec" if static or "Requesting program interpreter" in out else "shared"


def hook_file(stage: str, timeout: int) -> str:
    return json.dumps({"version": "1.0.0",
                       "hook": {"path": BIN, "args": ["nvbind", "hook", stage], "env": HOOK_ENV,
                                "timeout": timeout},
                       "when": {"always": True}, "stages": [stage]}, indent=2) + "\n"


def write(root: str, path: str, data: str | bytes, mode: int = 0o644) -> str:
    full = root + path
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(full, mode)
    return full


def gz(data: bytes) -> bytes:
    """gzip -9n: no name, no timestamp (reproducible, as lintian wants)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def read(name: str) -> str:
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def prepare_tree(tree: str, dest: str) -> dict:
    """Copy the one-dir tree; check its RUNPATHs, strip, fix modes. Returns facts."""
    shutil.copytree(tree, dest, symlinks=True)
    for rel in DROP:
        p = os.path.join(dest, "_internal", rel)
        if os.path.lexists(p):
            os.unlink(p)
    facts = {"glibc": (2, 17), "elf": 0}
    for d, dirs, files in os.walk(dest):
        os.chmod(d, 0o755)
        for n in files:
            p = os.path.join(d, n)
            if os.path.islink(p):
                continue
            kind = elf_kind(p)
            if kind is None:
                os.chmod(p, 0o644)
                continue
            facts["elf"] += 1
            paths = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]",
                               run(["readelf", "-dW", p]).stdout)
            if not all(x.startswith("$ORIGIN") for rp in paths for x in rp.split(":")):
                # make dist (pyi_options.relocatable_tree) leaves only $ORIGIN-relative
                # ones, into _internal; a build machine's directory must not be shipped
                raise SystemExit(f"{p}: RUNPATH {paths} outside the tree: rebuild with make dist")
            run(STRIP + [p])
            os.chmod(p, 0o755 if kind == "exec" else 0o644)
            # a static program (the shim's front end) has no dynamic symbols, and needs no libc
            syms = subprocess.run(["objdump", "-T", p], capture_output=True, text=True, timeout=300)
            for v in re.findall(r"GLIBC_(\d+)\.(\d+)", syms.stdout if syms.returncode == 0 else ""):
                facts["glibc"] = max(facts["glibc"], (int(v[0]), int(v[1])))
    return facts


def maintainer_scripts() -> dict[str, str]:
    """The snippets dh_installsystemd (debhelper 13.11) writes, for these units."""
    enable = "".join(f"""
	# was-enabled defaults to true, so new installations run enable.
	if deb-systemd-helper --quiet was-enabled '{u}'; then
		# Enables the unit on first installation, creates new
		# symlinks on upgrades if the unit file has changed.
		deb-systemd-helper enable '{u}' >/dev/null || true
	else
		# Update the statefile to add new symlinks (if any), which need to be
		# cleaned up on purge. Also remove old symlinks.
		deb-systemd-helper update-state '{u}' >/dev/null || true
	fi
""" for u in UNITS_ENABLED)
    dont_enable = "".join(f"""
	# disabled by default: enabled only where the admin enabled it before
	if deb-systemd-helper debian-installed '{u}'; then
		if deb-systemd-helper --quiet was-enabled '{u}'; then
			deb-systemd-helper enable '{u}' >/dev/null || true
		fi
	fi
	deb-systemd-helper update-state '{u}' >/dev/null || true
""" for u in UNITS_DISABLED)
    all_units = " ".join(UNITS_ENABLED + UNITS_DISABLED)
    postinst = f"""#!/bin/sh
set -e

if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
{enable}{dont_enable}fi

if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
	if [ -z "${{DPKG_ROOT:-}}" ] && [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			# upgrade: restart what runs (the disabled units only if the admin started them)
			deb-systemd-invoke try-restart {all_units} >/dev/null || true
		fi
		deb-systemd-invoke start {' '.join(UNITS_ENABLED)} >/dev/null || true
	fi
fi

exit 0
"""
    prerm = f"""#!/bin/sh
set -e

if [ -z "${{DPKG_ROOT:-}}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
	deb-systemd-invoke stop {all_units} >/dev/null || true
fi

exit 0
"""
    postrm = f"""#!/bin/sh
set -e

if [ "$1" = "remove" ] || [ "$1" = "purge" ]; then
	# the CDI spec nvbind-cdi.service wrote names /usr/bin/nvbind's hooks: without
	# nvbind, a container asking for nvidia.com/gpu would fail at its hook
	if [ -f /var/run/cdi/nvidia.json ] && grep -q -e '"/usr/lib/nvbind/nvbind"' -e '"/usr/bin/nvbind"' /var/run/cdi/nvidia.json; then
		rm -f /var/run/cdi/nvidia.json
	fi
fi

if [ "$1" = "purge" ]; then
	# what nvbind itself creates: the hook log, caches and GPU leases
	rm -f /var/log/nvbind.log
	rm -rf /run/nvbind
fi

if [ -z "${{DPKG_ROOT:-}}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
	systemctl --system daemon-reload >/dev/null || true
fi

if [ "$1" = "purge" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper purge {all_units} >/dev/null || true
	fi
fi

exit 0
"""
    return {"postinst": postinst, "prerm": prerm, "postrm": postrm}


def build(tree: str, version: str, out: str, work: str, k8s: str) -> str:
    for f in (os.path.join(tree, "nvbind"), k8s):
        if not os.path.isfile(f):
            raise SystemExit(f"{f} missing: run `make dist` first")
    root = os.path.join(work, "root")
    if os.path.lexists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    os.chmod(root, 0o755)
    facts = prepare_tree(tree, root + LIB)
    # the device plugin: the same program with gRPC, one file (grpc stays out of the
    # one-dir tree the hooks run; packaging/pyi_options.py). It unpacks itself once per
    # start of nvbind-device-plugin.service, which is a long-running daemon.
    shutil.copyfile(k8s, root + LIB + "/nvbind-k8s")
    run(STRIP + [root + LIB + "/nvbind-k8s"])
    os.chmod(root + LIB + "/nvbind-k8s", 0o755)

    # the commands: symlinks into the tree (the launcher finds its tree through
    # /proc/self/exe). nvbind-runtime is the shim's exec front end (packaging/frontend),
    # which runs nvbind beside it only for a create/run that could ask for a GPU.
    os.makedirs(root + "/usr/bin")
    os.symlink("../lib/nvbind/nvbind", f"{root}/usr/bin/nvbind")
    front = "nvbind-runtime" if os.path.exists(tree + "/nvbind-runtime") else "nvbind"
    os.symlink(f"../lib/nvbind/{front}", f"{root}/usr/bin/nvbind-runtime")

    write(root, "/etc/nvbind/config.toml", read("config.toml"))
    # createRuntime + poststop: podman, CRI-O and buildah all accept these stages
    hooks = "/usr/share/containers/oci/hooks.d"
    write(root, f"{hooks}/50-nvbind-oci.json", hook_file("createRuntime", 30))
    write(root, f"{hooks}/50-nvbind-poststop.json", hook_file("poststop", 10))
    # precreate: buildah refuses the stage ("unknown stage"), so only where the admin
    # names this directory (README.Debian)
    write(root, "/usr/share/nvbind/hooks.d/50-nvbind-precreate.json", hook_file("precreate", 10))

    man = read("nvbind.1").replace("@VERSION@", version).encode()
    write(root, "/usr/share/man/man1/nvbind.1.gz", gz(man))
    os.symlink("nvbind.1.gz", f"{root}/usr/share/man/man1/nvbind-runtime.1.gz")

    doc = "/usr/share/doc/nvbind"
    write(root, f"{doc}/copyright", read("copyright"))
    # a native version (no Debian revision): lintian wants changelog.gz, not changelog.Debian.gz
    write(root, f"{doc}/changelog.gz", gz(read("changelog").replace("@VERSION@", version).encode()))
    write(root, f"{doc}/README.Debian", read("README.Debian"))
    write(root, "/usr/share/lintian/overrides/nvbind",
          read("lintian-overrides").replace("@EMBEDDED@", embedded_overrides(tree)))
    for u in UNITS_ENABLED + UNITS_DISABLED:
        write(root, f"{UNITDIR}/{u}", read(u))

    for d, dirs, _ in os.walk(root):
        for n in dirs:
            os.chmod(os.path.join(d, n), 0o755)

    # control area
    ctl = os.path.join(root, "DEBIAN")
    os.makedirs(ctl)
    size = 0
    sums = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if os.path.join(d, x) != ctl)
        size += 1
        for n in sorted(files):
            p = os.path.join(d, n)
            size += 1
            if os.path.islink(p):
                continue
            size += (os.path.getsize(p) + 1023) // 1024
            rel = os.path.relpath(p, root)
            if not rel.startswith("etc/"):
                with open(p, "rb") as f:
                    sums.append(f"{hashlib.md5(f.read()).hexdigest()}  {rel}\n")
    glibc = "%d.%d" % facts["glibc"]
    # the front end is linked statically against musl: the source it was built from
    musl = run(["dpkg-query", "-W", "-f=${Version}", "musl-dev"]).stdout.strip()
    control = f"""Package: {PKG}
Version: {version}
Architecture: amd64
Maintainer: {MAINTAINER}
Installed-Size: {size}
Depends: libc6 (>= {glibc}), init-system-helpers (>= 1.54~)
Built-Using: musl (= {musl})
Suggests: podman | cri-o | containerd | docker.io
Section: admin
Priority: optional
Description: GPU injection hook for OCI containers
 nvbind gives containers access to NVIDIA GPUs: device nodes, the driver's
 user-space libraries and utilities, and the cgroup device rules that let
 the container open them. Engines run it as an OCI hook (podman, CRI-O,
 buildah, runc, crun), as a runtime shim (docker, containerd) or through a
 CDI spec that nvbind-cdi.service keeps current (podman, Kubernetes).
 .
 The program is a self-contained frozen Python application under
 /usr/lib/nvbind; it needs no Python on the host.
"""
    write(root, "/DEBIAN/control", control)
    write(root, "/DEBIAN/conffiles", "/etc/nvbind/config.toml\n")
    write(root, "/DEBIAN/md5sums", "".join(sums))
    for name, text in maintainer_scripts().items():
        write(root, f"/DEBIAN/{name}", text, 0o755)

    os.makedirs(out, exist_ok=True)
    deb = os.path.join(out, f"{PKG}_{version}_amd64.deb")
    env = dict(os.environ, SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "1764374400"))
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, deb], env=env)
    print(f"{deb}: {facts['elf']} ELF objects stripped, libc6 >= {glibc}, {size} KiB installed")
    return deb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", default=os.path.join(REPO, "dist", "nvbind-dir"))
    ap.add_argument("--version", default=None, help="package version (default: nvbind.__version__)")
    ap.add_argument("--k8s", default=os.path.join(REPO, "dist", "nvbind-k8s"),
                    help="the one-file build with gRPC, for the device plugin")
    ap.add_argument("--out", default=os.path.join(REPO, "dist"))
    ap.add_argument("--work", default=os.path.join(REPO, "build", "deb"))
    a = ap.parse_args()
    build(os.path.abspath(a.tree), a.version or version_from_source(), os.path.abspath(a.out),
          os.path.abspath(a.work), os.path.abspath(a.k8s))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a non-root nvbind keeps caches and leases (settings.user_runtime_dir / _defaults).

Run as real subprocesses under other uids (setpriv), so geteuid, /proc/self/uid_map and
directory ownership are the kernel's, not mocked. The end-to-end side (rootless podman) is
tests/engines/test_rootless.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import IS_ROOT, REPO

# the defaults, not Settings().config: a config file an admin left in /etc/nvbind would
# override them (and need jsonschema, which the system python lacks)
CODE = ("import json, nvbind.settings as s; d, why = s.user_runtime_dir(); "
        "c = s._defaults(); print(json.dumps([s.host_root(), d, why, c['cache_dir'], c['lease_dir']]))")


def _as(uid, env, tmp_path, userns=False):
    src = tmp_path / "src"         # a copy the uid can read, wherever the checkout lies
    if not src.exists():
        shutil.copytree(f"{REPO}/hook/nvbind", src / "nvbind",
                        ignore=shutil.ignore_patterns("__pycache__", "k8s"))
    pre = ["unshare", "--user", "--map-root-user"] if userns else []
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *pre,
           "env", "-i", "PATH=/usr/bin:/bin", f"PYTHONPATH={src}", "PYTHONDONTWRITEBYTECODE=1",
           *[f"{k}={v}" for k, v in env.items()], "/usr/bin/python3", "-c", CODE]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


needs_root = pytest.mark.skipif(not IS_ROOT, reason="setpriv to other uids needs root")


@pytest.fixture
def open_tmp():
    """A temp dir other users can reach (pytest's are private to root)."""
    import pathlib
    import tempfile
    d = tempfile.mkdtemp(prefix="nvbind-rlset-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d)


def test_root_keeps_run_nvbind():
    if not IS_ROOT:
        pytest.skip("needs root")
    from nvbind import settings
    assert settings.host_root()
    assert settings._defaults()["cache_dir"] == "/run/nvbind"
    assert settings._defaults()["lease_dir"] == "/run/nvbind/leases"


@needs_root
@pytest.mark.parametrize("userns", [False, True], ids=["plain-user", "userns-root"])
def test_user_runtime_dir(open_tmp, userns):
    tmp_path = open_tmp
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no /usr/bin/python3")
    uid = 65534                       # nobody: no /run/user/65534 on this machine
    assert not os.path.exists(f"/run/user/{uid}")
    mine = tmp_path / "xdg"
    mine.mkdir(mode=0o700)
    os.chown(mine, uid, uid)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chown(shared, uid, uid)
    os.chmod(shared, 0o777)
    # own, private dir: used; (in a user namespace, as rootless podman's hooks: uid 0 there)
    root, d, why, cache, lease = _as(uid, {"XDG_RUNTIME_DIR": str(mine)}, tmp_path, userns)
    assert not root and d == f"{mine}/nvbind" and cache == d and lease == f"{d}/leases" and not why
    # unset, someone else's (/tmp: root's), or writable by others: no cache, no leases
    for env in ({}, {"XDG_RUNTIME_DIR": "/tmp"}, {"XDG_RUNTIME_DIR": str(shared)},
                {"XDG_RUNTIME_DIR": "relative"}):
        root, d, why, cache, lease = _as(uid, env, tmp_path, userns)
        assert (root, d, cache, lease) == (False, None, "off", ""), env
        assert f"uid {uid}" in why and "not root" in why

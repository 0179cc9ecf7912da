"""One trust rule for every cache (issue 13, 4): the config cache, the inventory cache and
the lease directory are trusted only when directory and file are owned by root and
writable by neither group nor others; temp files never follow a planted link."""
import json
import os

import pytest

from conftest import base_config, run_nvbind
from nvbind import settings as config
from nvbind.sysio import trust

NOBODY = 65534


def _cfile(cache, path):
    return cache / os.path.basename(config._cache_file(str(cache), str(path)))


def _forge(cache, path, doc):
    """What another user with write access to the cache directory would plant: a cache
    entry matching the real file's key, saying something else."""
    st = os.stat(path)
    key = [str(path), st.st_ino, st.st_size, st.st_mtime_ns]
    _cfile(cache, path).write_text(json.dumps({"key": key, "config": doc}))


@pytest.mark.parametrize("how", ["dir-owner", "dir-mode", "file-owner", "file-mode", "symlink"])
def test_forged_config_cache_is_ignored(tmp_path, monkeypatch, how):
    cfg = tmp_path / "config.toml"
    cfg.write_text('default_profile = "default"\n')
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    evil = {"profiles": {"default": {"mounts": [{"source": "/", "destination": "/host"}]}}}
    if how == "symlink":
        elsewhere = tmp_path / "elsewhere.json"
        st = os.stat(cfg)
        elsewhere.write_text(json.dumps({"key": [str(cfg), st.st_ino, st.st_size, st.st_mtime_ns],
                                         "config": evil}))
        os.symlink(elsewhere, _cfile(cache, cfg))
    else:
        _forge(cache, cfg, evil)
    f = _cfile(cache, cfg)
    if how == "dir-owner":
        os.chown(cache, NOBODY, NOBODY)
    elif how == "dir-mode":
        cache.chmod(0o777)
    elif how == "file-owner":
        os.chown(f, NOBODY, NOBODY)
    elif how == "file-mode":
        f.chmod(0o666)
    monkeypatch.setenv("NVBIND_CACHE_DIR", str(cache))
    conf = config.load(str(cfg))
    assert conf["profiles"] == {}, how        # the forged profile never applies
    # and the trusted cache works (the control): same entry, root-owned, 0644, 0755 dir
    os.chown(cache, 0, 0)
    cache.chmod(0o755)
    if how == "symlink":
        os.unlink(f)
    _forge(cache, cfg, evil)
    f.chmod(0o644)
    os.chown(f, 0, 0)
    assert config.load(str(cfg))["profiles"] == evil["profiles"]


def test_cache_dir_owned_by_another_user_through_the_hook(sim_root, tmp_path):
    """Through `hook precreate`: a cache dir owned by nobody holding a forged config cache
    and a forged inventory: the container gets what the real configuration says."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('capabilities = ["utility"]\n')
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    _forge(cache, cfg, {"capabilities": ["compute", "utility"],
                        "profiles": {"default": {"mounts": [{"source": "/", "destination": "/host"}]}}})
    os.chown(cache, NOBODY, NOBODY)
    os.chown(_cfile(cache, cfg), NOBODY, NOBODY)
    r = run_nvbind(["--root", sim_root, "--config", str(cfg), "hook", "precreate"],
                   json.dumps(base_config(env=["NVIDIA_VISIBLE_DEVICES=1",
                                               "NVIDIA_DRIVER_CAPABILITIES=utility"])),
                   env={"NVBIND_CACHE_DIR": str(cache), "NVBIND_LOG": "off", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "/host" not in [m["destination"] for m in out.get("mounts", [])]
    # nothing of ours was written into the untrusted directory
    assert sorted(os.listdir(cache)) == [_cfile(cache, cfg).name]


def test_temp_files_never_follow_a_planted_link(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    f = _cfile(cache, cfg)
    os.symlink(victim, cache / f".{f.name}.nvbind-{os.getpid()}")
    monkeypatch.setenv("NVBIND_CACHE_DIR", str(cache))
    config.load(str(cfg))               # cannot write its cache: fine, and nothing clobbered
    assert victim.read_text() == "keep"


def test_one_rule():
    st = os.stat("/")
    assert trust.untrusted_stat(st) is None
    assert "owned by uid" in trust.untrusted_stat(os.stat_result((0o40755, 0, 0, 0, NOBODY, 0, 0, 0, 0, 0)))
    assert "writable" in trust.untrusted_stat(os.stat_result((0o40775, 0, 0, 0, 0, 0, 0, 0, 0, 0)))

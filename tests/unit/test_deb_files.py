"""The Debian package's source files (packaging/deb), checked without building it."""
import configparser
import json
import os
import re
import importlib.util
import subprocess

from conftest import REPO, run_nvbind

DEB = os.path.join(REPO, "packaging", "deb")
# loaded by path: `build` would also name the PyInstaller work directory beside the cwd
_spec = importlib.util.spec_from_file_location("nvbind_deb_build", os.path.join(DEB, "build.py"))
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_default_config_validates_commented_and_uncommented(tmp_path):
    """The shipped file validates as is, and with every commented setting switched on."""
    src = os.path.join(DEB, "config.toml")
    on = tmp_path / "on.toml"
    text = open(src).read()
    on.write_text(re.sub(r"^#([a-z\[])", r"\1", text, flags=re.M))
    assert text.count("\n#") > on.read_text().count("\n#")
    for path in (src, str(on)):
        r = run_nvbind(["config", "validate", path])
        assert r.returncode == 0 and b": valid" in r.stdout, r.stderr


def test_hook_entries_have_env_and_timeout():
    for stage in ("createRuntime", "poststop", "precreate"):
        doc = json.loads(build.hook_file(stage, 10))
        assert doc["stages"] == [stage] and doc["hook"]["path"] == "/usr/bin/nvbind"
        assert doc["hook"]["env"] and doc["hook"]["timeout"] == 10
        assert "PATH=/usr/sbin:/usr/bin:/sbin:/bin" in doc["hook"]["env"]


def test_maintainer_scripts_are_sh_and_name_every_unit():
    units = build.UNITS_ENABLED + build.UNITS_DISABLED
    for name, text in build.maintainer_scripts().items():
        assert text.startswith("#!/bin/sh\nset -e\n"), name
        r = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
        assert r.returncode == 0, (name, r.stderr)
    scripts = build.maintainer_scripts()
    for u in units:
        assert u in scripts["postinst"] and u in scripts["prerm"] and u in scripts["postrm"]
        assert os.path.exists(os.path.join(DEB, u))


def test_units_run_verbs_nvbind_has():
    for u in build.UNITS_ENABLED + build.UNITS_DISABLED:
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.read(os.path.join(DEB, u))
        cmd = cp["Service"]["ExecStart"].split()
        assert cmd[0] in ("/usr/bin/nvbind", "/usr/lib/nvbind/nvbind-k8s")
        assert cp["Install"]["WantedBy"] == "multi-user.target"
        usage = run_nvbind(["--help"]).stdout.decode()
        assert re.search(rf"^  {re.escape(cmd[1])}\b", usage, re.M), cmd


def test_embedded_library_overrides_name_what_the_tree_carries(tmp_path):
    """lintian-overrides gets an embedded-library line per library this build's tree
    carries, by name (a library found embedded that is not one of these stays an error)."""
    def tree(launcher: bytes, files=()):
        t = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        (t / "_internal").mkdir(parents=True)
        (t / "nvbind").write_bytes(launcher)
        for f in files:
            (t / "_internal" / f).parent.mkdir(parents=True, exist_ok=True)
            (t / "_internal" / f).write_bytes(b"")
        return str(t)
    names = lambda t: re.findall(r"embedded-library (\S+) \[usr/lib/nvbind/\*\]",  # noqa: E731
                                 build.embedded_overrides(t))
    # python.org's build: zlib is an extension module beside libz.so.1; PyYAML's C extension
    assert names(tree(b"\0launcher\0", ["libz.so.1", "yaml/_yaml.cpython-311-x86_64-linux-gnu.so"])) \
        == ["zlib", "libyaml"]
    # Debian's: zlib and pyexpat built into the launcher, expat naming its version
    assert names(tree(b"\0inflate 1.2.13 Copyright\0expat_2.5.0\0")) == ["zlib", "expat"]
    assert names(tree(b"\0")) == []
    src = open(os.path.join(DEB, "lintian-overrides")).read()
    assert "@EMBEDDED@" in src and "embedded-library" not in src.replace("embedded-library lines", "")

# nvbind: every target installs what it needs on a fresh Debian 12 machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PKGS := runc crun podman uidmap busybox-static gcc libc6-dev python3-venv binutils strace time \
  debootstrap docker.io containerd buildah musl-tools python3-dev patchelf
# make dist: musl-tools (the shim's front end), python3-dev (Python.h and the static
# libpython3.11.a linked into the tree's launcher, where the Python is Debian's), patchelf
# ($ORIGIN RUNPATHs in the tree)
# make deb: lintian; its test: systemd-analyze, man
DEB_PKGS := dpkg-dev lintian systemd man-db
SIM ?= .sim

.PHONY: setup apt venv demo test unit e2e bench clean proto realhost real deb debian-python

setup: apt venv

# System packages for the engines and the simulated host (root only; skipped when present).
apt:
	@missing=""; for p in $(APT_PKGS) $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  echo "apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.stamp: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q --config-settings editable_mode=compat -e '.[test,k8s]'
	touch $@

venv: $(VENV)/.stamp

# The main job: a real podman container gets a simulated GPU through nvbind's precreate hook.
demo: setup
	$(PY) tools/demo.py --state $(SIM)

test: setup dist deb
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory debian-python

# The frozen build from Debian's own Python as well, where the venv's is another build (CI's
# machines and this one have pyenv's 3.11.7 as python3): `make` on a stock Debian 12 builds
# from /usr/bin/python3 (3.11.2), whose static libpython has ~30 more built-in modules and
# whose standard library lacks later 3.11 additions (tarfile's extraction filter: a real
# `nvbind install` failure once). Builds .venv-debpy/ and dist-debpy/, then runs the frozen
# tests (install, the launcher, podman precreate, runc createRuntime) against that build.
DEBPY ?= /usr/bin/python3
debian-python: venv
	@if [ ! -x $(DEBPY) ] || [ "$$($(DEBPY) -c 'import sys; print(sys.version)')" = \
	     "$$($(PY) -c 'import sys; print(sys.version)')" ]; then \
	  echo "debian-python: skipped (the venv's Python is $(DEBPY)'s, or there is none)"; exit 0; fi; \
	set -e; \
	[ -x .venv-debpy/bin/pyinstaller ] || { $(DEBPY) -m venv .venv-debpy && \
	  .venv-debpy/bin/pip install -q --upgrade pip >/dev/null && \
	  .venv-debpy/bin/pip install -q --config-settings editable_mode=compat -e '.[k8s]' pyinstaller; }; \
	.venv-debpy/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist-debpy \
	  --workpath build-debpy packaging/nvbind.spec; \
	NVBIND_TEST_ONEFILE=$(CURDIR)/dist-debpy/nvbind $(PY) -m pytest -q tests/e2e/test_frozen.py

unit: venv
	$(PY) -m pytest -q tests/unit

e2e: setup
	$(PY) -m pytest -q tests/e2e

# Real NVIDIA packages (Debian's 535, and the .run layout made from them) in debootstrap roots,
# cached under .cache/realhost/ and rebuilt when the package lists change (issue 12).
realhost: setup
	$(PY) tools/realhost.py >/dev/null

real: realhost
	$(PY) -m pytest -q tests/real

bench: setup dist realhost
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) $(SIM) build dist .venv-debpy dist-debpy build-debpy

# The kubelet device plugin API: regenerate the committed Python modules from api.proto
# (tests/k8s/test_proto.py checks that the committed ones are what this gives).
proto: venv
	cd hook && ../$(VENV)/bin/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. nvbind/k8s/api.proto

# The frozen executable: dist/nvbind (one file, carries the one-dir tree) and dist/nvbind-dir.
dist: venv
	$(VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build packaging/nvbind.spec

# The Debian package dist/nvbind_<version>_amd64.deb from the one-dir tree, checked by
# lintian (no errors or warnings: the inherent ones are overridden, see docs/deb.md).
deb: apt dist
	python3 packaging/deb/build.py
	lintian --fail-on error,warning dist/nvbind_$$($(PY) -c 'import nvbind; print(nvbind.__version__)')_amd64.deb

# pyiscsi: top-level targets. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
VPY := $(VENV)/bin/python
# Debian packages the test tiers need (tgt: the userspace target for integration tests;
# linux-source-6.1 and perl: checkpatch.pl and kernel-doc for tests/kernel/test_style.py;
# python3-venv, dkms: `make install` and the DKMS build; groff-base: the man page test; systemd:
# systemd-analyze and systemd-socket-activate; the rest: the VM tier, tests/vm/run-vm boots
# Debian's kernel in QEMU with the host root shared read-only).
APT_PKGS := tgt linux-image-amd64 linux-headers-amd64 qemu-system-x86 fio sg3-utils kmod \
	e2fsprogs busybox-static open-iscsi linux-source-6.1 perl python3-venv dkms groff-base systemd \
	multipath-tools iproute2

# OpenStack os-brick, unmodified from PyPI, in a venv of its own: tests/vm/test_vm_osbrick.py runs
# it in the guest (in-process, as root) against our stack. The guest sees this machine's files
# read-only, so the venv is made here, by `make setup`. Pinned: the newest release on PyPI when
# the test was written (it needs Python >= 3.11; its own dependencies are not pinned).
OSBRICK_VENV := $(CURDIR)/.venv-osbrick
OSBRICK_VERSION := 7.1.1

# `make install` / `make uninstall` (tools/install.sh; docs/install.md says what goes where).
# Kernel sources for DKMS go to $(DKMSDIR)/pyiscsi-VERSION, the example iscsid.conf to
# $(SYSCONFDIR) when there is none there; everything else under $(PREFIX). DESTDIR: staging root.
PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
DKMSDIR ?= /usr/src
PIP_FLAGS ?=
export PREFIX DESTDIR SYSCONFDIR DKMSDIR PIP_FLAGS PYTHON

.PHONY: all setup apt venv osbrick-venv test unit integration vm lint demo clean bench install \
	uninstall fuzz hostile-compare

all: setup

setup: apt venv osbrick-venv

apt:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "setup: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.stamp: pyproject.toml Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# compat: a plain .pth path entry, not setuptools' import-hook finder, which costs every
	# iscsiadm run a third of its start-up (importlib.util, pathlib...; measured in the VM)
	# (setuptools calls compat transitional: if a release drops it, the default mode still works)
	$(VPY) -m pip install -q -e '.[test,lint]' --config-settings editable_mode=compat \
		|| $(VPY) -m pip install -q -e '.[test,lint]'
	touch $@

venv: $(VENV)/.stamp

$(OSBRICK_VENV)/.stamp: Makefile
	test -x $(OSBRICK_VENV)/bin/python || $(PYTHON) -m venv $(OSBRICK_VENV)
	$(OSBRICK_VENV)/bin/python -m pip install -q 'os-brick==$(OSBRICK_VERSION)'
	touch $@

osbrick-venv: $(OSBRICK_VENV)/.stamp

lint: venv
	$(VENV)/bin/ruff check pyiscsid pyiscsiadm tests bench
	$(VENV)/bin/ruff format --check pyiscsid pyiscsiadm tests bench
	$(VENV)/bin/mypy --strict pyiscsid pyiscsiadm

unit: venv
	$(VPY) -m pytest -q tests/unit

integration: setup
	$(VPY) -m pytest -q tests/integration

vm: setup
	$(VPY) -m pytest -q -m vm tests/vm

# `tests` holds every tier, tests/vm (the VM tier, ≈1 min) included.
test: setup lint
	$(VPY) -m pytest -q tests

# Side by side with the in-kernel initiator in one VM boot (bench/bench.py; not part of `make test`).
# BENCH_QUICK=1: 1 round, 5 s per workload, 8 login targets. Writes bench/results.{json,md,png}.
bench: setup
	@if [ -n "$(BENCH_PERF)" ] && [ "$(BENCH_PERF)" != 0 ] && ! command -v perf >/dev/null; then \
		apt-get install -y -qq --no-install-recommends linux-perf; fi
	@$(VPY) -c 'import matplotlib' 2>/dev/null || $(VPY) -m pip install -q matplotlib \
		|| echo "bench: matplotlib not installed; results.png uses the built-in plotter"
	$(VPY) bench/bench.py

# The hostile-target PDU fuzzer alone, for longer than the slice `make test` runs (tests/vm/
# test_vm_hostile.py): SECONDS of sessions from seed SEED (one seed a session; a failing seed
# replays with SEED=it SECONDS=1). Results: tests/vm/out/fuzz/fuzz-ours.json.
SECONDS ?= 600
SEED ?= $(shell date +%s)
fuzz: setup
	$(MAKE) -C kernel KSRC=/lib/modules/$$(tests/vm/run-vm --kver)/build
	tests/vm/run-vm --timeout $$(($(SECONDS) * 3 + 600)) --keep --out tests/vm/out/fuzz \
		tests/vm/e2e/hostile.sh ours none $(SECONDS) $(SEED)

# The hostile-target cases against Debian's open-iscsi with the in-kernel iscsi_tcp too (report
# only), then ours, in two boots: tests/vm/out/hostile-{inkernel,ours}/hostile-*.json and the
# side-by-side table in tests/vm/out/hostile-compare.md. The in-kernel initiator's known crash
# (an R2T of 0xffffffff bytes) is left out of its run, as it takes the guest down.
hostile-compare: setup
	$(MAKE) -C kernel KSRC=/lib/modules/$$(tests/vm/run-vm --kver)/build
	tests/vm/run-vm --timeout 2400 --keep --out tests/vm/out/hostile-inkernel \
		tests/vm/e2e/hostile.sh inkernel all-but-known-crash || true
	tests/vm/run-vm --timeout 2400 --keep --out tests/vm/out/hostile-ours \
		tests/vm/e2e/hostile.sh ours all || true
	$(VPY) tests/vm/e2e/hostile_report.py tests/vm/out/hostile-inkernel/hostile-inkernel.json \
		tests/vm/out/hostile-ours/hostile-ours.json > tests/vm/out/hostile-compare.md
	cat tests/vm/out/hostile-compare.md

# The main job: boot the VM, LIO target inside, our modules + iscsid + iscsiadm, verified data.
demo: setup
	tests/vm/demo.sh

# No `setup` here: a real host needs python3 and python3-venv, and PyPI (or PIP_FLAGS) for pip.
install:
	tools/install.sh install

uninstall:
	tools/install.sh uninstall

clean:
	rm -rf $(VENV) $(OSBRICK_VENV) build *.egg-info

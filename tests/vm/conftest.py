"""Fixtures of the VM tier."""

from __future__ import annotations

import pytest

from vm.harness import build_modules, vm_available


@pytest.fixture(scope="session")
def modules() -> None:
    """Our kernel modules, built once per test run for the kernel the guest boots."""
    reason = vm_available()
    if reason:
        pytest.skip(reason)
    build_modules()

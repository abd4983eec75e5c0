"""@recordclass: what a dataclass would give the small classes on iscsiadm's start-up path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyiscsid.recordclass import recordclass


@recordclass
class Portal:
    address: str
    port: int = -1
    tpgt: int = -1


@recordclass
class Kept:
    value: int

    def __init__(self, text: str) -> None:
        self.value = int(text)

    def __repr__(self) -> str:
        return f"<{self.value}>"


def test_init_eq_repr_from_the_annotations() -> None:
    p = Portal("10.0.0.1", 3260)
    assert (p.address, p.port, p.tpgt) == ("10.0.0.1", 3260, -1)
    assert Portal(address="10.0.0.1", port=3260, tpgt=-1) == p
    assert Portal("10.0.0.1") != p and p != ("10.0.0.1", 3260, -1)
    assert repr(p) == "Portal(address='10.0.0.1', port=3260, tpgt=-1)"
    with pytest.raises(TypeError):
        hash(p)  # mutable and compared by value
    with pytest.raises(TypeError):
        Portal()  # type: ignore[call-arg]


def test_what_the_class_defines_is_kept() -> None:
    assert Kept("7").value == 7 and repr(Kept("7")) == "<7>" and Kept("7") == Kept("07")


def test_mutable_defaults_and_order_refused() -> None:
    with pytest.raises(TypeError, match="mutable default"):

        @recordclass
        class Shared:
            items: list[int] = []

    with pytest.raises(TypeError, match="without default after defaults"):

        @recordclass
        class Order:
            a: int = 0
            b: int


def test_no_dataclasses_or_typing_at_run_time() -> None:
    code = (
        "import sys, pyiscsid.recordclass\n"
        "print({'typing', 'dataclasses', 'inspect'} & set(sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "set()\n"), proc.stderr

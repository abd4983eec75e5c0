"""`@recordclass`: __init__, __eq__ and __repr__ built from a class's annotated fields.

What `dataclasses.dataclass` does for the small classes iscsiadm uses, without importing
dataclasses, inspect or typing: under software emulation each of those costs iscsiadm about a
tenth of a second of its start-up (docs/internals.md). The field names are the keys of the
class's own `__annotations__` (strings under `from __future__ import annotations`; never
evaluated), in order; a class attribute of the same name is the field's default. A method the
class defines itself is kept. Instances are mutable and compare equal field by field (so they
are unhashable, as a dataclass with eq=True). Type checkers see a dataclass (PEP 681).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar, dataclass_transform

    C = TypeVar("C", bound=type)
else:

    def dataclass_transform(**_kwargs: object) -> object:
        return lambda fn: fn


def _fields(cls: type) -> list[str]:
    # the class's own annotations, not its bases' (inspect would cost iscsiadm its start-up)
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    return [n for n in own if not n.startswith("_")]


def _make_init(cls: type, names: list[str]) -> object:
    defaults = {}
    params = []
    for name in names:
        if name in cls.__dict__:
            default = cls.__dict__[name]
            if isinstance(default, list | dict | set):
                raise TypeError(f"{cls.__name__}.{name}: a mutable default is shared")
            defaults[f"_d_{name}"] = default
            params.append(f"{name}=_d_{name}")
        elif defaults:
            raise TypeError(f"{cls.__name__}.{name}: a field without default after defaults")
        else:
            params.append(name)
    body = "".join(f"    self.{n} = {n}\n" for n in names) or "    pass\n"
    namespace: dict[str, object] = {}
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", defaults, namespace)
    return namespace["__init__"]


@dataclass_transform(eq_default=True)
def recordclass(cls: C) -> C:
    names = _fields(cls)

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    def __repr__(self: object) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
        return f"{cls.__name__}({inner})"

    made: dict[str, object] = {"__eq__": __eq__, "__repr__": __repr__}
    if "__init__" not in cls.__dict__:
        made["__init__"] = _make_init(cls, names)
    if "__eq__" not in cls.__dict__:
        made["__hash__"] = None  # mutable and compared by value: unhashable
    for name, value in made.items():
        if name not in cls.__dict__ or name == "__hash__":
            setattr(cls, name, value)
    return cls

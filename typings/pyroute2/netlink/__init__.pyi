# Types of the part of pyroute2.netlink that pyiscsid.netlink uses (pyroute2 ships none). The
# message classes are dicts of decoded fields; attribute values are whatever their nla type
# decodes to, hence Any.
from typing import Any, ClassVar

CTRL_CMD_GETFAMILY: int
GENL_ID_CTRL: int
NLM_F_ACK: int
NLM_F_DUMP: int
NLM_F_REQUEST: int
NLMSG_DONE: int
NLMSG_ERROR: int
NLMSG_NOOP: int
NLMSG_OVERRUN: int

class nlmsg_base(dict[str, Any]):
    fields: ClassVar[tuple[tuple[str, str], ...]]
    nla_map: ClassVar[tuple[tuple[int, str, str], ...]]
    prefix: ClassVar[str | None]
    data: bytes
    def __init__(self, data: bytes | None = None) -> None: ...
    def decode(self) -> None: ...
    def encode(self) -> None: ...
    def get_attr(self, attr: str, default: Any = None) -> Any: ...

class nla(nlmsg_base): ...
class nlmsg(nlmsg_base): ...
class genlmsg(nlmsg): ...
class ctrlmsg(genlmsg): ...

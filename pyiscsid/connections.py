"""Further connections of a running session (MC/S, RFC 7143 4.2 and 6.3).

After the leading connection of a session has started, `add_further` logs in connections
CID 1..N-1, N the negotiated MaxConnections (at most MAX_CONNECTIONS): each with the session's
ISID and TSIH, its own CID and the session's current CmdSN, negotiating only the connection's
keys and authenticating again (login.py's Negotiator with leading=False), each to a portal of
the session's target portal group in turn (`group_portals`, `portal_of`). A further connection
that fails never fails the session: it keeps the connections it has. The recovery re-adds the
connections of a reinstated session with the same `add_connections`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pyiscsid import kernel_session
from pyiscsid.errors import Err, IscsiError
from pyiscsid.login import LoginError, LoginResult, login
from pyiscsid.negotiation import NegotiatedParams
from pyiscsid.netlink import IscsiNetlink
from pyiscsid.settings import LoginSettings
from pyiscsid.uapi import SessionState

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16  # connections of one session iscsid makes, whatever the target allows
# Login Response status class 2 details (RFC 7143 11.13.5)
TOO_MANY_CONNECTIONS = 0x06
SESSION_DOES_NOT_EXIST = 0x0A


@dataclass(frozen=True)
class Portal:
    """A target portal a connection goes to."""

    address: str
    port: int


class PortalRecord(Protocol):
    """What group_portals reads of a node record (records.NodeRecord)."""

    target: str
    address: str
    port: int
    tpgt: int


@dataclass
class PortalNode:
    """A session's node record as one further connection sees it: its portal is the one that
    connection goes to (its persistent address in sysfs); everything else is the record's."""

    target: str
    address: str
    port: int
    tpgt: int
    iface: str
    node: kernel_session.Node

    @classmethod
    def of(cls, node: kernel_session.Node, portal: Portal) -> PortalNode:
        return cls(node.target, portal.address, portal.port, node.tpgt, node.iface, node)

    def get(self, name: str) -> str:
        return self.node.get(name)


def connection_count(negotiated: NegotiatedParams) -> int:
    """How many connections the session gets: the negotiated MaxConnections (the smaller of
    both sides' values), at most MAX_CONNECTIONS."""
    return max(1, min(negotiated.max_connections, MAX_CONNECTIONS))


def group_portals(own: PortalRecord, records: Iterable[PortalRecord]) -> list[Portal]:
    """The portals of `own`'s target portal group: `own`'s first, then the other records of the
    same target and TPGT in their order, each portal once."""
    out = [Portal(own.address, own.port)]
    for rec in records:
        portal = Portal(rec.address, rec.port)
        if rec.target == own.target and rec.tpgt == own.tpgt and portal not in out:
            out.append(portal)
    return out


def portal_of(cid: int, portals: list[Portal]) -> Portal:
    """The portal connection `cid` goes to: round robin over `portals`, CID 0 (the leading
    connection) on the first."""
    return portals[cid % len(portals)]


def further_settings(settings: LoginSettings, tsih: int, cid: int) -> LoginSettings:
    """The login settings of a further connection: the session's own (ISID, names,
    authentication, iface), its TSIH and the connection's CID."""
    return dataclasses.replace(settings, tsih=tsih, cid=cid, operational=dict(settings.operational))


class ConnectionSteps(Protocol):
    """What adding one connection does to the target and the kernel (a fake in unit tests)."""

    def add(self, sid: int, cid: int, portal: Portal, settings: LoginSettings) -> None:
        """Log in at `portal` with `settings`, then bind and start connection `cid` of session
        `sid`. IscsiError (a LoginError for a status) or OSError on any failure."""


def _ends_adding(sid: int, cid: int, exc: IscsiError | OSError) -> bool:
    """Log a further connection's failure; True if no further one should be tried."""
    if isinstance(exc, LoginError) and exc.status_class == 2:
        if exc.status_detail == TOO_MANY_CONNECTIONS:
            log.info("connection%d:%d: the target allows no more connections (%s)",
                     sid, cid, exc.message)  # fmt: skip
            return True
        if exc.status_detail == SESSION_DOES_NOT_EXIST:
            log.warning("connection%d:%d: the target does not know the session any more (%s): "
                        "no further connections", sid, cid, exc.message)  # fmt: skip
            return True
    if isinstance(exc, IscsiError) and exc.code in (Err.BUSY, Err.SESS_NOT_FOUND):
        log.warning("connection%d:%d not added: %s", sid, cid, exc.message)
        return True  # the session failed or is gone: no further logins into it
    why = exc.message if isinstance(exc, IscsiError) else str(exc)
    log.warning("connection%d:%d could not be added: %s", sid, cid, why)
    return False


def add_connections(
    sid: int,
    cids: Iterable[int],
    portals: list[Portal],
    settings: LoginSettings,
    tsih: int,
    steps: ConnectionSteps,
) -> list[int]:
    """Add connections `cids` to session `sid` (TSIH `tsih`), each to its portal_of; the CIDs
    added. Status 0x0206 (too many connections) and 0x020A (session does not exist) end the
    adding, as do a session that is no longer logged in (BUSY) or gone (SESS_NOT_FOUND); any
    other failure skips that connection only. Never raises for a connection."""
    added = []
    for cid in cids:
        portal = portal_of(cid, portals)
        try:
            steps.add(sid, cid, portal, further_settings(settings, tsih, cid))
        except (IscsiError, OSError) as exc:
            if _ends_adding(sid, cid, exc):
                break
            continue
        log.info("connection%d:%d added (%s:%d)", sid, cid, portal.address, portal.port)
        added.append(cid)
    return added


class KernelConnectionSteps:
    """The real ConnectionSteps: login.login with the session's CmdSN, then
    kernel_session.add_connection. `existing`: CIDs the kernel has already (a recovery's
    stopped connections): bound again, not created (one whose login fails is left to the
    caller; one that cannot be bound or started is destroyed)."""

    def __init__(
        self, node: kernel_session.Node, initiator_name: str, existing: Iterable[int] = ()
    ) -> None:
        self.node = node
        self.initiator_name = initiator_name
        self.existing = set(existing)

    def add(self, sid: int, cid: int, portal: Portal, settings: LoginSettings) -> None:
        exists = cid in self.existing
        result = self._login(sid, portal, settings)
        node = PortalNode.of(self.node, portal)
        try:
            with IscsiNetlink() as nl:
                kernel_session.add_connection(
                    nl, sid, cid, node, result, self.initiator_name, create=not exists
                )
        except BaseException:
            result.close()
            raise

    def _login(self, sid: int, portal: Portal, settings: LoginSettings) -> LoginResult:
        with IscsiNetlink() as nl:
            session = nl.get_session(sid)
        if session.state != SessionState.LOGGED_IN:  # failed meanwhile: its recovery's turn
            raise IscsiError(Err.BUSY, f"session {sid} is not logged in")
        cmdsn = session.cmdsn
        if cmdsn is None:
            raise IscsiError(Err.INTERNAL, f"session {sid}: the kernel did not give its CmdSN")
        return login(portal.address, portal.port, settings, cmdsn=cmdsn)


def record_portals(record: PortalRecord) -> list[Portal]:
    """group_portals of `record` from the node database (just its own portal if that cannot
    be read)."""
    from pyiscsid.db import Database

    try:
        with Database() as db:
            recs = db.find_nodes(target=record.target)
    except (IscsiError, OSError) as exc:
        log.warning("cannot read the node records of %s: %s", record.target, exc)
        recs = []
    return group_portals(record, recs)


def add_further(
    sid: int, node: kernel_session.Node, leading: LoginResult, settings: LoginSettings
) -> list[int]:
    """Add connections CID 1..N-1 to the session `sid` just started from `leading` (N:
    connection_count); the CIDs added. With N = 1 nothing happens."""
    count = connection_count(leading.negotiated)
    if count <= 1:
        return []
    log.info("session %d: MaxConnections=%d, adding %d connections", sid,
             leading.negotiated.max_connections, count - 1)  # fmt: skip
    steps = KernelConnectionSteps(node, settings.initiator_name)
    return add_connections(
        sid, range(1, count), record_portals(node), settings, leading.tsih, steps
    )

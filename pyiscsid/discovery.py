"""SendTargets discovery (RFC 7143 appendix C): a discovery session, SendTargets=All, logout."""

from __future__ import annotations

import dataclasses
import logging

from pyiscsid.errors import IscsiError
from pyiscsid.login import login, logout, text_request
from pyiscsid.negotiation import NegotiationError, parse_target_address
from pyiscsid.settings import DiscoveredTarget, LoginSettings, TargetPortal

log = logging.getLogger(__name__)

TPGT_UNKNOWN = -1  # a portal announced without ",tpgt" (open-iscsi's PORTAL_GROUP_TAG_UNKNOWN)


def parse_sendtargets(
    pairs: list[tuple[str, str]], default_address: str, default_port: int
) -> list[DiscoveredTarget]:
    """Targets and their portals from a SendTargets reply, in the order given.

    A target without any TargetAddress is reachable through the portal we asked
    (`default_address`:`default_port`, TPGT unknown). Portals that cannot be parsed are skipped
    with a warning; a target left with no portal at all is dropped.
    """
    targets: list[DiscoveredTarget] = []
    by_name: dict[str, DiscoveredTarget] = {}
    current: DiscoveredTarget | None = None
    addressed: set[str] = set()  # targets that had at least one TargetAddress line
    invalid: set[str] = set()
    for key, value in pairs:
        if key == "TargetName":
            if not value:
                log.warning("SendTargets reply has an empty TargetName; ignored")
                current = None
                continue
            current = by_name.get(value)
            if current is None:
                current = DiscoveredTarget(name=value)
                by_name[value] = current
                targets.append(current)
        elif key == "TargetAddress":
            if current is None:
                log.warning("SendTargets reply has TargetAddress=%s before any TargetName", value)
                continue
            addressed.add(current.name)
            try:
                address, port, tpgt = parse_target_address(value)
            except NegotiationError as e:
                log.warning("target %s: %s; portal ignored", current.name, e.message)
                invalid.add(current.name)
                continue
            portal = TargetPortal(address, port, TPGT_UNKNOWN if tpgt is None else tpgt)
            if portal not in current.portals:
                current.portals.append(portal)
        else:
            log.warning("unexpected SendTargets data: %s=%s", key, value)
    out = []
    for t in targets:
        if t.name not in addressed:
            t.portals.append(TargetPortal(default_address, default_port, TPGT_UNKNOWN))
        if t.portals:
            out.append(t)
    return out


def sendtargets(address: str, port: int, settings: LoginSettings) -> list[DiscoveredTarget]:
    """Log in to a portal as a discovery session, ask SendTargets=All and log out."""
    if settings.target_name is not None:
        settings = dataclasses.replace(settings, target_name=None)
    result = login(address, port, settings)
    try:
        pairs = text_request(result, [("SendTargets", "All")], timeout=settings.login_timeout)
    except BaseException:
        result.close()
        raise
    try:
        logout(result, reason=0, timeout=min(settings.login_timeout, 5.0))
    except IscsiError as e:  # the answer is in hand; a failed logout does not spoil it
        log.warning("discovery logout from %s:%d failed: %s", address, port, e.message)
    return parse_sendtargets(pairs, address, port)

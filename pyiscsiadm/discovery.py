"""iscsiadm -m discovery / discoverydb: SendTargets discovery (run in iscsiadm itself, no
iscsid needed) and the discovery records."""

from __future__ import annotations

import time

from pyiscsiadm import output
from pyiscsiadm.common import Env, Exit, fail, login_records
from pyiscsid.errors import Err, IscsiError, err_to_str

TYPE_CHECKING = False  # typing is not imported at run time: iscsiadm starts faster
if TYPE_CHECKING:
    from pyiscsid.records import DiscoveryRecord, IfaceRecord, NodeRecord
    from pyiscsid.settings import DiscoveredTarget


def bound_ifaces(env: Env) -> list[IfaceRecord] | None:
    """The ifaces discovery binds the node records it makes to (and discovers through): each
    -I that exists (one that does not is reported and dropped, as open-iscsi drops it); without
    -I, every iface record of the tcp transport, or the built-in `default` when there is none.
    None when every -I named an iface that does not exist."""
    from pyiscsiadm.iface import lookup
    from pyiscsid.records import IfaceRecord

    if not env.opts.ifaces:
        found = [i for i in env.db.ifaces() if i.transport == "tcp"]
        return found or [IfaceRecord("default")]
    ifaces: list[IfaceRecord] = []
    for name in env.opts.ifaces:
        iface = lookup(env, name)
        if iface is None:
            output.error(
                f"Could not read iface info for {name}. Make sure an iface config with the file "
                f"name and iface.iscsi_ifacename {name} is in /etc/iscsi/ifaces."
            )
            continue
        if all(i.name != iface.name for i in ifaces):
            ifaces.append(iface)
    return ifaces or None


def run(env: Env) -> int:
    o = env.opts
    ops = o.op_names
    dbmode = o.mode == "discoverydb"
    if o.disc_type == "sendtargets" and not (dbmode and (ops or not (o.discover or o.login))):
        if o.portal is None:
            raise fail("Please specify portal as <ipaddr>[:<ipport>]")
        port = o.portal.port if o.portal.port != -1 else 3260
        persist = "nonpersistent" not in ops
        recs = run_sendtargets(env, o.portal.address, port, persist=persist)
        return _after_discovery(env, recs)
    if o.disc_type == "slp":
        raise fail("SLP discovery is not fully implemented yet.")
    if o.disc_type == "isns":
        raise fail(
            f"Could not perform iSNS discovery: {err_to_str(Err.ISNS_UNAVAILABLE)}",
            Err.ISNS_UNAVAILABLE,
        )
    if o.disc_type == "fw":
        raise fail(
            f"Could not get list of targets from firmware. (err {int(Err.NO_OBJS_FOUND)})",
            Err.NO_OBJS_FOUND,
        )
    if o.portal is None and o.record_id is None:
        if not ops or ops == ["show"]:
            return list_discoveries(env)
        raise fail("Invalid operation.")
    return record_op(env)


def _portal(env: Env) -> tuple[str, int]:
    p = env.opts.portal
    assert p is not None
    return p.address.strip("[]"), p.port if p.port != -1 else 3260


def _find(env: Env) -> DiscoveryRecord | None:
    o = env.opts
    if o.record_id is not None:
        found = [d for d in env.db.discoveries() if d.record_id == o.record_id]
        return found[0] if found else None
    address, port = _portal(env)
    return env.db.find_discovery(address, port)


def record_op(env: Env) -> int:
    o = env.opts
    ops = o.op_names
    drec = _find(env)
    # Not found: discoverydb mode says so with exit 6 (os-brick then makes the record with
    # --op new); discovery mode with "!" and exit 7, as open-iscsi words them.
    missing = (" not found.", Err.IDBM) if o.mode == "discoverydb" else (" not found!", Err.INVAL)
    if o.record_id is not None and drec is None:
        raise fail(f"Discovery record [{o.record_id}]{missing[0]}", missing[1])
    if drec is None:
        address, port = _portal(env)
        if "new" not in ops:
            raise fail(f"Discovery record [{address},{port}]{missing[0]}", missing[1])
    if "new" in ops:
        return op_new(env, drec)
    assert drec is not None
    if o.discover or o.login:
        recs = discover_with(env, drec, persist="nonpersistent" not in ops)
        return _after_discovery(env, recs)
    if not ops or ops == ["show"]:
        text = drec.dump(show=o.show)
        print(text if text.endswith("\n") else text + "\n", end="")
        return 0
    if ops == ["delete"]:
        try:
            env.db.delete_discovery(drec.record_id)
        except IscsiError:
            raise fail("Unable to delete record!", Err.IDBM) from None
        return 0
    if ops == ["update"]:
        if not o.params:
            raise fail("Update requires name and value.")
        _set_params(drec, o.params)
        env.db.save_discovery(drec)
        return 0
    raise fail("Invalid operation.")


def _set_params(drec: DiscoveryRecord, params: list[tuple[str, str]]) -> None:
    for name, value in params:
        try:
            drec.set(name, value)
        except IscsiError as e:
            output.error(e.message)
            raise Exit(e.code) from None


def op_new(env: Env, existing: DiscoveryRecord | None) -> int:
    from pyiscsid.records import DiscoveryRecord

    if existing is not None:
        drec = existing
    else:
        address, port = _portal(env)
        try:
            drec = DiscoveryRecord.new(address, port, config=env.config)
        except IscsiError as e:
            raise fail(e.message, e.code) from None
    _set_params(drec, env.opts.params)
    drec = env.db.save_discovery(drec)
    output.info(f"New discovery record for [{drec.address},{drec.port}] added.")
    return 0


def list_discoveries(env: Env) -> int:
    o = env.opts
    drecs = env.db.discoveries()
    if o.info_level < 1:
        for d in drecs:
            prefix = f"[{d.record_id}] " if o.ids else ""
            output.info(prefix + output.discovery_list(d.address, d.port, d.type))
        return 0 if drecs else int(Err.NO_OBJS_FOUND)
    nodes = output.sort_nodes(env.db.nodes())
    sections = []
    for d in drecs:
        if d.type != "sendtargets":
            continue
        found = [
            n
            for n in nodes
            if n.get("node.discovery_type") == "send_targets"
            and n.get("node.discovery_address").lower() == d.address.lower()
            and n.get("node.discovery_port") == str(d.port)
        ]
        sections.append((d.address, d.port, found))
    static = [n for n in nodes if n.get("node.discovery_type") == "static"]
    print("\n".join(output.discovery_tree(sections, static)))
    return 0 if drecs or static else int(Err.NO_OBJS_FOUND)


def run_sendtargets(env: Env, address: str, port: int, persist: bool) -> list[NodeRecord]:
    """Discover through a portal: reuse its saved discovery record (CHAP...) or make one from
    iscsid.conf, record the reply (unless not persist) and return the node records."""
    from pyiscsid.records import DiscoveryRecord

    address = address.strip("[]")
    drec = env.db.find_discovery(address, port, "sendtargets")
    if drec is None:
        try:
            drec = DiscoveryRecord.new(address, port, config=env.config)
        except IscsiError as e:
            raise fail(e.message, e.code) from None
    return discover_with(env, drec, persist)


def discover_with(env: Env, drec: DiscoveryRecord, persist: bool) -> list[NodeRecord]:
    """SendTargets through each iface discovery binds to (bound_ifaces), each over its own
    connection through that iface, as open-iscsi runs one discovery session per iface; the
    node records of every reply, in order."""
    from pyiscsiadm.iface import bind
    from pyiscsid.records import NodeRecord

    ifaces = bound_ifaces(env)
    if ifaces is None:
        raise Exit(Err.NO_OBJS_FOUND)
    replies: list[tuple[IfaceRecord, list[DiscoveredTarget]]] = []
    for iface in ifaces:
        try:
            replies.append((iface, sendtargets_with_retries(env, drec, iface)))
        except IscsiError as e:
            output.error(f"Could not perform SendTargets discovery: {err_to_str(e.code)}")
            raise Exit(e.code) from None
    if not any(t.portals for _iface, targets in replies for t in targets):
        if persist:
            env.db.save_discovery(drec)
        raise fail("No portals found", Err.NO_OBJS_FOUND)
    recs = []
    for iface, targets in replies:
        if persist:
            recs += env.db.apply_sendtargets(drec, targets, env.config, [iface])
            continue
        for t in targets:
            for p in t.portals:
                rec = NodeRecord.new(t.name, p.address, p.port, p.tpgt, config=env.config)
                bind(rec, iface)
                rec.set_discovery(drec.address, drec.port, "send_targets")
                recs.append(rec)
    return recs


def login_delay(failures: int) -> float:
    """Seconds to wait before the next discovery connection attempt (open-iscsi's back-off:
    none before the first, then 1 s for ten attempts, 2 s, 5 s, 15 s, at last once a minute)."""
    for below, delay in ((1, 0.0), (10, 1.0), (20, 2.0), (26, 5.0), (34, 15.0)):
        if failures < below:
            return delay
    return 60.0


def _reopen_max(drec: DiscoveryRecord) -> int:
    try:
        return max(0, int(drec.get("discovery.sendtargets.reopen_max")))
    except (IscsiError, ValueError):
        return 5


def sendtargets_with_retries(
    env: Env, drec: DiscoveryRecord, iface: IfaceRecord | None = None
) -> list[DiscoveredTarget]:
    """SendTargets through a discovery record, reconnecting as open-iscsi's discovery does.

    A portal that cannot be reached, or a target error (status class 3), is retried
    `discovery.sendtargets.reopen_max` times (so reopen_max + 1 attempts) with login_delay()
    between attempts, each failure reported as it happens; then PDU_TIMEOUT (11). An
    initiator error (class 2) ends at once: 24 for an authentication/authorization failure,
    19 otherwise. Raises IscsiError with the exit code; the messages are printed already.
    """
    from pyiscsid.discovery import sendtargets
    from pyiscsid.login import BindError, LoginError
    from pyiscsid.records import discovery_login_settings

    name, alias = env.initiator()
    settings = discovery_login_settings(drec, name, alias, iface)
    reopen_max = _reopen_max(drec)
    host = drec.address
    failures = 0
    for _attempt in range(reopen_max + 1):
        delay = login_delay(failures)
        if delay:
            time.sleep(delay)
        try:
            return sendtargets(drec.address, drec.port, settings)
        except LoginError as e:
            cls, detail = e.status_class, e.status_detail
            if cls == 2:
                if detail == 0x01:
                    output.error("Login failed to authenticate with target ")
                if detail in (0x01, 0x02):
                    output.error(
                        f"discovery login to {host} rejected: initiator failed authorization"
                    )
                    raise IscsiError(Err.LOGIN_AUTH_FAILED) from None
                output.error(
                    f"discovery login to {host} rejected: initiator error "
                    f"({cls:02x}/{detail:02x}), non-retryable, giving up"
                )
                raise IscsiError(Err.FATAL_LOGIN) from None
            if cls == 3:
                output.error(
                    f"discovery login to {host} rejected: target error ({cls:02x}/{detail:02x})"
                )
                failures += 1
                continue
            output.error(e.message)
            raise IscsiError(e.code) from None
        except IscsiError as e:
            if e.code not in (Err.TRANS, Err.TRANS_TIMEOUT):
                if e.message != err_to_str(e.code):
                    output.error(e.message)
                raise IscsiError(e.code) from None
            output.error(e.message)  # "cannot make connection to ...": try again
            if isinstance(e, BindError):  # open-iscsi then reports the connect as failed
                output.error(f"cannot make connection to {host}: {e.reason}")
            failures += 1
        except OSError as e:
            output.error(f"cannot make connection to {host}: {e.strerror or e}")
            failures += 1
    output.error(f"connection login retries (reopen_max) {reopen_max} exceeded")
    raise IscsiError(Err.PDU_TIMEOUT)


def _after_discovery(env: Env, recs: list[NodeRecord]) -> int:
    o = env.opts
    if o.info_level == 1:
        print("\n".join(output.node_tree(recs, o.ids)))
    else:
        for rec in recs:
            output.info(output.discovered_flat(rec, o.ids))
    if o.login:
        rc = login_records(recs)
        if rc:
            output.error("Could not log into all portals")
        return rc
    return 0

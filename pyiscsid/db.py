"""The persistent database: node.db, discovery.db and iface.db.

Each file is an SQLite database in the layout of Python 3.13's `dbm.sqlite3` (one table
`Dict(key BLOB UNIQUE NOT NULL, value BLOB NOT NULL)`), the value being the record's JSON, the
key the 6-hex-digit record id (node and discovery records) or the iface name (iface records,
whose name is their identity, as open-iscsi's /etc/iscsi/ifaces/NAME files). The files are
opened on one SQLite connection (discovery.db and iface.db attached), so one transaction covers
them all; `BEGIN IMMEDIATE` makes every change exclusive across
processes and the rollback journal makes it atomic, also across the two files, if a process dies.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress

from pyiscsid.errors import Err, IscsiError
from pyiscsid.records import (
    DiscoveryRecord,
    IfaceRecord,
    NodeRecord,
    check_record_id,
    discovery_record_id,
    node_record_id,
    strip_brackets,
)

TYPE_CHECKING = False  # typing, pathlib and dataclasses stay out of iscsiadm's start-up
if TYPE_CHECKING:
    from pyiscsid.settings import DiscoveredTarget

DEFAULT_DB_DIR = "/var/db/iscsi"
NODE_DB = "node.db"
DISCOVERY_DB = "discovery.db"
IFACE_DB = "iface.db"
BUSY_TIMEOUT = 30.0  # seconds to wait for another process's transaction
MAX_PROBES = 4096

_BUILD_TABLE = "CREATE TABLE IF NOT EXISTS {}.Dict (key BLOB UNIQUE NOT NULL, value BLOB NOT NULL)"


def db_dir(directory: str | os.PathLike[str] | None = None) -> str:
    """The database directory: the argument, else $ISCSI_DB_DIR, else /var/db/iscsi."""
    if directory is not None:
        return os.fspath(directory)
    return os.environ.get("ISCSI_DB_DIR") or DEFAULT_DB_DIR


def _create_private(path: str) -> None:
    """Create an empty database file readable by root only, unless it exists or cannot be made
    (a reader without write access then sees no iface records)."""
    with suppress(OSError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))


def _node_key(rec: NodeRecord) -> tuple[str, str, int, str]:
    return (rec.target, rec.address, rec.port, rec.iface)


class Database:
    """node.db and discovery.db in one directory. Methods are safe to call from many processes."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = db_dir(directory)
        self.node_path = os.path.join(self.directory, NODE_DB)
        self.discovery_path = os.path.join(self.directory, DISCOVERY_DB)
        self.iface_path = os.path.join(self.directory, IFACE_DB)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._depth = 0

    # -- connection and transactions -------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            with suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _corrupt(self, path: str, exc: Exception) -> IscsiError:
        return IscsiError(
            Err.IDBM,
            f"iSCSI database file {path} is damaged or not a database ({exc}); "
            "move it aside to start with an empty database",
        )

    def _create_files(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            for path in (self.node_path, self.discovery_path, self.iface_path):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.close(fd)
        except OSError as exc:
            raise IscsiError(
                Err.IDBM, f"cannot create the iSCSI database in {self.directory}: {exc}"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._conn = None  # a connection inherited over fork() must not be used
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.node_path, timeout=BUSY_TIMEOUT, isolation_level=None)
            schemas = (
                ("main", self.node_path),
                ("disc", self.discovery_path),
                ("ifc", self.iface_path),
            )
            for schema, path in schemas:
                try:
                    if schema != "main":
                        if schema == "ifc":
                            _create_private(path)  # iface.db came later: older databases lack it
                        conn.execute(f"ATTACH DATABASE ? AS {schema}", (path,))
                    conn.execute(f"PRAGMA {schema}.schema_version").fetchone()
                    # Rollback journal: atomic across both files (WAL is not), works on any FS.
                    conn.execute(f"PRAGMA {schema}.journal_mode = DELETE").fetchone()
                    conn.execute(_BUILD_TABLE.format(schema))
                except sqlite3.DatabaseError as exc:
                    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                        raise
                    raise self._corrupt(path, exc) from None
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            raise IscsiError(
                Err.IDBM, f"cannot open the iSCSI database {self.directory}: {exc}"
            ) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn
        self._pid = os.getpid()
        return conn

    def _exists(self) -> bool:
        return os.path.exists(self.node_path) and os.path.exists(self.discovery_path)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One exclusive, atomic change across processes (nests: the outermost one commits)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._create_files()
        conn = self._connect()
        self._begin(conn, "BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._depth = 0
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise IscsiError(Err.IDBM, f"cannot write the iSCSI database: {exc}") from None

    def _begin(self, conn: sqlite3.Connection, statement: str) -> None:
        try:
            conn.execute(statement)
        except sqlite3.OperationalError as exc:
            raise IscsiError(
                Err.IDBM, f"the iSCSI database {self.directory} is busy or unusable: {exc}"
            ) from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """A consistent snapshot for reading; None when there is no database yet."""
        if self._depth:
            yield self._conn
            return
        if not self._exists():
            yield None
            return
        conn = self._connect()
        self._begin(conn, "BEGIN")
        try:
            yield conn
        finally:
            with suppress(sqlite3.Error):
                conn.execute("COMMIT")

    def _write_conn(self) -> sqlite3.Connection:
        assert self._depth and self._conn is not None
        return self._conn

    def _rows(self, conn: sqlite3.Connection, schema: str) -> list[tuple[bytes, bytes]]:
        path = {"main": self.node_path, "disc": self.discovery_path}.get(schema, self.iface_path)
        try:
            rows = conn.execute(f"SELECT key, value FROM {schema}.Dict").fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(path, exc) from None
        return [(bytes(k), bytes(v)) for k, v in rows]

    def _load_nodes(self, conn: sqlite3.Connection | None) -> list[NodeRecord]:
        if conn is None:
            return []
        return [self._decode_node(key, value) for key, value in self._rows(conn, "main")]

    def _load_discoveries(self, conn: sqlite3.Connection | None) -> list[DiscoveryRecord]:
        if conn is None:
            return []
        return [self._decode_discovery(key, value) for key, value in self._rows(conn, "disc")]

    def _decode_node(self, key: bytes, value: bytes) -> NodeRecord:
        try:
            rec = NodeRecord.from_json(value)
            rec.record_id = key.decode("ascii")
        except (IscsiError, UnicodeDecodeError) as exc:
            raise IscsiError(Err.IDBM, f"{self.node_path}: record {key!r}: {exc}") from None
        return rec

    def _decode_discovery(self, key: bytes, value: bytes) -> DiscoveryRecord:
        try:
            rec = DiscoveryRecord.from_json(value)
            rec.record_id = key.decode("ascii")
        except (IscsiError, UnicodeDecodeError) as exc:
            raise IscsiError(Err.IDBM, f"{self.discovery_path}: record {key!r}: {exc}") from None
        return rec

    # -- node records -------------------------------------------------------------------------

    def nodes(self) -> list[NodeRecord]:
        """Every node record, by target name, then portal, then iface."""
        with self._reading() as conn:
            recs = self._load_nodes(conn)
        return sorted(recs, key=_node_key)

    def find_nodes(
        self,
        target: str | None = None,
        address: str | None = None,
        port: int | None = None,
        iface: str | None = None,
        record_id: str | None = None,
    ) -> list[NodeRecord]:
        """The node records matching every given criterion, in nodes() order."""
        if record_id is not None:
            record_id = check_record_id(record_id)
        if address is not None:
            address = strip_brackets(address).lower()
        candidates = self.nodes() if record_id is None else self._node_by_id(record_id)
        return [
            rec
            for rec in candidates
            if (target is None or rec.target == target)
            and (address is None or rec.address.lower() == address)
            and (port is None or rec.port == port)
            and (iface is None or rec.iface == iface)
            and (record_id is None or rec.record_id == record_id)
        ]

    def _node_by_id(self, record_id: str) -> list[NodeRecord]:
        """The node record with this key, as a list (one row read and decoded, not all: a
        login asks for its record by id)."""
        with self._reading() as conn:
            if conn is None:
                return []
            try:
                row = conn.execute(
                    "SELECT key, value FROM main.Dict WHERE key = ?", (record_id.encode(),)
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(self.node_path, exc) from None
        return [] if row is None else [self._decode_node(bytes(row[0]), bytes(row[1]))]

    def nodes_by_id(self, record_ids: list[str]) -> dict[str, NodeRecord]:
        """The node records with these ids, those that exist, read in one snapshot (a login of
        many records reads them all at once)."""
        keys = [check_record_id(r).encode() for r in record_ids]
        rows: list[tuple[bytes, bytes]] = []
        with self._reading() as conn:
            if conn is None:
                return {}
            try:
                for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                    chunk = keys[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += conn.execute(
                        f"SELECT key, value FROM main.Dict WHERE key IN ({marks})", chunk
                    ).fetchall()
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(self.node_path, exc) from None
        recs = (self._decode_node(bytes(k), bytes(v)) for k, v in rows)
        return {rec.record_id: rec for rec in recs}

    def _put(self, schema: str, key: str, value: bytes) -> None:
        self._write_conn().execute(
            f"REPLACE INTO {schema}.Dict (key, value) VALUES (CAST(? AS BLOB), CAST(? AS BLOB))",
            (key.encode(), value),
        )

    def _delete(self, schema: str, key: str) -> int:
        cur = self._write_conn().execute(
            f"DELETE FROM {schema}.Dict WHERE key = CAST(? AS BLOB)", (key.encode(),)
        )
        return cur.rowcount

    def _free_node_id(self, rec: NodeRecord, taken: set[str]) -> str:
        for attempt in range(MAX_PROBES):
            candidate = node_record_id(rec.target, rec.address, rec.port, rec.iface, attempt)
            if candidate not in taken:
                return candidate
        raise IscsiError(Err.IDBM, "no free node record id")

    def _node_id_of(self, rec: NodeRecord) -> str | None:
        """The id of the stored record with rec's target, portal and iface, if there is one."""
        conn = self._write_conn()
        prefix = rec.identity_json()
        rows = conn.execute(
            "SELECT key, value FROM main.Dict WHERE substr(value, 1, ?) = CAST(? AS BLOB)",
            (len(prefix), prefix),
        ).fetchall()
        for key, value in rows:
            found = self._decode_node(bytes(key), bytes(value))
            if _node_key(found) == _node_key(rec):
                return found.record_id
        return None

    def _unused_node_id(self, rec: NodeRecord) -> str:
        conn = self._write_conn()
        for attempt in range(MAX_PROBES):
            candidate = node_record_id(rec.target, rec.address, rec.port, rec.iface, attempt)
            row = conn.execute(
                "SELECT 1 FROM main.Dict WHERE key = CAST(? AS BLOB)", (candidate.encode(),)
            ).fetchone()
            if row is None:
                return candidate
        raise IscsiError(Err.IDBM, "no free node record id")

    def add_node(self, rec: NodeRecord) -> NodeRecord:
        """Store a new node record (assigning its id); the same target/portal/iface is replaced."""
        with self.transaction():
            rec.record_id = self._node_id_of(rec) or self._unused_node_id(rec)
            self._put("main", rec.record_id, rec.to_json())
        return rec

    def save_node(self, rec: NodeRecord) -> None:
        """Write back a record read from the database (one without an id is added)."""
        if not rec.record_id:
            self.add_node(rec)
            return
        rec.record_id = check_record_id(rec.record_id)
        with self.transaction():
            self._put("main", rec.record_id, rec.to_json())

    def delete_node(self, record_id: str) -> None:
        record_id = check_record_id(record_id)
        with self.transaction():
            if not self._delete("main", record_id):
                raise IscsiError(Err.NO_OBJS_FOUND, f"no node record [{record_id}]")

    # -- discovery records --------------------------------------------------------------------

    def discoveries(self) -> list[DiscoveryRecord]:
        """Every discovery record, by address and port."""
        with self._reading() as conn:
            recs = self._load_discoveries(conn)
        return sorted(recs, key=lambda r: (r.address, r.port, r.type))

    def find_discovery(
        self, address: str, port: int, type: str | None = None
    ) -> DiscoveryRecord | None:
        """The discovery record of a portal (a SendTargets one first), or None."""
        address = strip_brackets(address).lower()
        found = [
            r
            for r in self.discoveries()
            if r.address.lower() == address and r.port == port and type in (None, r.type)
        ]
        found.sort(key=lambda r: r.type != "sendtargets")
        return found[0] if found else None

    def save_discovery(self, rec: DiscoveryRecord) -> DiscoveryRecord:
        """Store a discovery record; one for the same portal and type is replaced."""
        with self.transaction():
            existing = self._load_discoveries(self._write_conn())
            ident = (rec.address.lower(), rec.port, rec.type)
            same = [r for r in existing if (r.address.lower(), r.port, r.type) == ident]
            if same:
                rec.record_id = same[0].record_id
            else:
                taken = {r.record_id for r in existing}
                for attempt in range(MAX_PROBES):
                    rec.record_id = discovery_record_id(rec.address, rec.port, rec.type, attempt)
                    if rec.record_id not in taken:
                        break
                else:
                    raise IscsiError(Err.IDBM, "no free discovery record id")
            self._put("disc", rec.record_id, rec.to_json())
        return rec

    def delete_discovery(self, record_id: str) -> None:
        """Delete a discovery record and the node records found through it."""
        record_id = check_record_id(record_id)
        with self.transaction():
            conn = self._write_conn()
            recs = [r for r in self._load_discoveries(conn) if r.record_id == record_id]
            if not recs:
                raise IscsiError(Err.NO_OBJS_FOUND, f"no discovery record [{record_id}]")
            for node in self._load_nodes(conn):
                if _found_through(node, recs[0]):
                    self._delete("main", node.record_id)
            self._delete("disc", record_id)

    def apply_sendtargets(
        self,
        disc: DiscoveryRecord,
        targets: list[DiscoveredTarget],
        config: Mapping[str, str] | None = None,
        ifaces: list[IfaceRecord] | None = None,
    ) -> list[NodeRecord]:
        """Record a SendTargets reply in one transaction: a node record for each portal of each
        target through each iface (`ifaces`, default: the built-in `default`), its iface.* keys
        copied from the iface. Rediscovery keeps every setting made on existing nodes and only
        updates their tpgt; a record found through this portal and one of these ifaces that the
        reply no longer names is deleted."""
        result: list[NodeRecord] = []
        bound = ifaces or [IfaceRecord("default")]
        names = {i.name for i in bound}
        with self.transaction():
            disc = self.save_discovery(disc)
            conn = self._write_conn()
            existing = self._load_nodes(conn)
            by_key = {_node_key(r): r for r in existing}
            taken = {r.record_id for r in existing}
            reported: set[tuple[str, str, int]] = set()
            for iface in bound:
                seen: set[tuple[str, str, int]] = set()
                for target in targets:
                    for portal in target.portals:
                        address = strip_brackets(portal.address)
                        ident = (target.name, address.lower(), portal.port)
                        if ident in seen:
                            continue
                        seen.add(ident)
                        reported.add(ident)
                        key = (target.name, address, portal.port, iface.name)
                        rec = by_key.get(key) or next(
                            (r for k, r in by_key.items() if _same_portal(k, key)), None
                        )
                        if rec is None:
                            rec = NodeRecord.new(
                                target.name, address, portal.port, portal.tpgt, config=config
                            )
                            if iface.name != "default":
                                rec.apply_iface(iface)
                            rec.record_id = self._free_node_id(rec, taken)
                            taken.add(rec.record_id)
                            by_key[_node_key(rec)] = rec
                        rec.tpgt = portal.tpgt
                        rec.set_discovery(disc.address, disc.port, "send_targets")
                        self._put("main", rec.record_id, rec.to_json())
                        result.append(rec)
            for rec in existing:
                ident = (rec.target, rec.address.lower(), rec.port)
                if _found_through(rec, disc) and rec.iface in names and ident not in reported:
                    self._delete("main", rec.record_id)
        return result

    # -- iface records ------------------------------------------------------------------------

    def ifaces(self) -> list[IfaceRecord]:
        """Every iface record (not the built-in ifaces), by name in byte order (the order of
        open-iscsi's alphasort listing of its ifaces directory)."""
        with self._reading() as conn:
            rows = [] if conn is None else self._rows(conn, "ifc")
        recs = [self._decode_iface(key, value) for key, value in rows]
        return sorted(recs, key=lambda r: r.name.encode())

    def _decode_iface(self, key: bytes, value: bytes) -> IfaceRecord:
        try:
            rec = IfaceRecord.from_json(value)
            if rec.name.encode() != key:
                raise IscsiError(Err.IDBM, f"named {rec.name!r}")
        except (IscsiError, UnicodeDecodeError) as exc:
            raise IscsiError(Err.IDBM, f"{self.iface_path}: record {key!r}: {exc}") from None
        return rec

    def find_iface(self, name: str) -> IfaceRecord | None:
        """The iface record of that name (None for a built-in iface or one that does not
        exist)."""
        with self._reading() as conn:
            if conn is None:
                return None
            try:
                row = conn.execute(
                    "SELECT key, value FROM ifc.Dict WHERE key = CAST(? AS BLOB)",
                    (name.encode(),),
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(self.iface_path, exc) from None
        return None if row is None else self._decode_iface(bytes(row[0]), bytes(row[1]))

    def save_iface(self, rec: IfaceRecord) -> None:
        """Store an iface record, replacing the one of the same name."""
        with self.transaction():
            self._put("ifc", rec.name, rec.to_json())

    def delete_iface(self, name: str) -> bool:
        """Delete an iface record; False if there was none of that name."""
        with self.transaction():
            return bool(self._delete("ifc", name))


def _same_portal(a: tuple[str, str, int, str], b: tuple[str, str, int, str]) -> bool:
    return a[0] == b[0] and a[1].lower() == b[1].lower() and a[2:] == b[2:]


def _found_through(node: NodeRecord, disc: DiscoveryRecord) -> bool:
    """Whether a node record was made by discovery through this discovery record's portal."""
    params = node.params
    return (
        params["node.discovery_type"] == ("send_targets" if disc.type == "sendtargets" else "isns")
        and params["node.discovery_address"].lower() == disc.address.lower()
        and params["node.discovery_port"] == str(disc.port)
    )

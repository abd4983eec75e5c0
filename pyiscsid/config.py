"""iscsid.conf and the initiator name file (/etc/iscsi/initiatorname.iscsi)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from pyiscsid.errors import Err, IscsiError

DEFAULT_CONFIG = "/etc/iscsid.conf"
DEFAULT_INITIATORNAME = "/etc/iscsi/initiatorname.iscsi"
GENERATED_NAME_PREFIX = "iqn.2016-04.com.open-iscsi:"
MAX_FILE_BYTES = 1 << 20  # a configuration file larger than this is certainly a mistake


def config_path(cli_path: str | None = None) -> Path:
    """iscsid.conf's path: the -c argument, then $ISCSID_CONFIG, then /etc/iscsid.conf."""
    return Path(cli_path or os.environ.get("ISCSID_CONFIG") or DEFAULT_CONFIG)


def _read_text(path: Path, what: str) -> str | None:
    """The file's text, None if it does not exist; IscsiError(Err.INVAL) if unreadable."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IscsiError(Err.INVAL, f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise IscsiError(Err.INVAL, f"{what} {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise IscsiError(Err.INVAL, f"{what} {path} line {line}: not UTF-8 text") from None


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The settings of iscsid.conf as {name: value}; {} when the file does not exist.

    Lines are `name = value`; blank lines and lines starting with '#' are ignored; a later
    line overrides an earlier one. A line that is not of this form is an IscsiError(Err.INVAL).
    """
    conf = Path(path) if path is not None else config_path()
    text = _read_text(conf, "configuration file")
    if text is None:
        return {}
    settings: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        where = f"iscsid.conf line {number}"
        if not sep:
            raise IscsiError(Err.INVAL, f"{where}: expected 'name = value', got '{line}' ({conf})")
        if not name or any(c.isspace() for c in name):
            raise IscsiError(Err.INVAL, f"{where}: bad parameter name '{name}' ({conf})")
        if not value:
            raise IscsiError(Err.INVAL, f"{where}: {name} has no value ({conf})")
        settings[name] = value
    return settings


def initiatorname_path(path: str | None = None) -> Path:
    """The initiator name file: the argument, $ISCSI_INITIATORNAME_FILE, or the default."""
    return Path(path or os.environ.get("ISCSI_INITIATORNAME_FILE") or DEFAULT_INITIATORNAME)


def _parse_initiatorname(text: str, path: Path) -> tuple[str, str]:
    name = alias = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "InitiatorName":
            name = value
        elif key == "InitiatorAlias":
            alias = value
    if not name:
        raise IscsiError(Err.INVAL, f"{path} has no InitiatorName=... line")
    if any(c.isspace() for c in name) or len(name.encode()) > 223:
        raise IscsiError(Err.INVAL, f"{path}: invalid InitiatorName '{name}'")
    return name, alias


def generate_initiator_name() -> str:
    """A new unique initiator name in open-iscsi's style."""
    return GENERATED_NAME_PREFIX + secrets.token_hex(6)


def initiator_name(path: str | None = None, create: bool = True) -> tuple[str, str]:
    """(InitiatorName, InitiatorAlias) from the initiator name file.

    When the file is missing and create is true, a name is generated and written (mode 0644,
    parent directories created); concurrent callers all get the one name that was written first.
    """
    file = initiatorname_path(path)
    text = _read_text(file, "initiator name file")
    if text is not None:
        return _parse_initiatorname(text, file)
    if not create:
        raise IscsiError(Err.INVAL, f"initiator name file {file} does not exist")
    name = generate_initiator_name()
    tmp = file.with_name(f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, f"InitiatorName={name}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, file)  # atomic, never replaces a name another process wrote
        except FileExistsError:
            pass
    except OSError as exc:
        raise IscsiError(
            Err.INVAL, f"cannot create initiator name file {file}: {exc.strerror}"
        ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    text = _read_text(file, "initiator name file")
    if text is None:
        raise IscsiError(Err.INVAL, f"initiator name file {file} vanished")
    return _parse_initiatorname(text, file)

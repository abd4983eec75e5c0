"""PDUs over a connected socket: digests on or off, a bounded data segment, timeouts.

The data segment length is checked against `max_recv_data_segment_length` before anything is
allocated for it: during login that bound is 8192 (RFC 7143 12.12), after login the negotiated
MaxRecvDataSegmentLength we declared.
"""

from __future__ import annotations

import socket
import time

from pyiscsid.errors import Err, IscsiError
from pyiscsid.pdu import (
    BHS_LEN,
    DIGEST_LEN,
    Pdu,
    PduError,
    bhs_lengths,
    check_digest,
    decode_bhs,
    pad_len,
    pdu_class,
)

LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH = 8192


class PduConnection:
    """One iSCSI connection's PDU stream. Not thread safe: one reader and one writer at most."""

    def __init__(
        self,
        sock: socket.socket,
        max_recv_data_segment_length: int = LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH,
        send_timeout: float = 30.0,
    ) -> None:
        self.sock = sock
        self.header_digest = False
        self.data_digest = False
        self.max_recv_data_segment_length = max_recv_data_segment_length
        self.send_timeout = send_timeout
        try:
            peer = sock.getpeername()
            self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "peer")
        except OSError:
            self.peer = "peer"

    def send(self, pdu: Pdu, timeout: float | None = None) -> None:
        """Send one PDU with the current digest settings."""
        buf = pdu.encode(self.header_digest, self.data_digest)
        try:
            self.sock.settimeout(self.send_timeout if timeout is None else max(timeout, 0.001))
            self.sock.sendall(buf)
        except TimeoutError:
            raise IscsiError(
                Err.PDU_TIMEOUT, f"timed out sending a {type(pdu).__name__} PDU to {self.peer}"
            ) from None
        except OSError as e:
            raise IscsiError(Err.TRANS, f"cannot send to {self.peer}: {e.strerror or e}") from None

    def recv(self, timeout: float) -> Pdu:
        """Receive one PDU within `timeout` seconds (for the whole PDU)."""
        deadline = time.monotonic() + timeout
        bhs = self._read(BHS_LEN, deadline, "PDU header")
        pdu_class(bhs)  # an unknown opcode is reported as such, before its length
        ahs_len, dlen = bhs_lengths(bhs)
        if dlen > self.max_recv_data_segment_length:
            raise PduError(
                f"{self.peer} sent a data segment of {dlen} bytes, more than the "
                f"{self.max_recv_data_segment_length} bytes allowed"
            )
        ahs = self._read(ahs_len, deadline, "AHS") if ahs_len else b""
        if self.header_digest:
            dig = self._read(DIGEST_LEN, deadline, "header digest")
            check_digest(bhs + ahs, dig, "header")
        pdu = decode_bhs(bhs, ahs)
        if dlen:
            padded = self._read(dlen + pad_len(dlen), deadline, "data segment")
            if self.data_digest:
                dig = self._read(DIGEST_LEN, deadline, "data digest")
                check_digest(padded, dig, "data")
            pdu.data = padded[:dlen]
        return pdu

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _read(self, n: int, deadline: float, what: str) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(what)
            try:
                self.sock.settimeout(remaining)
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError:
                raise self._timeout(what) from None
            except OSError as e:
                raise IscsiError(
                    Err.TRANS, f"connection to {self.peer} failed: {e.strerror or e}"
                ) from None
            if k == 0:
                if got:
                    msg = f"{self.peer} closed the connection in the middle of a {what}"
                    msg += f" ({got} of {n} bytes)"
                else:
                    msg = f"{self.peer} closed the connection"
                raise IscsiError(Err.TRANS, msg)
            got += k
        return bytes(buf)

    def _timeout(self, what: str) -> IscsiError:
        return IscsiError(Err.PDU_TIMEOUT, f"timed out waiting for a {what} from {self.peer}")

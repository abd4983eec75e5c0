"""PduConnection over a socketpair: digests, padding, bounded segments, EOF, timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pyiscsid import pdu as P
from pyiscsid.errors import Err, IscsiError
from pyiscsid.pduio import PduConnection


@pytest.fixture
def pair() -> Iterator[tuple[PduConnection, socket.socket]]:
    a, b = socket.socketpair()
    conn = PduConnection(a)
    try:
        yield conn, b
    finally:
        a.close()
        b.close()


def test_send_exact_bytes(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    pdu = P.TextRequest(itt=1, cmdsn=2, data=b"SendTargets=All\x00")
    conn.send(pdu)
    assert peer.recv(1000) == pdu.encode()
    conn.header_digest = conn.data_digest = True
    conn.send(pdu)
    got = peer.recv(1000)
    assert got == pdu.encode(True, True)
    assert len(got) == 48 + 4 + 16 + 4


@pytest.mark.parametrize("digests", [(False, False), (True, False), (False, True), (True, True)])
def test_recv_with_digests_and_padding(
    pair: tuple[PduConnection, socket.socket], digests: tuple[bool, bool]
) -> None:
    conn, peer = pair
    conn.header_digest, conn.data_digest = digests
    pdu = P.TextResponse(itt=3, ttt=4, statsn=5, data=b"TargetName=iqn.a\x00xyz")  # padded
    peer.sendall(pdu.encode(*digests))
    back = conn.recv(timeout=2)
    assert back == pdu


def test_recv_byte_by_byte(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    conn.header_digest = conn.data_digest = True
    pdu = P.NopIn(ttt=7, data=b"hello")
    wire = pdu.encode(True, True)

    def dribble() -> None:
        for i in range(len(wire)):
            peer.send(wire[i : i + 1])
            time.sleep(0.001)

    t = threading.Thread(target=dribble)
    t.start()
    assert conn.recv(timeout=5) == pdu
    t.join()


def test_bad_digest_rejected(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    conn.data_digest = True
    wire = bytearray(P.NopIn(data=b"data").encode(False, True))
    wire[50] ^= 0xFF
    peer.sendall(wire)
    with pytest.raises(P.PduError, match="data digest error"):
        conn.recv(timeout=2)


def test_oversized_segment_rejected_without_reading(
    pair: tuple[PduConnection, socket.socket],
) -> None:
    conn, peer = pair
    bhs = bytearray(P.LoginResponse().encode())
    bhs[5:8] = (16 << 20).to_bytes(3, "big") if (16 << 20) < (1 << 24) else b"\xff\xff\xff"
    peer.sendall(bhs)  # header only: a reader that tried to read 16 MiB would time out
    t0 = time.monotonic()
    with pytest.raises(P.PduError, match="16777215 bytes, more than the 8192 bytes allowed"):
        conn.recv(timeout=5)
    assert time.monotonic() - t0 < 1


def test_segment_at_limit_accepted(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    conn.max_recv_data_segment_length = 1024
    peer.sendall(P.TextResponse(data=b"a" * 1024).encode())
    assert conn.recv(timeout=2).data == b"a" * 1024
    peer.sendall(P.TextResponse(data=b"a" * 1025).encode())
    with pytest.raises(P.PduError, match="1025 bytes, more than the 1024"):
        conn.recv(timeout=2)


def test_eof_before_header(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    peer.close()
    with pytest.raises(IscsiError, match="closed the connection") as e:
        conn.recv(timeout=2)
    assert e.value.code == Err.TRANS


def test_eof_mid_header(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(P.NopIn().encode()[:20])
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(IscsiError, match=r"in the middle of a PDU header \(20 of 48 bytes\)") as e:
        conn.recv(timeout=2)
    assert e.value.code == Err.TRANS


def test_eof_mid_data(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(P.NopIn(data=b"x" * 100).encode()[:60])
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(IscsiError, match="data segment") as e:
        conn.recv(timeout=2)
    assert e.value.code == Err.TRANS


def test_timeout(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(P.NopIn().encode()[:10])  # a partial header, then silence
    t0 = time.monotonic()
    with pytest.raises(IscsiError, match="timed out waiting for a PDU header") as e:
        conn.recv(timeout=0.2)
    assert e.value.code == Err.PDU_TIMEOUT
    assert 0.15 < time.monotonic() - t0 < 1


def test_send_on_closed_peer(pair: tuple[PduConnection, socket.socket]) -> None:
    conn, peer = pair
    peer.close()
    with pytest.raises(IscsiError) as e:
        for _ in range(100):  # the first send may still be buffered
            conn.send(P.NopOut(data=b"x" * 65536))
    assert e.value.code == Err.TRANS

"""parse_sendtargets: SendTargets replies to targets and portals."""

from __future__ import annotations

import logging

import pytest

from pyiscsid.discovery import TPGT_UNKNOWN, parse_sendtargets
from pyiscsid.settings import DiscoveredTarget, TargetPortal


def test_several_targets_several_portals() -> None:
    pairs = [
        ("TargetName", "iqn.2024-01.x:a"),
        ("TargetAddress", "10.0.0.1:3260,1"),
        ("TargetAddress", "10.0.1.1:3261,2"),
        ("TargetName", "iqn.2024-01.x:b"),
        ("TargetAddress", "[fe80::1]:3260,1"),
        ("TargetAddress", "[2001:db8::5],7"),
        ("TargetAddress", "storage.example.com,3"),
        ("TargetAddress", "10.0.0.9"),
    ]
    assert parse_sendtargets(pairs, "192.0.2.1", 3260) == [
        DiscoveredTarget(
            "iqn.2024-01.x:a",
            [TargetPortal("10.0.0.1", 3260, 1), TargetPortal("10.0.1.1", 3261, 2)],
        ),
        DiscoveredTarget(
            "iqn.2024-01.x:b",
            [
                TargetPortal("fe80::1", 3260, 1),
                TargetPortal("2001:db8::5", 3260, 7),
                TargetPortal("storage.example.com", 3260, 3),
                TargetPortal("10.0.0.9", 3260, TPGT_UNKNOWN),
            ],
        ),
    ]


def test_target_without_address_uses_the_portal_asked() -> None:
    pairs = [
        ("TargetName", "iqn.2024-01.x:a"),
        ("TargetName", "iqn.2024-01.x:b"),
        ("TargetAddress", "10.0.0.2:3260,1"),
    ]
    assert parse_sendtargets(pairs, "fe80::7", 3262) == [
        DiscoveredTarget("iqn.2024-01.x:a", [TargetPortal("fe80::7", 3262, -1)]),
        DiscoveredTarget("iqn.2024-01.x:b", [TargetPortal("10.0.0.2", 3260, 1)]),
    ]


def test_empty_reply() -> None:
    assert parse_sendtargets([], "10.0.0.1", 3260) == []


def test_repeated_target_merges_portals() -> None:
    pairs = [
        ("TargetName", "iqn.2024-01.x:a"),
        ("TargetAddress", "10.0.0.1:3260,1"),
        ("TargetName", "iqn.2024-01.x:a"),
        ("TargetAddress", "10.0.0.1:3260,1"),
        ("TargetAddress", "10.0.0.2:3260,1"),
    ]
    assert parse_sendtargets(pairs, "10.0.0.1", 3260) == [
        DiscoveredTarget(
            "iqn.2024-01.x:a",
            [TargetPortal("10.0.0.1", 3260, 1), TargetPortal("10.0.0.2", 3260, 1)],
        ),
    ]


def test_bad_entries_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    pairs = [
        ("TargetAddress", "10.9.9.9:3260,1"),  # before any TargetName
        ("TargetName", "iqn.2024-01.x:a"),
        ("TargetAddress", "10.0.0.1:99999,1"),  # bad port
        ("TargetAddress", "[fe80::1:3260,1"),  # unterminated bracket
        ("TargetAddress", "10.0.0.3:3260,1"),
        ("TargetName", "iqn.2024-01.x:b"),
        ("TargetAddress", "10.0.0.4:notaport"),  # its only portal is bad: target dropped
        ("X-Vendor", "whatever"),
    ]
    with caplog.at_level(logging.WARNING):
        got = parse_sendtargets(pairs, "10.0.0.1", 3260)
    assert got == [DiscoveredTarget("iqn.2024-01.x:a", [TargetPortal("10.0.0.3", 3260, 1)])]
    text = caplog.text
    assert "before any TargetName" in text and "invalid port" in text
    assert "unexpected SendTargets data: X-Vendor=whatever" in text

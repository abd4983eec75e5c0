"""Node and discovery records: parameters, defaults, validation, aliases, ids, dumps."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyiscsid.errors import Err, IscsiError
from pyiscsid.records import (
    ISCSI_VERSION,
    DiscoveryRecord,
    NodeRecord,
    canonical_name,
    check_record_id,
    discovery_login_settings,
    format_portal,
    login_settings,
    node_record_id,
)

TARGET = "iqn.2003-01.org.example:t1"

# Captured from open-iscsi 2.1.8's `iscsiadm -m node -o new -T ... -p 10.0.0.1:3260` followed by
# `iscsiadm -m node -T ... -p ...` (an exact output format that tools parse).
GOLDEN_NODE = """\
# BEGIN RECORD 2.1.8
node.name = iqn.2003-01.org.example:t1
node.tpgt = -1
node.startup = manual
node.leading_login = No
iface.iscsi_ifacename = default
iface.net_ifacename = <empty>
iface.ipaddress = <empty>
iface.prefix_len = 0
iface.hwaddress = <empty>
iface.transport_name = tcp
iface.initiatorname = <empty>
iface.state = <empty>
iface.vlan_id = 0
iface.vlan_priority = 0
iface.vlan_state = <empty>
iface.iface_num = 0
iface.mtu = 0
iface.port = 0
iface.bootproto = <empty>
iface.subnet_mask = <empty>
iface.gateway = <empty>
iface.dhcp_alt_client_id_state = <empty>
iface.dhcp_alt_client_id = <empty>
iface.dhcp_dns = <empty>
iface.dhcp_learn_iqn = <empty>
iface.dhcp_req_vendor_id_state = <empty>
iface.dhcp_vendor_id_state = <empty>
iface.dhcp_vendor_id = <empty>
iface.dhcp_slp_da = <empty>
iface.fragmentation = <empty>
iface.gratuitous_arp = <empty>
iface.incoming_forwarding = <empty>
iface.tos_state = <empty>
iface.tos = 0
iface.ttl = 0
iface.delayed_ack = <empty>
iface.tcp_nagle = <empty>
iface.tcp_wsf_state = <empty>
iface.tcp_wsf = 0
iface.tcp_timer_scale = 0
iface.tcp_timestamp = <empty>
iface.redirect = <empty>
iface.def_task_mgmt_timeout = 0
iface.header_digest = <empty>
iface.data_digest = <empty>
iface.immediate_data = <empty>
iface.initial_r2t = <empty>
iface.data_seq_inorder = <empty>
iface.data_pdu_inorder = <empty>
iface.erl = 0
iface.max_receive_data_len = 0
iface.first_burst_len = 0
iface.max_outstanding_r2t = 0
iface.max_burst_len = 0
iface.chap_auth = <empty>
iface.bidi_chap = <empty>
iface.strict_login_compliance = <empty>
iface.discovery_auth = <empty>
iface.discovery_logout = <empty>
node.discovery_address = <empty>
node.discovery_port = 0
node.discovery_type = static
node.session.initial_cmdsn = 0
node.session.initial_login_retry_max = 4
node.session.xmit_thread_priority = -20
node.session.cmds_max = 128
node.session.queue_depth = 32
node.session.nr_sessions = 1
node.session.auth.authmethod = None
node.session.auth.username = <empty>
node.session.auth.password = <empty>
node.session.auth.username_in = <empty>
node.session.auth.password_in = <empty>
node.session.auth.chap_algs = MD5
node.session.timeo.replacement_timeout = 120
node.session.err_timeo.abort_timeout = 15
node.session.err_timeo.lu_reset_timeout = 30
node.session.err_timeo.tgt_reset_timeout = 30
node.session.err_timeo.host_reset_timeout = 60
node.session.iscsi.FastAbort = Yes
node.session.iscsi.InitialR2T = No
node.session.iscsi.ImmediateData = Yes
node.session.iscsi.FirstBurstLength = 262144
node.session.iscsi.MaxBurstLength = 16776192
node.session.iscsi.DefaultTime2Retain = 0
node.session.iscsi.DefaultTime2Wait = 2
node.session.iscsi.MaxConnections = 1
node.session.iscsi.MaxOutstandingR2T = 1
node.session.iscsi.ERL = 0
node.session.scan = auto
node.session.reopen_max = 0
node.conn[0].address = 10.0.0.1
node.conn[0].port = 3260
node.conn[0].startup = manual
node.conn[0].tcp.window_size = 524288
node.conn[0].tcp.type_of_service = 0
node.conn[0].timeo.logout_timeout = 15
node.conn[0].timeo.login_timeout = 30
node.conn[0].timeo.auth_timeout = 45
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 5
node.conn[0].iscsi.MaxXmitDataSegmentLength = 0
node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144
node.conn[0].iscsi.HeaderDigest = None
node.conn[0].iscsi.DataDigest = None
node.conn[0].iscsi.IFMarker = No
node.conn[0].iscsi.OFMarker = No
# END RECORD
"""

GOLDEN_DISCOVERY = """\
# BEGIN RECORD 2.1.8
discovery.startup = manual
discovery.type = sendtargets
discovery.sendtargets.address = 10.0.0.1
discovery.sendtargets.port = 3260
discovery.sendtargets.auth.authmethod = None
discovery.sendtargets.auth.username = <empty>
discovery.sendtargets.auth.password = <empty>
discovery.sendtargets.auth.username_in = <empty>
discovery.sendtargets.auth.password_in = <empty>
node.session.auth.chap_algs = MD5
discovery.sendtargets.timeo.login_timeout = 15
discovery.sendtargets.use_discoveryd = No
discovery.sendtargets.discoveryd_poll_inval = 30
discovery.sendtargets.reopen_max = 5
discovery.sendtargets.timeo.auth_timeout = 45
discovery.sendtargets.timeo.active_timeout = 30
discovery.sendtargets.iscsi.MaxRecvDataSegmentLength = 32768
# END RECORD
"""


def new_node(**kw) -> NodeRecord:
    return NodeRecord.new(TARGET, "10.0.0.1", 3260, **kw)


def test_version():
    assert ISCSI_VERSION == "2.1.8"


def test_node_dump_matches_open_iscsi():
    assert new_node().dump() == GOLDEN_NODE


def test_discovery_dump_matches_open_iscsi():
    assert DiscoveryRecord.new("10.0.0.1", 3260).dump() == GOLDEN_DISCOVERY


def test_password_masked_only_when_set():
    rec = new_node()
    rec.set("node.session.auth.password", "secret")
    dump = rec.dump()
    assert "node.session.auth.password = ********\n" in dump
    assert "node.session.auth.password_in = <empty>\n" in dump
    assert "secret" not in dump
    assert "node.session.auth.password = secret\n" in rec.dump(show=True)
    assert rec.get("node.session.auth.password") == "secret"


def test_discovery_password_masked():
    rec = DiscoveryRecord.new("10.0.0.1", 3260)
    rec.set("discovery.sendtargets.auth.password_in", "x")
    assert "discovery.sendtargets.auth.password_in = ********\n" in rec.dump()
    assert "discovery.sendtargets.auth.password = <empty>\n" in rec.dump()


def test_ipv6_portal_and_iface_family():
    rec = NodeRecord.new(TARGET, "[fe80::1]", 3260)
    assert rec.address == "fe80::1"
    assert rec.portal == "[fe80::1]:3260"
    assert "node.conn[0].address = fe80::1\n" in rec.dump()
    assert "iface.bootproto" in rec.dump()  # the iface name decides the family
    rec6 = NodeRecord.new(TARGET, "10.0.0.1", 3260, iface="tcp.ipv6.0")
    dump = rec6.dump()
    assert "iface.bootproto" not in dump
    assert "iface.ipv6_autocfg = <empty>\n" in dump
    assert "iface.flow_label = 0\n" in dump
    assert "iface.iscsi_ifacename = tcp.ipv6.0\n" in dump


def test_format_portal():
    assert format_portal("10.0.0.1", 3260) == "10.0.0.1:3260"
    assert format_portal("fe80::1", 3260) == "[fe80::1]:3260"
    assert format_portal("[fe80::1]", 860) == "[fe80::1]:860"
    assert format_portal("san.example.com", 3260) == "san.example.com:3260"


def test_canonical_name_aliases():
    assert (
        canonical_name("node.cnx[0].iscsi.MaxRecvDataSegmentLength")
        == "node.conn[0].iscsi.MaxRecvDataSegmentLength"
    )
    assert canonical_name("node.conn[0].timeo.login_timeout") == "node.conn[0].timeo.login_timeout"
    assert canonical_name("node.transport_name") == "iface.transport_name"
    assert canonical_name("discovery.sendtargets.auth.username") == (
        "discovery.sendtargets.auth.username"
    )


@pytest.mark.parametrize(
    "name",
    ["node.bogus", "", "node.conn[1].iscsi.HeaderDigest", "node.cnx[2].port", "NODE.STARTUP"],
)
def test_canonical_name_unknown(name):
    with pytest.raises(IscsiError) as info:
        canonical_name(name)
    assert info.value.code == Err.INVAL
    assert info.value.message


def test_get_and_set_with_alias():
    rec = new_node()
    rec.set("node.cnx[0].iscsi.MaxRecvDataSegmentLength", "65536")
    assert rec.get("node.conn[0].iscsi.MaxRecvDataSegmentLength") == "65536"
    assert rec.params["node.conn[0].iscsi.MaxRecvDataSegmentLength"] == "65536"
    assert "node.conn[0].iscsi.MaxRecvDataSegmentLength = 65536\n" in rec.dump()


@pytest.mark.parametrize(
    ("name", "value", "stored"),
    [
        ("node.startup", "automatic", "automatic"),
        ("node.startup", "Automatic", "automatic"),
        ("node.startup", "onboot", "onboot"),
        ("node.session.auth.authmethod", "CHAP", "CHAP"),
        ("node.session.auth.authmethod", "chap", "CHAP"),
        ("node.conn[0].iscsi.HeaderDigest", "None,CRC32C", "None,CRC32C"),
        ("node.conn[0].iscsi.DataDigest", "crc32c", "CRC32C"),
        ("node.session.iscsi.ImmediateData", "no", "No"),
        ("node.session.auth.chap_algs", "SHA3-256, SHA256,MD5", "SHA3-256,SHA256,MD5"),
        ("node.session.auth.chap_algs", "sha1", "SHA1"),
        ("node.session.xmit_thread_priority", "-5", "-5"),
        ("node.session.timeo.replacement_timeout", " 0 ", "0"),
        ("iface.vlan_id", "4095", "4095"),
        ("node.session.auth.username", "user name with spaces", "user name with spaces"),
        ("node.session.auth.username", "", ""),
    ],
)
def test_set_valid(name, value, stored):
    rec = new_node()
    rec.set(name, value)
    assert rec.get(name) == stored


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("node.startup", "sometimes"),
        ("node.session.auth.authmethod", "Kerberos"),
        ("node.conn[0].iscsi.HeaderDigest", "CRC32"),
        ("node.session.iscsi.ImmediateData", "true"),
        ("node.session.auth.chap_algs", "MD4"),
        ("node.session.auth.chap_algs", "MD5,MD5"),
        ("node.session.auth.chap_algs", ""),
        ("node.session.cmds_max", "12x"),
        ("node.session.cmds_max", ""),
        ("node.session.cmds_max", "99999999999"),
        ("iface.vlan_id", "65536"),
        ("iface.tos", "-1"),
        ("node.session.auth.username", "a\nb"),
        ("node.session.auth.password", "x" * 256),
        ("node.name", "iqn.other:t"),
        ("node.tpgt", "2"),
        ("node.conn[0].address", "10.0.0.2"),
        ("node.conn[0].port", "3261"),
        ("node.discovery_address", "10.0.0.3"),
        ("discovery.sendtargets.auth.username", "x"),
        ("no.such.param", "1"),
    ],
)
def test_set_invalid(name, value):
    rec = new_node()
    before = rec.dump(show=True)
    with pytest.raises(IscsiError) as info:
        rec.set(name, value)
    assert info.value.code == Err.INVAL
    assert rec.dump(show=True) == before


def test_identity_message_and_force():
    rec = new_node()
    with pytest.raises(IscsiError, match=r"Cannot modify node\.name"):
        rec.set("node.name", "x")
    rec.set("node.tpgt", "3", force=True)
    assert rec.tpgt == 3
    assert "node.tpgt = 3\n" in rec.dump()
    rec.tpgt = 7  # the fields are the source of truth
    assert rec.get("node.tpgt") == "7"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "10.0.0.1", 3260), "target"),
        (("iqn.x:y", "", 3260), "address"),
        (("iqn.x:y", "10.0.0.1", 0), "port"),
        (("iqn.x:y", "10.0.0.1", 65536), "port"),
        (("iqn has space", "10.0.0.1", 3260), "target"),
    ],
)
def test_bad_identity(args, message):
    with pytest.raises(IscsiError, match=message) as info:
        NodeRecord.new(*args)
    assert info.value.code == Err.INVAL


def test_config_applied_on_top_of_defaults():
    config = {
        "iscsid.startup": "/bin/systemctl start iscsid.socket",
        "node.startup": "automatic",
        "node.conn[0].timeo.login_timeout": "15",
        "node.cnx[0].iscsi.HeaderDigest": "CRC32C",
        "node.session.auth.password": "pw",
        "node.name": "iqn.ignored:x",  # identity: never taken from the configuration
        "discovery.sendtargets.auth.username": "du",
        "node.unknown.thing": "1",
    }
    rec = new_node(config=config)
    assert rec.get("node.startup") == "automatic"
    assert rec.get("node.conn[0].timeo.login_timeout") == "15"
    assert rec.get("node.conn[0].iscsi.HeaderDigest") == "CRC32C"
    assert rec.get("node.session.auth.password") == "pw"
    assert rec.target == TARGET
    disc = DiscoveryRecord.new("10.0.0.1", 3260, config=config)
    assert disc.get("discovery.sendtargets.auth.username") == "du"
    assert disc.get("discovery.startup") == "manual"


def test_config_bad_value():
    with pytest.raises(IscsiError, match=r"iscsid.conf.*node.startup") as info:
        new_node(config={"node.startup": "never"})
    assert info.value.code == Err.INVAL


def test_json_roundtrip():
    rec = new_node()
    rec.record_id = "0a45f8"
    rec.set("node.session.auth.password", "pw")
    rec.set("node.startup", "automatic")
    rec.set_discovery("10.0.0.9", 3260)
    back = NodeRecord.from_json(rec.to_json())
    assert back == rec
    assert back.dump(show=True) == rec.dump(show=True)
    assert list(back.params) == list(rec.params)
    disc = DiscoveryRecord.new("fe80::2", 3260)
    disc.record_id = "abcdef"
    disc.set("discovery.sendtargets.auth.authmethod", "CHAP")
    assert DiscoveryRecord.from_json(disc.to_json()) == disc


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"kind": "discovery"}',
        b'{"kind": "node", "target": "iqn.x:y"}',
        b'{"kind": "node", "target": "iqn.x:y", "address": "1.2.3.4", "port": "3260", '
        b'"tpgt": 1, "iface": "default", "record_id": "", "params": {}}',
        b'{"kind": "node", "target": "iqn.x:y", "address": "1.2.3.4", "port": 3260, '
        b'"tpgt": 1, "iface": "default", "record_id": "", '
        b'"params": {"node.startup": "bogus"}}',
    ],
)
def test_from_json_corrupt(data):
    with pytest.raises(IscsiError) as info:
        NodeRecord.from_json(data)
    assert info.value.code == Err.IDBM


def test_defaults_are_valid_and_canonical():
    """Stored values equal to the default skip validation when a record is read back: that is
    right only if every default is a value its own validation keeps as it is."""
    from pyiscsid.records import _DISCOVERY_BY_TYPE, NODE_PARAMS

    tables = [NODE_PARAMS, *(t.values() for t in _DISCOVERY_BY_TYPE.values())]
    for table in tables:
        for param in table:
            assert param.validate(param.default) == param.default, param.name


def test_record_ids():
    a = node_record_id(TARGET, "10.0.0.1", 3260, "default")
    assert a == node_record_id(TARGET, "10.0.0.1", 3260, "default")
    assert len(a) == 6 and all(c in "0123456789abcdef" for c in a)
    assert a != node_record_id(TARGET, "10.0.0.1", 3261, "default")
    assert a != node_record_id(TARGET, "10.0.0.1", 3260, "default", attempt=1)
    assert check_record_id("[0A45F8]") == "0a45f8"
    for bad in ("0a45f", "0a45f8a", "xyzxyz", ""):
        with pytest.raises(IscsiError):
            check_record_id(bad)


def test_discovery_record_types():
    rec = DiscoveryRecord.new("10.0.0.1", 3205, type="isns")
    assert rec.dump() == (
        "# BEGIN RECORD 2.1.8\n"
        "discovery.startup = manual\n"
        "discovery.type = isns\n"
        "discovery.sendtargets.address = 10.0.0.1\n"
        "discovery.sendtargets.port = 3205\n"
        "discovery.isns.use_discoveryd = No\n"
        "discovery.isns.discoveryd_poll_inval = -1\n"
        "# END RECORD\n"
    )
    with pytest.raises(IscsiError) as info:
        DiscoveryRecord.new("10.0.0.1", 3260, type="slp")
    assert info.value.code == Err.UNKNOWN_DISCOVERY_TYPE


def test_discovery_chap_algs_alias():
    rec = DiscoveryRecord.new("10.0.0.1", 3260)
    rec.set("discovery.sendtargets.auth.chap_algs", "SHA256,MD5")
    assert rec.get("node.session.auth.chap_algs") == "SHA256,MD5"
    assert "node.session.auth.chap_algs = SHA256,MD5\n" in rec.dump()
    with pytest.raises(IscsiError, match="Cannot modify"):
        rec.set("discovery.sendtargets.address", "1.1.1.1")
    with pytest.raises(IscsiError):
        rec.set("node.startup", "automatic")


def test_login_settings():
    rec = new_node()
    rec.set("node.session.auth.authmethod", "CHAP")
    rec.set("node.session.auth.username", "u")
    rec.set("node.session.auth.password", "p")
    rec.set("node.session.auth.username_in", "ui")
    rec.set("node.session.auth.password_in", "pi")
    rec.set("node.session.auth.chap_algs", "SHA256,MD5")
    rec.set("node.conn[0].iscsi.HeaderDigest", "None,CRC32C")
    rec.set("node.conn[0].timeo.login_timeout", "7")
    rec.set("node.session.iscsi.ERL", "1")
    s = login_settings(rec, "iqn.2016-04.com.open-iscsi:abc", "host1")
    assert s.initiator_name == "iqn.2016-04.com.open-iscsi:abc"
    assert s.initiator_alias == "host1"
    assert s.target_name == TARGET
    assert s.session_type == "Normal"
    assert s.isid == b"\x00\x02\x3d\x00\x00\x00"
    assert s.login_timeout == 7.0
    assert s.tcp_window_size == 524288  # open-iscsi's default node.conn[0].tcp.window_size
    assert (s.auth.method, s.auth.username, s.auth.password) == ("CHAP", "u", "p")
    assert (s.auth.username_in, s.auth.password_in) == ("ui", "pi")
    assert s.auth.chap_algs == ["SHA256", "MD5"]
    assert s.operational == {
        "HeaderDigest": "None,CRC32C",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength": "262144",
        "InitialR2T": "No",
        "ImmediateData": "Yes",
        "FirstBurstLength": "262144",
        "MaxBurstLength": "16776192",
        "DefaultTime2Wait": "2",
        "DefaultTime2Retain": "0",
        "MaxConnections": "1",
        "MaxOutstandingR2T": "1",
        "ErrorRecoveryLevel": "1",
        "DataPDUInOrder": "Yes",
        "DataSequenceInOrder": "Yes",
    }
    rec.set("iface.initiatorname", "iqn.2000-01.com.example:iface")
    assert login_settings(rec, "iqn.x:y").initiator_name == "iqn.2000-01.com.example:iface"


def test_discovery_login_settings():
    rec = DiscoveryRecord.new("10.0.0.1", 3260)
    rec.set("discovery.sendtargets.auth.authmethod", "CHAP")
    rec.set("discovery.sendtargets.auth.username", "du")
    rec.set("discovery.sendtargets.auth.password", "dp")
    rec.set("discovery.sendtargets.timeo.login_timeout", "3")
    s = discovery_login_settings(rec, "iqn.me:x")
    assert s.target_name is None
    assert s.session_type == "Discovery"
    assert (s.auth.method, s.auth.username, s.auth.password) == ("CHAP", "du", "dp")
    assert s.auth.chap_algs == ["MD5"]
    assert s.login_timeout == 3.0
    assert s.operational == {
        "HeaderDigest": "None",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength": "32768",
    }


def test_max_connections_proposed_from_the_record_or_iscsid_conf(tmp_path: Path) -> None:
    from pyiscsid.config import load_config

    assert login_settings(new_node(), "iqn.x:y").operational["MaxConnections"] == "1"
    conf = tmp_path / "iscsid.conf"
    conf.write_text("node.session.iscsi.MaxConnections = 4\n")
    rec = NodeRecord.new(TARGET, "10.0.0.1", 3260, 1, config=load_config(conf))
    assert login_settings(rec, "iqn.x:y").operational["MaxConnections"] == "4"
    rec.set("node.session.iscsi.MaxConnections", "2")  # iscsiadm -o update
    assert login_settings(rec, "iqn.x:y").operational["MaxConnections"] == "2"

/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * iscsi_if: the generic netlink interface between iscsid (userspace) and the
 * pyiscsi kernel data path (iscsi_if.ko + transports such as iscsi_tcp.ko).
 *
 * Userspace logs in on its own TCP socket, then:
 *   CREATE_SESSION -> SID, HOST_NO       CREATE_CONN(SID, CID)
 *   SET_PARAM(SID[, CID], PARAM, VALUE)  for every negotiated parameter
 *   BIND_CONN(SID, CID, SOCK_FD, EXP_STATSN, CMDSN)   the kernel takes the socket
 *   START_CONN(SID, CID)                 the SCSI queue runs
 *   SCAN(SID)                            synchronous LUN scan
 * and tears down with STOP_CONN(STOP_FLAG=TERM), DESTROY_CONN, DESTROY_SESSION.
 *
 * A session may run several connections at once (MC/S, RFC 7143 4.2): after
 * the leading connection has started, each further one is logged in with the
 * session's TSIH and its own CID (GET_SESSION gives the CmdSN its Login
 * Request carries), then CREATE_CONN, SET_PARAM (connection parameters only),
 * BIND_CONN and START_CONN as above; BIND_CONN then leaves the session's
 * CmdSN alone (its CMDSN/MAX_CMDSN only widen the command window). The kernel
 * chooses a connection for each command; every PDU of a command stays on it.
 * To close one connection: DRAIN_CONN (no new commands go to it; it returns
 * when its outstanding ones completed: -EBUSY for the session's last running
 * connection, -ETIMEDOUT after TIMEOUT seconds, 30 by default), a Logout with
 * reason "close the connection", then STOP_CONN(TERM) and DESTROY_CONN.
 * PDUs the kernel does not handle go up as RECV_PDU events on the "events"
 * multicast group; iscsid sends NOP-Out/Logout/Text down with SEND_PDU.
 *
 * SEND_PDU: the kernel owns the sequence numbers once the connection is bound,
 * so it fills CmdSN (advancing it unless the I bit is set) and ExpStatSN in the
 * BHS it is given. The ITT of a PDU from iscsid has bit 31 set (0xffffffff is
 * reserved): SCSI tasks use ITTs below 2^31, so the two never collide.
 * RECV_PDU carries the BHS (+AHS) and the data segment, digests stripped.
 *
 * This file holds only #defines of strings and enums, so that Python reads it
 * with cffi's cdef (after dropping the # lines; the string #defines are read
 * with a regular expression). Keep it that way: no structs, no kernel types.
 */
#ifndef _UAPI_ISCSI_IF_H
#define _UAPI_ISCSI_IF_H

#define ISCSI_IF_GENL_NAME	"iscsi_if"
#define ISCSI_IF_MCGRP_EVENTS	"events"

enum iscsi_if_version {
	ISCSI_IF_GENL_VERSION = 1,
};

/* Commands (user -> kernel) and events (kernel -> user, multicast). */
enum iscsi_if_cmd {
	ISCSI_IF_CMD_UNSPEC,
	ISCSI_IF_CMD_CREATE_SESSION,	/* TRANSPORT, CMDS_MAX, QUEUE_DEPTH -> SID, HOST_NO */
	ISCSI_IF_CMD_DESTROY_SESSION,	/* SID: removes the SCSI host and its disks */
	ISCSI_IF_CMD_CREATE_CONN,	/* SID, CID */
	ISCSI_IF_CMD_DESTROY_CONN,	/* SID, CID (connection must be stopped) */
	ISCSI_IF_CMD_BIND_CONN,		/* SID, CID, SOCK_FD, EXP_STATSN, CMDSN */
	ISCSI_IF_CMD_START_CONN,	/* SID, CID */
	ISCSI_IF_CMD_STOP_CONN,		/* SID, CID, STOP_FLAG: gives the socket back */
	ISCSI_IF_CMD_SET_PARAM,		/* SID, [CID], PARAM, VALUE (text) */
	ISCSI_IF_CMD_GET_PARAM,		/* SID, [CID], PARAM -> VALUE */
	ISCSI_IF_CMD_SEND_PDU,		/* SID, CID, PDU (BHS [+AHS] + data, no digests) */
	ISCSI_IF_CMD_SCAN,		/* SID [, CHANNEL, ID, LUN; absent = wildcard] */
	ISCSI_IF_CMD_GET_STATS,		/* SID, CID -> STATS (nested, ISCSI_IF_STAT_*) */
	ISCSI_IF_CMD_GET_SESSION,	/* SID -> SID, HOST_NO, STATE, CMDSN, ...; dump: all */
	ISCSI_IF_EVENT_CONN_ERROR,	/* SID, CID, ERROR */
	ISCSI_IF_EVENT_RECV_PDU,	/* SID, CID, PDU */
	ISCSI_IF_EVENT_SESSION_STATE,	/* SID, STATE */
	ISCSI_IF_EVENT_SESSION_DESTROYED, /* SID */
	ISCSI_IF_CMD_DRAIN_CONN,	/* SID, CID [, TIMEOUT]: see above */
	__ISCSI_IF_CMD_MAX,
};

enum iscsi_if_attr {
	ISCSI_IF_ATTR_UNSPEC,
	ISCSI_IF_ATTR_TRANSPORT,	/* string, e.g. "tcp" */
	ISCSI_IF_ATTR_SID,		/* u32 */
	ISCSI_IF_ATTR_CID,		/* u32 */
	ISCSI_IF_ATTR_HOST_NO,		/* u32 */
	ISCSI_IF_ATTR_SOCK_FD,		/* s32, a connected TCP socket of the caller */
	ISCSI_IF_ATTR_CMDS_MAX,		/* u32: Scsi_Host can_queue */
	ISCSI_IF_ATTR_QUEUE_DEPTH,	/* u32: cmd_per_lun */
	ISCSI_IF_ATTR_CMDSN,		/* u32: next CmdSN (after login; now in GET_SESSION) */
	ISCSI_IF_ATTR_EXP_STATSN,	/* u32: next ExpStatSN after login */
	ISCSI_IF_ATTR_PARAM,		/* u32, enum iscsi_if_param */
	ISCSI_IF_ATTR_VALUE,		/* string */
	ISCSI_IF_ATTR_PDU,		/* binary */
	ISCSI_IF_ATTR_STOP_FLAG,	/* u32, enum iscsi_if_stop */
	ISCSI_IF_ATTR_ERROR,		/* u32, enum iscsi_if_err */
	ISCSI_IF_ATTR_STATE,		/* u32, enum iscsi_if_session_state */
	ISCSI_IF_ATTR_CHANNEL,		/* u32 */
	ISCSI_IF_ATTR_ID,		/* u32 */
	ISCSI_IF_ATTR_LUN,		/* u64 */
	ISCSI_IF_ATTR_STATS,		/* nested: ISCSI_IF_STAT_* u64 attributes */
	ISCSI_IF_ATTR_PAD,		/* alignment padding for u64 */
	ISCSI_IF_ATTR_MAX_CMDSN,	/* u32, optional in BIND_CONN: MaxCmdSN of the last login
					 * response (absent: CMDSN, a window of one command
					 * until the target's first PDU opens it) */
	ISCSI_IF_ATTR_TIMEOUT,		/* u32, seconds: how long DRAIN_CONN waits */
	__ISCSI_IF_ATTR_MAX,
};

/*
 * Parameters. Session ones apply to the session; connection ones to the
 * connection named by CID. Values are text as negotiated ("Yes", "262144",
 * "CRC32C"); the kernel parses what the data path needs and keeps the text
 * for sysfs (names there as in the in-kernel iSCSI transport class).
 */
enum iscsi_if_param {
	/* connection */
	ISCSI_IF_PARAM_MAX_RECV_DLENGTH,	/* ours: the most a target may send */
	ISCSI_IF_PARAM_MAX_XMIT_DLENGTH,	/* the target's MaxRecvDataSegmentLength */
	ISCSI_IF_PARAM_HDRDGST_EN,		/* "0"/"1" */
	ISCSI_IF_PARAM_DATADGST_EN,		/* "0"/"1" */
	ISCSI_IF_PARAM_CONN_ADDRESS,		/* target IP as connected */
	ISCSI_IF_PARAM_CONN_PORT,
	ISCSI_IF_PARAM_PERSISTENT_ADDRESS,
	ISCSI_IF_PARAM_PERSISTENT_PORT,
	ISCSI_IF_PARAM_PING_TMO,		/* noop_out_timeout, seconds */
	ISCSI_IF_PARAM_RECV_TMO,		/* noop_out_interval, seconds */
	/* session */
	ISCSI_IF_PARAM_TARGET_NAME,
	ISCSI_IF_PARAM_TPGT,
	ISCSI_IF_PARAM_INITIATOR_NAME,
	ISCSI_IF_PARAM_TARGET_ALIAS,
	ISCSI_IF_PARAM_IFACE_NAME,
	ISCSI_IF_PARAM_ISID,			/* 12 hex digits */
	ISCSI_IF_PARAM_TSIH,
	ISCSI_IF_PARAM_INITIAL_R2T_EN,		/* "0"/"1" */
	ISCSI_IF_PARAM_IMM_DATA_EN,		/* "0"/"1" */
	ISCSI_IF_PARAM_FIRST_BURST,
	ISCSI_IF_PARAM_MAX_BURST,
	ISCSI_IF_PARAM_MAX_R2T,
	ISCSI_IF_PARAM_PDU_INORDER_EN,
	ISCSI_IF_PARAM_DATASEQ_INORDER_EN,
	ISCSI_IF_PARAM_ERL,
	ISCSI_IF_PARAM_DEF_TIME2WAIT,
	ISCSI_IF_PARAM_DEF_TIME2RETAIN,
	ISCSI_IF_PARAM_RECOVERY_TMO,		/* replacement_timeout, seconds */
	ISCSI_IF_PARAM_ABORT_TMO,		/* err_timeo.abort_timeout */
	ISCSI_IF_PARAM_LU_RESET_TMO,
	ISCSI_IF_PARAM_TGT_RESET_TMO,
	ISCSI_IF_PARAM_USERNAME,		/* shown in sysfs only */
	ISCSI_IF_PARAM_USERNAME_IN,
	ISCSI_IF_PARAM_NETDEV_NAME,		/* iface.net_ifacename: iscsi_host netdev */
	ISCSI_IF_PARAM_HWADDRESS,		/* iface.hwaddress: iscsi_host hwaddress */
	__ISCSI_IF_PARAM_MAX,
};

enum iscsi_if_stop {
	ISCSI_IF_STOP_RECOVER = 1,	/* block the queue, keep commands for a new connection */
	ISCSI_IF_STOP_TERM = 2,		/* fail outstanding commands: logout/teardown */
};

/* Why a connection failed (CONN_ERROR events). */
enum iscsi_if_err {
	ISCSI_IF_ERR_NONE,
	ISCSI_IF_ERR_CONN_FAILED,	/* socket error or peer closed */
	ISCSI_IF_ERR_PROTO,		/* malformed or unexpected PDU from the target */
	ISCSI_IF_ERR_HDR_DGST,		/* header digest mismatch */
	ISCSI_IF_ERR_DATA_DGST,		/* data digest mismatch */
	ISCSI_IF_ERR_XMIT_FAILED,	/* could not send */
	ISCSI_IF_ERR_BAD_R2T,		/* R2T outside the command or beyond MaxOutstandingR2T */
	ISCSI_IF_ERR_SCSI_EH,		/* the SCSI error handler gave up on the connection */
	ISCSI_IF_ERR_NOP_TIMEOUT,	/* set by iscsid when a ping is not answered */
};

enum iscsi_if_session_state {
	ISCSI_IF_SESSION_LOGGED_IN = 1,
	ISCSI_IF_SESSION_FAILED,	/* connection lost, recovery in progress */
	ISCSI_IF_SESSION_FREE,		/* recovery timed out / being destroyed */
};

/* Counters read with GET_STATS (the ones `iscsiadm -m session -s` prints). */
enum iscsi_if_stat {
	ISCSI_IF_STAT_UNSPEC,
	ISCSI_IF_STAT_TXDATA_OCTETS,
	ISCSI_IF_STAT_RXDATA_OCTETS,
	ISCSI_IF_STAT_NOPTX_PDUS,
	ISCSI_IF_STAT_SCSICMD_PDUS,
	ISCSI_IF_STAT_TMFCMD_PDUS,
	ISCSI_IF_STAT_LOGIN_PDUS,
	ISCSI_IF_STAT_TEXT_PDUS,
	ISCSI_IF_STAT_DATAOUT_PDUS,
	ISCSI_IF_STAT_LOGOUT_PDUS,
	ISCSI_IF_STAT_SNACK_PDUS,
	ISCSI_IF_STAT_NOPRX_PDUS,
	ISCSI_IF_STAT_SCSIRSP_PDUS,
	ISCSI_IF_STAT_TMFRSP_PDUS,
	ISCSI_IF_STAT_TEXTRSP_PDUS,
	ISCSI_IF_STAT_DATAIN_PDUS,
	ISCSI_IF_STAT_LOGOUTRSP_PDUS,
	ISCSI_IF_STAT_R2T_PDUS,
	ISCSI_IF_STAT_ASYNC_PDUS,
	ISCSI_IF_STAT_REJECT_PDUS,
	ISCSI_IF_STAT_DIGEST_ERR,
	ISCSI_IF_STAT_TIMEOUT_ERR,
	/* the transport's own, printed under "iSCSI Extended:" */
	ISCSI_IF_STAT_TX_SENDPAGE_FAILURES,	/* a send on the socket failed */
	ISCSI_IF_STAT_RX_DISCONTIGUOUS_HDR,	/* a BHS split across skbs */
	ISCSI_IF_STAT_EH_ABORT_CNT,		/* SCSI error handler aborts */
	__ISCSI_IF_STAT_MAX,
};

#endif /* _UAPI_ISCSI_IF_H */

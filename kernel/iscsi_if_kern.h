/* SPDX-License-Identifier: GPL-2.0 */
/*
 * iscsi_if_kern.h: the in-kernel API between iscsi_if.ko (control plane:
 * genetlink, sessions, connections, Scsi_Host, sysfs) and a transport module
 * such as iscsi_tcp.ko (the data path).
 *
 * Ownership and lifetimes
 * - iscsi_if owns struct iscsi_if_session and struct iscsi_if_conn. Both are
 *   reference counted through their embedded struct device; the transport's
 *   private area (dd_data) lives inside the same allocation.
 * - Every transport callback is called from process context with the
 *   iscsi_if mutex held, except where noted. The transport serialises its own
 *   data path (queuecommand, socket callbacks, work items) against them.
 * - A session pins the transport module (try_module_get(owner)) from
 *   CREATE_SESSION until the session is released.
 * - The transport may call iscsi_if_conn_error() and iscsi_if_recv_pdu() from
 *   any context (softirq included) while the connection is started; after
 *   stop_conn returns it must not call them for that connection any more.
 */
#ifndef _ISCSI_IF_KERN_H
#define _ISCSI_IF_KERN_H

#include <linux/device.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/spinlock.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <scsi/scsi_host.h>

#include "iscsi_if.h"

struct iscsi_if_transport;

/**
 * enum iscsi_if_conn_state - a connection's state as iscsi_if tracks it
 * @ISCSI_IF_CONN_CREATED: created, no socket yet (sysfs "down")
 * @ISCSI_IF_CONN_BOUND: the transport holds the socket (sysfs "bound")
 * @ISCSI_IF_CONN_STARTED: carrying SCSI traffic (sysfs "up")
 * @ISCSI_IF_CONN_FAILED: an error was raised, the connection is not yet
 *	stopped (sysfs "failed")
 * @ISCSI_IF_CONN_STOPPED: stopped, the socket given back (sysfs "down")
 */
enum iscsi_if_conn_state {
	ISCSI_IF_CONN_CREATED,
	ISCSI_IF_CONN_BOUND,
	ISCSI_IF_CONN_STARTED,
	ISCSI_IF_CONN_FAILED,
	ISCSI_IF_CONN_STOPPED,
};

/**
 * struct iscsi_if_session - an iSCSI session: one SCSI host and its connections
 * @dev: "sessionN" under the SCSI host; its release frees the session
 * @cdev: the iscsi_session class device "sessionN"; holds a reference on @dev
 * @hdev: the iscsi_host class device "hostM"; holds a reference on @dev
 * @shost: the SCSI host (hostdata: a pointer to this session)
 * @transport: the transport; its module is pinned while the session exists
 * @sid: the session number (SID), also in the sysfs names
 * @removing: DESTROY_SESSION has started
 * @blocked: scsi_block_requests() is in force
 * @cdev_added: @cdev is in sysfs
 * @hdev_added: @hdev is in sysfs
 * @dev_added: @dev is in sysfs
 * @host_added: @shost was added to the SCSI midlayer
 * @tsess_created: the transport's create_session succeeded
 * @lock: protects @state, @blocked, @params, @host_ipaddress and the
 *	connections' states; taken from any context
 * @state: enum iscsi_if_session_state
 * @state_wq: woken whenever @state or a connection's state changes
 * @recovery_tmo: replacement timeout in seconds (at most
 *	ISCSI_IF_MAX_RECOVERY_TMO): how long a FAILED session
 *	waits for a new connection before its I/O fails
 * @recovery_work: ends the recovery when @recovery_tmo expires
 * @scan_lock: keeps a scan and DESTROY_SESSION apart
 * @conns: the connections (iscsi_if_conn.node), under the iscsi_if mutex
 * @params: session parameter values as set (normalised text), for sysfs and
 *	GET_PARAM (a connection's own are in its iscsi_if_conn)
 * @host_ipaddress: our end of the connection, for iscsi_host/hostM/ipaddress
 * @creator: the process that created the session (sysfs "creator")
 * @dd_data: the transport's private area, transport->session_size bytes in
 *	the same allocation
 */
struct iscsi_if_session {
	struct device dev;
	struct device cdev;
	struct device hdev;
	struct Scsi_Host *shost;
	struct iscsi_if_transport *transport;
	u32 sid;
	bool removing;
	bool blocked;
	bool cdev_added, hdev_added, dev_added, host_added, tsess_created;

	spinlock_t lock;		/* taken from any context */
	int state;
	wait_queue_head_t state_wq;
	unsigned int recovery_tmo;
	struct delayed_work recovery_work;
	struct mutex scan_lock;		/* SCAN against DESTROY_SESSION */

	struct list_head conns;
	char *params[__ISCSI_IF_PARAM_MAX];
	char host_ipaddress[64];
	pid_t creator;

	void *dd_data;
};

/**
 * struct iscsi_if_conn - a connection of a session
 * @dev: "connectionS:C" under the session's @dev; its release frees the
 *	connection and drops its reference on the session
 * @cdev: the iscsi_connection class device; holds a reference on @dev
 * @cdev_added: @cdev is in sysfs
 * @dev_added: @dev is in sysfs
 * @session: the session
 * @node: in the session's list of connections
 * @cid: the connection number (CID)
 * @state: enum iscsi_if_conn_state, under the session's lock
 * @flags: ISCSI_IF_CONN_F_* bits
 * @error: the enum iscsi_if_err of the first error since the last start
 * @err_work: reports that error to iscsid and fails the session
 * @params: the connection parameters' values as set (normalised text), for
 *	sysfs and GET_PARAM; under the session's lock
 * @dd_data: the transport's private area, transport->conn_size bytes in the
 *	same allocation
 */
struct iscsi_if_conn {
	struct device dev;
	struct device cdev;
	bool cdev_added, dev_added;
	struct iscsi_if_session *session;
	struct list_head node;
	u32 cid;
	int state;
	unsigned long flags;
	u32 error;
	struct work_struct err_work;
	char *params[__ISCSI_IF_PARAM_MAX];
	void *dd_data;
};

#define ISCSI_IF_CONN_F_ERROR	0	/* iscsi_if_conn_error() already raised */

/* The longest replacement timeout iscsi_if keeps (seconds); larger values are clamped. */
#define ISCSI_IF_MAX_RECOVERY_TMO	86400U

/**
 * struct iscsi_if_transport - a data path module (such as iscsi_tcp)
 * @name: the name CREATE_SESSION asks for ("tcp")
 * @owner: the module, pinned by every session
 * @sht: the SCSI host template; hostdata is one pointer to the session
 * @session_size: bytes of the session's private area (dd_data)
 * @conn_size: bytes of the connection's private area (dd_data)
 * @create_session: optional; after the SCSI host is allocated (can_queue is
 *	final), before it is added; without the iscsi_if mutex
 * @destroy_session: optional; after the SCSI host is removed: no
 *	queuecommand can run any more; without the iscsi_if mutex
 * @create_conn: optional; the connection is not in sysfs yet
 * @destroy_conn: optional; the connection is stopped (or was never bound)
 * @bind_conn: takes the caller's socket @fd (called in the caller's
 *	context) with the sequence numbers the login ended with
 * @start_conn: starts SCSI traffic on the bound socket
 * @stop_conn: stops I/O on the connection and gives the socket back.
 *	ISCSI_IF_STOP_RECOVER: fail outstanding commands so that the midlayer
 *	requeues them (the queue is blocked); ISCSI_IF_STOP_TERM: fail them
 *	for good. Must be idempotent.
 * @set_param: optional; a parameter's value, already validated and
 *	normalised. @conn is the connection for the parameters iscsi_if's table
 *	marks as connection parameters, NULL for session parameters.
 * @send_pdu: queues a PDU from iscsid (BHS, AHS, data; no digests)
 * @get_stats: optional; fills the ISCSI_IF_STAT_* counters
 * @drain_conn: optional; no new commands go to the started connection, and
 *	the call returns once its outstanding ones have completed: 0,
 *	-ETIMEDOUT after @timeout seconds, -EBUSY when no other connection of
 *	the session could take new commands, -ENOTCONN when it stopped
 *	meanwhile. Called without the iscsi_if mutex (it may wait long).
 * @cmdsn: optional; the CmdSN the session's next command gets (what a
 *	further connection's Login Request carries). Any context.
 * @max_conns: how many connections of a session may run at once (0 or 1:
 *	one; more need a data path that spreads commands over them)
 * @list: in iscsi_if's list of transports
 *
 * The callbacks run in process context with the iscsi_if mutex held, except
 * where noted.
 */
struct iscsi_if_transport {
	const char *name;
	struct module *owner;
	struct scsi_host_template *sht;
	size_t session_size;
	size_t conn_size;

	int (*create_session)(struct iscsi_if_session *session);
	void (*destroy_session)(struct iscsi_if_session *session);
	int (*create_conn)(struct iscsi_if_conn *conn);
	void (*destroy_conn)(struct iscsi_if_conn *conn);
	int (*bind_conn)(struct iscsi_if_conn *conn, int fd, u32 exp_statsn,
			 u32 cmdsn, u32 max_cmdsn);
	int (*start_conn)(struct iscsi_if_conn *conn);
	void (*stop_conn)(struct iscsi_if_conn *conn, int flag);
	int (*set_param)(struct iscsi_if_session *session,
			 struct iscsi_if_conn *conn, enum iscsi_if_param param,
			 const char *value);
	int (*send_pdu)(struct iscsi_if_conn *conn, const u8 *pdu, size_t len);
	void (*get_stats)(struct iscsi_if_conn *conn,
			  u64 stats[__ISCSI_IF_STAT_MAX]);
	int (*drain_conn)(struct iscsi_if_conn *conn, unsigned int timeout);
	u32 (*cmdsn)(struct iscsi_if_session *session);
	unsigned int max_conns;

	struct list_head list;
};

/**
 * iscsi_if_shost_session - the session of a SCSI host
 * @shost: a SCSI host created by iscsi_if
 *
 * Return: the session whose host @shost is.
 */
static inline struct iscsi_if_session *iscsi_if_shost_session(struct Scsi_Host *shost)
{
	return *(struct iscsi_if_session **)shost_priv(shost);
}

int iscsi_if_register_transport(struct iscsi_if_transport *t);
void iscsi_if_unregister_transport(struct iscsi_if_transport *t);
void iscsi_if_conn_error(struct iscsi_if_conn *conn, enum iscsi_if_err err);
int iscsi_if_recv_pdu(struct iscsi_if_conn *conn, const void *hdr, size_t hlen,
		      const void *data, size_t dlen);
void iscsi_if_set_host_ipaddress(struct iscsi_if_session *session, const char *addr);
int iscsi_if_session_state(struct iscsi_if_session *session);

#endif /* _ISCSI_IF_KERN_H */

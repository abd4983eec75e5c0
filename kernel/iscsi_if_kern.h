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

/* Connection states as iscsi_if tracks them (sysfs "state"). */
enum iscsi_if_conn_state {
	ISCSI_IF_CONN_CREATED,		/* "down" */
	ISCSI_IF_CONN_BOUND,		/* "bound" */
	ISCSI_IF_CONN_STARTED,		/* "up" */
	ISCSI_IF_CONN_FAILED,		/* "failed": error raised, not yet stopped */
	ISCSI_IF_CONN_STOPPED,		/* "down" */
};

struct iscsi_if_session {
	struct device dev;		/* "sessionN", parent: the Scsi_Host */
	struct device cdev;		/* class iscsi_session, "sessionN" */
	struct device hdev;		/* class iscsi_host, "hostM" */
	struct Scsi_Host *shost;
	struct iscsi_if_transport *transport;
	u32 sid;
	bool removing;			/* DESTROY_SESSION started */
	bool blocked;			/* scsi_block_requests() in force */
	bool cdev_added, hdev_added, dev_added, host_added, tsess_created;

	spinlock_t lock;		/* state, blocked */
	int state;			/* enum iscsi_if_session_state */
	wait_queue_head_t state_wq;	/* woken when state or a connection's state changes */
	unsigned int recovery_tmo;	/* seconds */
	struct delayed_work recovery_work;
	struct mutex scan_lock;		/* SCAN against DESTROY */

	struct list_head conns;		/* iscsi_if_conn.node, under the iscsi_if mutex */
	char *params[__ISCSI_IF_PARAM_MAX];	/* text as set, for sysfs and GET_PARAM */
	char host_ipaddress[64];	/* our end of the connection, under lock */
	pid_t creator;

	void *dd_data;			/* transport's, transport->session_size bytes */
};

struct iscsi_if_conn {
	struct device dev;		/* "connectionN:M", parent: the session */
	struct device cdev;		/* class iscsi_connection */
	bool cdev_added, dev_added;
	struct iscsi_if_session *session;
	struct list_head node;
	u32 cid;
	int state;			/* enum iscsi_if_conn_state, under session->lock */
	unsigned long flags;		/* ISCSI_IF_CONN_F_* */
	u32 error;			/* enum iscsi_if_err of the first error */
	struct work_struct err_work;
	void *dd_data;			/* transport's, transport->conn_size bytes */
};

#define ISCSI_IF_CONN_F_ERROR	0	/* iscsi_if_conn_error() already raised */

struct iscsi_if_transport {
	const char *name;
	struct module *owner;
	struct scsi_host_template *sht;	/* hostdata: one pointer to the session */
	size_t session_size;
	size_t conn_size;

	/* After the Scsi_Host is allocated (can_queue final), before it is added. */
	int (*create_session)(struct iscsi_if_session *session);
	/* After the Scsi_Host is removed: no queuecommand can run any more. */
	void (*destroy_session)(struct iscsi_if_session *session);
	int (*create_conn)(struct iscsi_if_conn *conn);
	/* The connection is stopped (or was never bound). */
	void (*destroy_conn)(struct iscsi_if_conn *conn);
	/* Takes the caller's socket fd; called in the caller's context. */
	int (*bind_conn)(struct iscsi_if_conn *conn, int fd, u32 exp_statsn,
			 u32 cmdsn, u32 max_cmdsn);
	int (*start_conn)(struct iscsi_if_conn *conn);
	/*
	 * Stops I/O on the connection and gives the socket back. RECOVER: fail
	 * outstanding commands so the midlayer requeues them (the queue is
	 * blocked); TERM: fail them for good. Must be idempotent.
	 */
	void (*stop_conn)(struct iscsi_if_conn *conn, int flag);
	/* conn is NULL for session parameters. Values already validated. */
	int (*set_param)(struct iscsi_if_session *session,
			 struct iscsi_if_conn *conn, enum iscsi_if_param param,
			 const char *value);
	int (*send_pdu)(struct iscsi_if_conn *conn, const u8 *pdu, size_t len);
	void (*get_stats)(struct iscsi_if_conn *conn,
			  u64 stats[__ISCSI_IF_STAT_MAX]);

	struct list_head list;		/* private to iscsi_if */
};

static inline struct iscsi_if_session *iscsi_if_shost_session(struct Scsi_Host *shost)
{
	return *(struct iscsi_if_session **)shost_priv(shost);
}

int iscsi_if_register_transport(struct iscsi_if_transport *t);
void iscsi_if_unregister_transport(struct iscsi_if_transport *t);

/* Any context. Raises one CONN_ERROR event per connection start. */
void iscsi_if_conn_error(struct iscsi_if_conn *conn, enum iscsi_if_err err);
/* Any context. hdr: BHS + AHS; data: the data segment without digests. */
int iscsi_if_recv_pdu(struct iscsi_if_conn *conn, const void *hdr, size_t hlen,
		      const void *data, size_t dlen);
/* Any context: our local address as iscsi_host/hostN/ipaddress shows it. */
void iscsi_if_set_host_ipaddress(struct iscsi_if_session *session, const char *addr);
/* Session state as seen by the data path (ISCSI_IF_SESSION_*). */
int iscsi_if_session_state(struct iscsi_if_session *session);

#endif /* _ISCSI_IF_KERN_H */

// SPDX-License-Identifier: GPL-2.0
/*
 * iscsi_tcp: the TCP transport of the pyiscsi initiator (RFC 7143).
 *
 * iscsid logs in on its own socket and hands it over (BIND_CONN). From then
 * on this module carries SCSI traffic:
 * - queuecommand builds the SCSI Command PDU in the command's private area
 *   (struct itcp_task, no allocation per I/O; ITT = blk-mq tag plus a
 *   generation count) and queues it; the transmit work gives it its CmdSN
 *   when the target's window (MaxCmdSN) lets it go, so that a command that
 *   never left can be aborted without a hole in the CmdSN sequence;
 * - one transmit work item per connection sends commands, immediate data,
 *   unsolicited and solicited Data-Out (pages handed to TCP without copying)
 *   and iscsid's PDUs, with optional CRC32C digests;
 * - the socket's data_ready callback parses PDUs with a small state machine
 *   and copies Data-In straight into the command's scatterlist, checking
 *   every field a target could get wrong against the task: a read succeeds
 *   only when the data its status accounts for was all received.
 * PDUs the data path does not handle go to iscsid as RECV_PDU events.
 *
 * A session may run several connections (MC/S, RFC 7143 4.2). CmdSN, the
 * command window and ITTs are the session's; StatSN, the transmit queues
 * and the receive state are each connection's. queuecommand gives every
 * command to the running connection with the fewest commands outstanding
 * (pick_conn_locked()), and all of that command's PDUs stay there
 * (connection allegiance, RFC 7143 4.2.1): R2Ts and Data-In are looked up
 * only among the tasks of the connection they came on.
 *
 * Locking: sess->lock (BH-safe spinlock) protects the task table, the
 * sequence numbers, the connections' list and flags, the transmit queues
 * and the task flags. The receive path
 * is serialised by the socket lock (tcp_read_sock runs under it); the
 * transmit path by the work item. Tasks leave the table only in the receive
 * path, in stop_conn (after receive and transmit are stopped) or on a
 * deferred completion in the transmit path; scsi_done() is never called
 * with sess->lock held.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/blk-mq.h>
#include <linux/crc32c.h>
#include <linux/highmem.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/sched/mm.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/version.h>
#include <linux/vmalloc.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <scsi/iscsi_proto.h>
#include <scsi/scsi.h>
#include <scsi/scsi_cmnd.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_eh.h>
#include <scsi/scsi_host.h>
#include <scsi/scsi_tcq.h>

#include "iscsi_if_kern.h"
#define CREATE_TRACE_POINTS
#include "iscsi_tcp_trace.h"

#define ITCP_DIGEST_SIZE	4		/* CRC32C */
#define ITCP_MAX_AHS		1020		/* TotalAHSLength is 8 bits of words */
#define ITCP_MAX_R2T		16		/* R2Ts kept per command */
#define ITCP_ECDB_AHS_MAX	(4 + SCSI_MAX_VARLEN_CDB_SIZE - ISCSI_CDB_SIZE + 4)
#define ITCP_ITT_TAG_BITS	16
#define ITCP_ITT_TAG_MASK	((1u << ITCP_ITT_TAG_BITS) - 1)
#define ITCP_ITT_GEN_MASK	0x7fffu		/* bits 16..30: bit 31 is iscsid's */
#define ITCP_TMF_TAG		ITCP_ITT_TAG_MASK /* never a blk-mq tag: can_queue <= 4096 */
#define ITCP_XMIT_BUDGET	64
#define ITCP_DEF_RECV_DLENGTH	8192
#define ITCP_MAX_MGMT_QUEUED	64		/* iscsid's PDUs waiting to be sent */
#define ITCP_MAX_CONNS		16		/* connections a session may run */

/* task->flags */
#define TASK_ACTIVE		BIT(0)	/* in the task table */
#define TASK_XMIT		BIT(1)	/* the transmit work is sending from it */
#define TASK_DONE_PENDING	BIT(2)	/* completed while TASK_XMIT: xmit completes */
#define TASK_CMD_SENT		BIT(3)

struct itcp_r2t {
	u32 ttt;
	u32 offset;		/* next byte to send */
	u32 left;		/* bytes left in this sequence */
	u32 datasn;
};

/* Per command, in scsi_cmd_priv(): no allocation per I/O. */
struct itcp_task {
	struct list_head xmit_node;	/* conn->cmdq or conn->dataq */
	struct itcp_conn *conn;		/* allegiance: every PDU of the task goes here */
	struct iscsi_scsi_req hdr;
	u8 ahs[ITCP_ECDB_AHS_MAX];
	u16 ahs_len;
	u32 flags;
	u32 itt;
	u32 cmdsn;
	u32 imm_len;
	/* unsolicited Data-Out (InitialR2T=No) */
	u32 unsol_off, unsol_left, unsol_datasn;
	/* R2Ts, a ring */
	u8 r2t_head, r2t_count;
	u32 exp_r2tsn;
	u32 r2t_next;			/* first byte no R2T has asked for yet */
	struct itcp_r2t r2t[ITCP_MAX_R2T];
	/* Data-In */
	u32 exp_datasn;
	u32 datain_got;			/* bytes of Data-In announced so far */
	struct scatterlist *rx_sg;	/* cursor: entry holding byte rx_pos */
	u32 rx_sg_off, rx_pos;
	int result;			/* for TASK_DONE_PENDING */
};

struct itcp_mgmt {
	struct list_head node;
	bool embedded;			/* the session's TMF slot: not freed */
	u32 hlen;			/* BHS + AHS */
	u32 dlen;
	u8 *buf;			/* hlen + dlen bytes */
};

struct itcp_conn;

struct itcp_session {
	struct iscsi_if_session *ifs;
	spinlock_t lock;		/* BH-safe; see the top of this file */
	struct itcp_task **tasks;	/* by blk-mq tag */
	u32 ntasks;
	u16 gen;
	u32 cmdsn, exp_cmdsn, max_cmdsn;
	bool window_closed;		/* a command waits for MaxCmdSN to move */
	struct list_head conns;		/* every connection (itcp_conn.node) */
	u32 nr_running;			/* connections taking commands */
	u32 pick_seq;			/* counts pick_conn_locked() choices */
	u32 conn_gen;			/* counts START_CONNs */
	/* a connection's xmit_task changed, or a draining one emptied */
	wait_queue_head_t xmit_wait;

	/* negotiated, set while no connection runs */
	bool initial_r2t, imm_data;
	bool pdu_inorder, dataseq_inorder;
	u32 first_burst, max_burst, max_r2t;
	u32 abort_tmo, lu_reset_tmo, tgt_reset_tmo;

	/* task management: one at a time (tmf_mutex) */
	struct mutex tmf_mutex;
	struct completion tmf_done;
	bool tmf_pending, tmf_answered;
	u8 tmf_func, tmf_response;
	u32 tmf_itt;
	u64 tmf_lun;
	struct itcp_task *tmf_ref;
	struct itcp_conn *tmf_conn;	/* the connection the TMF went on */
	struct itcp_mgmt tmf_mgmt;
	struct iscsi_tm tmf_hdr;
};

enum rx_state { RX_BHS, RX_AHS, RX_HDGST, RX_DATA, RX_PAD, RX_DDGST, RX_DEAD };

struct itcp_conn {
	struct iscsi_if_conn *ifc;
	struct itcp_session *sess;
	struct list_head node;		/* in sess->conns */
	struct socket *sock;
	void (*old_data_ready)(struct sock *sk);
	void (*old_state_change)(struct sock *sk);
	bool callbacks_set;
	bool running;			/* started, not stopping: under sess->lock */
	bool stopping;			/* under sess->lock */
	bool draining;			/* DRAIN_CONN: no new commands; under sess->lock */
	bool xmit_dead;
	u32 ntasks;			/* tasks in the table allegiant to it */
	u32 picked;			/* sess->pick_seq when it was last chosen */
	struct itcp_task *xmit_task;	/* the task the transmit work sends from */
	u32 exp_statsn;			/* next StatSN expected (ExpStatSN) */

	u32 max_recv_dlength, max_xmit_dlength;
	bool hdrdgst, datadgst;

	struct work_struct xmit_work;
	bool logout_sent;		/* iscsid's Logout Request went out */
	bool logout_rsp_seen;		/* ... and was answered: the target may close now */
	struct list_head cmdq, dataq, mgmtq;
	u32 mgmt_queued;		/* iscsid's PDUs on mgmtq */

	/* receive state machine */
	enum rx_state rx_state;
	u8 rx_hdr[ISCSI_HDR_LEN + ITCP_MAX_AHS] __aligned(__alignof__(struct iscsi_hdr));
	u32 rx_got;			/* bytes of the current part */
	u32 rx_ahslen, rx_dlen, rx_padlen;
	__le32 rx_dgst;
	u32 rx_crc;
	struct itcp_task *rx_task;	/* Data-In target, or NULL: rx_buf */
	u32 rx_offset;			/* Data-In buffer offset */
	bool rx_discard;
	u8 *rx_buf;
	u32 rx_buf_size;

	/* statistics: rx_* written by the receive path, the rest by xmit */
	u64 stats[__ISCSI_IF_STAT_MAX];
};

static struct workqueue_struct *itcp_wq;

static inline struct itcp_session *shost_sess(struct Scsi_Host *shost)
{
	return iscsi_if_shost_session(shost)->dd_data;
}

static inline struct scsi_cmnd *task_sc(struct itcp_task *task)
{
	return (struct scsi_cmnd *)task - 1;
}

static inline u32 task_tag(struct itcp_task *task)
{
	return blk_mq_unique_tag_to_tag(blk_mq_unique_tag(scsi_cmd_to_rq(task_sc(task))));
}

/* ITTs are opaque to the target; ours are numbers, big-endian on the wire. */
static inline u32 itt_to_cpu(itt_t itt)
{
	return be32_to_cpu((__force __be32)itt);
}

static inline itt_t cpu_to_itt(u32 itt)
{
	return (__force itt_t)cpu_to_be32(itt);
}

/* The header just received (BHS + AHS). */
static inline const struct iscsi_hdr *rx_pdu_hdr(struct itcp_conn *conn)
{
	return (const struct iscsi_hdr *)conn->rx_hdr;
}

/* Bytes of padding after a data segment of len bytes. */
static inline u32 pad_len(u32 len)
{
	return (ISCSI_PAD_LEN - (len & (ISCSI_PAD_LEN - 1))) & (ISCSI_PAD_LEN - 1);
}

static inline u32 digest_final(u32 crc)
{
	return ~crc;
}

static void stat_add(struct itcp_conn *conn, int stat, u64 n)
{
	WRITE_ONCE(conn->stats[stat], conn->stats[stat] + n);
}

/* ------------------------------------------------------------- errors */

static void conn_fail(struct itcp_conn *conn, enum iscsi_if_err err)
{
	conn->rx_state = RX_DEAD;
	trace_iscsi_tcp_conn_state(conn->ifc, ISCSI_IF_CONN_FAILED, err);
	iscsi_if_conn_error(conn->ifc, err);
}

/* ----------------------------------------------------- sequence numbers */

/* Under sess->lock: wake the transmit work of every running connection with commands queued. */
static void kick_conns_locked(struct itcp_session *sess)
{
	struct itcp_conn *conn;

	list_for_each_entry(conn, &sess->conns, node)
		if (conn->running && !list_empty(&conn->cmdq))
			queue_work(itcp_wq, &conn->xmit_work);
}

/*
 * Under sess->lock: ExpCmdSN and MaxCmdSN from a PDU on any connection; the
 * window is the session's. Serial number arithmetic (RFC 1982): values older
 * than what the session has, which another connection may deliver late, are
 * ignored.
 */
static void update_cmdsn_cpu(struct itcp_session *sess, u32 exp, u32 max)
{
	/* RFC 7143 4.2.2.1: ignore both when MaxCmdSN < ExpCmdSN - 1. */
	if (iscsi_sna_lt(max, exp - 1))
		return;
	if (iscsi_sna_gt(exp, sess->exp_cmdsn))
		sess->exp_cmdsn = exp;
	if (iscsi_sna_gt(max, sess->max_cmdsn)) {
		sess->max_cmdsn = max;
		if (sess->window_closed) {
			sess->window_closed = false;
			kick_conns_locked(sess);
		}
	}
}

static void update_cmdsn(struct itcp_session *sess, __be32 exp_cmdsn, __be32 max_cmdsn)
{
	update_cmdsn_cpu(sess, be32_to_cpu(exp_cmdsn), be32_to_cpu(max_cmdsn));
}

/*
 * Under sess->lock: may the next command take a CmdSN and go (RFC 7143
 * 4.2.2.1)? If not, it waits on cmdq, started and timed by the block layer,
 * until a PDU from the target moves MaxCmdSN (update_cmdsn) or the SCSI
 * error handler aborts it (itcp_tmf: locally, as it never left).
 */
static bool cmd_window_open_locked(struct itcp_session *sess)
{
	if (iscsi_sna_lte(sess->cmdsn, sess->max_cmdsn))
		return true;
	sess->window_closed = true;
	return false;
}

static void update_statsn(struct itcp_conn *conn, __be32 stat_sn)
{
	u32 statsn = be32_to_cpu(stat_sn);

	if (iscsi_sna_gte(statsn, conn->exp_statsn))
		WRITE_ONCE(conn->exp_statsn, statsn + 1);
}

/* ---------------------------------------------------------------- tasks */

/*
 * Under sess->lock: the task leaves the table and its connection's count; a
 * connection being drained is woken when its last task goes.
 */
static void task_unlink_locked(struct itcp_session *sess, struct itcp_task *task)
{
	struct itcp_conn *conn = task->conn;
	u32 tag = task_tag(task);

	if (tag < sess->ntasks && sess->tasks[tag] == task)
		sess->tasks[tag] = NULL;
	if ((task->flags & TASK_ACTIVE) && conn) {
		conn->ntasks--;
		if (conn->draining && !conn->ntasks)
			wake_up_all(&sess->xmit_wait);
	}
	task->flags &= ~TASK_ACTIVE;
	list_del_init(&task->xmit_node);
}

/*
 * Remove a task from the table (under sess->lock). Returns the command to
 * complete with scsi_done() after unlocking, or NULL when the transmit work
 * is still sending from it (it completes it then).
 */
static struct scsi_cmnd *task_finish_locked(struct itcp_session *sess,
					    struct itcp_task *task, int result)
{
	struct scsi_cmnd *sc = task_sc(task);

	task_unlink_locked(sess, task);
	sc->result = result;
	trace_iscsi_tcp_cmd_done(sess->ifs, sc, task->itt, task->cmdsn);
	if (task->flags & TASK_XMIT) {
		task->flags |= TASK_DONE_PENDING;
		return NULL;
	}
	return sc;
}

/*
 * Under sess->lock: drop a task the SCSI error handler owns now (aborted or
 * reset): out of the table and the transmit queues, never completed here.
 */
static void task_forget_locked(struct itcp_session *sess, struct itcp_task *task)
{
	task_unlink_locked(sess, task);
	task->flags &= ~TASK_DONE_PENDING;
}

static struct itcp_task *task_lookup_locked(struct itcp_session *sess, u32 itt)
{
	u32 tag = itt & ITCP_ITT_TAG_MASK;
	struct itcp_task *task;

	if (itt & BIT(31) || tag >= sess->ntasks)
		return NULL;
	task = sess->tasks[tag];
	if (!task || task->itt != itt || !(task->flags & TASK_ACTIVE))
		return NULL;
	return task;
}

/*
 * The task a PDU from the target on conn names (under sess->lock), or NULL.
 * Only a command that has left (or is leaving) on that same connection can
 * be answered: a target that guesses the ITT of one still waiting for the
 * CmdSN window gets nothing, as the error handler may take such a task back
 * at any time (task_forget_locked() in itcp_tmf()) while the receive path
 * would go on copying into its buffer after dropping the lock; and a task's
 * PDUs come on the connection it is allegiant to, whose receive path alone
 * may touch its Data-In state.
 */
static struct itcp_task *rx_task_lookup_locked(struct itcp_session *sess,
					       struct itcp_conn *conn, u32 itt)
{
	struct itcp_task *task = task_lookup_locked(sess, itt);

	if (task && (task->conn != conn || !(task->flags & (TASK_CMD_SENT | TASK_XMIT))))
		return NULL;
	return task;
}

/* ------------------------------------------------------------- transmit */

/*
 * txdata_octets counts every byte that leaves on the socket (headers,
 * digests and padding included), as the in-kernel iscsi_tcp does.
 */
static int send_kvec(struct itcp_conn *conn, struct kvec *vec, int n, size_t len,
		     int flags)
{
	struct msghdr msg = { .msg_flags = flags | MSG_NOSIGNAL };
	int ret;

	while (len) {
		ret = kernel_sendmsg(conn->sock, &msg, vec, n, len);
		if (ret <= 0)
			return ret ? ret : -EPIPE;
		stat_add(conn, ISCSI_IF_STAT_TXDATA_OCTETS, ret);
		len -= ret;
		/* advance the vector */
		while (ret && n) {
			if ((size_t)ret >= vec->iov_len) {
				ret -= vec->iov_len;
				vec++;
				n--;
			} else {
				vec->iov_base = (u8 *)vec->iov_base + ret;
				vec->iov_len -= ret;
				ret = 0;
			}
		}
	}
	return 0;
}

/* A page to TCP without a copy; 6.5 replaced kernel_sendpage() by MSG_SPLICE_PAGES. */
static int sock_send_page(struct socket *sock, struct page *page, unsigned int off,
			  size_t len, int flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	struct msghdr msg = { .msg_flags = flags | MSG_SPLICE_PAGES | MSG_NOSIGNAL };
	struct bio_vec bv;

	bvec_set_page(&bv, page, len, off);
	iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, &bv, 1, len);
	return sock_sendmsg(sock, &msg);
#else
	return kernel_sendpage(sock, page, off, len, flags | MSG_NOSIGNAL);
#endif
}

/* A page TCP must not hold on to (slab, refcount 0): copied. */
static int sock_copy_page(struct socket *sock, struct page *page, unsigned int off,
			  size_t len, int flags)
{
	struct msghdr msg = { .msg_flags = flags | MSG_NOSIGNAL };
	u8 *vaddr = kmap_local_page(page);
	struct kvec v = { .iov_base = vaddr + off, .iov_len = len };
	int ret;

	ret = kernel_sendmsg(sock, &msg, &v, 1, len);
	kunmap_local(vaddr);
	return ret;
}

static int send_page(struct itcp_conn *conn, struct page *page, unsigned int off,
		     size_t len, int flags)
{
	int ret;

	while (len) {
		if (sendpage_ok(page))
			ret = sock_send_page(conn->sock, page, off, len, flags);
		else
			ret = sock_copy_page(conn->sock, page, off, len, flags);
		if (ret <= 0) {
			stat_add(conn, ISCSI_IF_STAT_TX_SENDPAGE_FAILURES, 1);
			return ret ? ret : -EPIPE;
		}
		stat_add(conn, ISCSI_IF_STAT_TXDATA_OCTETS, ret);
		off += ret;
		len -= ret;
	}
	return 0;
}

static int send_hdr(struct itcp_conn *conn, const void *hdr, size_t hlen, bool more)
{
	struct kvec vec[2];
	__le32 dgst;
	int n = 1;

	trace_iscsi_tcp_pdu_send(conn->ifc, hdr);
	vec[0].iov_base = (void *)hdr;
	vec[0].iov_len = hlen;
	if (conn->hdrdgst) {
		dgst = cpu_to_le32(digest_final(crc32c(~0, hdr, hlen)));
		vec[1].iov_base = &dgst;
		vec[1].iov_len = ITCP_DIGEST_SIZE;
		n = 2;
	}
	return send_kvec(conn, vec, n, hlen + (n == 2 ? ITCP_DIGEST_SIZE : 0),
			 more ? MSG_MORE : 0);
}

/*
 * Padding and data digest end a PDU. Its last piece goes without MSG_MORE
 * (none across PDUs): the target starts on one command while the next one
 * is being sent.
 */
static int send_pad_dgst(struct itcp_conn *conn, u32 dlen, u32 crc)
{
	static const u8 zero[ISCSI_PAD_LEN];
	struct kvec vec[2];
	u32 pad = pad_len(dlen);
	__le32 dgst;
	int n = 0;
	size_t len = 0;

	if (pad) {
		vec[n].iov_base = (void *)zero;
		vec[n].iov_len = pad;
		len += pad;
		n++;
		crc = crc32c(crc, zero, pad);
	}
	if (conn->datadgst) {
		dgst = cpu_to_le32(digest_final(crc));
		vec[n].iov_base = &dgst;
		vec[n].iov_len = ITCP_DIGEST_SIZE;
		len += ITCP_DIGEST_SIZE;
		n++;
	}
	return n ? send_kvec(conn, vec, n, len, 0) : 0;
}

/* Send len bytes of the command's buffer from offset, then padding/digest. */
static int send_sg_data(struct itcp_conn *conn, struct scsi_cmnd *sc, u32 offset,
			u32 len)
{
	struct scatterlist *sg;
	u32 crc = ~0, left = len;
	int i, err;

	for_each_sg(scsi_sglist(sc), sg, scsi_sg_count(sc), i) {
		u32 sg_off, chunk;

		if (!left)
			break;
		if (offset >= sg->length) {
			offset -= sg->length;
			continue;
		}
		sg_off = offset;
		offset = 0;
		while (left && sg_off < sg->length) {
			u32 abs = sg->offset + sg_off;
			struct page *page = nth_page(sg_page(sg), abs >> PAGE_SHIFT);
			u32 poff = abs & ~PAGE_MASK;

			chunk = min3(left, sg->length - sg_off, (u32)PAGE_SIZE - poff);
			if (conn->datadgst) {
				u8 *vaddr = kmap_local_page(page);

				crc = crc32c(crc, vaddr + poff, chunk);
				kunmap_local(vaddr);
			}
			err = send_page(conn, page, poff, chunk,
					left > chunk || conn->datadgst || pad_len(len) ?
					MSG_MORE : 0);
			if (err)
				return err;
			sg_off += chunk;
			left -= chunk;
		}
	}
	if (left)
		return -EINVAL;	/* shorter than promised: checked before, cannot happen */
	return send_pad_dgst(conn, len, crc);
}

static int send_mgmt(struct itcp_conn *conn, struct itcp_mgmt *m)
{
	bool tail = pad_len(m->dlen) || conn->datadgst;	/* padding or digest follow */
	struct kvec data = { .iov_base = m->buf + m->hlen, .iov_len = m->dlen };
	u32 crc;
	int err;

	err = send_hdr(conn, m->buf, m->hlen, m->dlen != 0);
	if (err || !m->dlen)
		return err;
	err = send_kvec(conn, &data, 1, m->dlen, tail ? MSG_MORE : 0);
	if (err)
		return err;
	crc = conn->datadgst ? crc32c(~0, m->buf + m->hlen, m->dlen) : 0;
	return send_pad_dgst(conn, m->dlen, crc);
}

static int send_cmd(struct itcp_conn *conn, struct itcp_task *task)
{
	u8 hbuf[ISCSI_HDR_LEN + ITCP_ECDB_AHS_MAX];
	size_t hlen = ISCSI_HDR_LEN + task->ahs_len;
	int err;

	task->hdr.exp_statsn = cpu_to_be32(READ_ONCE(conn->exp_statsn));
	memcpy(hbuf, &task->hdr, ISCSI_HDR_LEN);
	memcpy(hbuf + ISCSI_HDR_LEN, task->ahs, task->ahs_len);
	err = send_hdr(conn, hbuf, hlen, task->imm_len != 0);
	if (err)
		return err;
	stat_add(conn, ISCSI_IF_STAT_SCSICMD_PDUS, 1);
	if (task->imm_len)
		err = send_sg_data(conn, task_sc(task), 0, task->imm_len);
	return err;
}

/*
 * Pick the next Data-Out PDU of a task on the data queue (under sess->lock):
 * fills hdr, returns its offset/length, takes the task off the queue when
 * nothing is left.
 */
static bool next_dataout_locked(struct itcp_conn *conn, struct itcp_task *task,
				struct iscsi_data *hdr, u32 *offset, u32 *len)
{
	struct scsi_cmnd *sc = task_sc(task);
	u32 n, ttt, datasn;
	bool final;

	memset(hdr, 0, sizeof(*hdr));
	if (task->unsol_left) {
		n = min(task->unsol_left, conn->max_xmit_dlength);
		*offset = task->unsol_off;
		ttt = ISCSI_RESERVED_TAG;
		datasn = task->unsol_datasn++;
		task->unsol_off += n;
		task->unsol_left -= n;
		final = !task->unsol_left;
	} else if (task->r2t_count) {
		struct itcp_r2t *r = &task->r2t[task->r2t_head];

		n = min(r->left, conn->max_xmit_dlength);
		*offset = r->offset;
		ttt = r->ttt;
		datasn = r->datasn++;
		r->offset += n;
		r->left -= n;
		final = !r->left;
		if (final) {
			task->r2t_head = (task->r2t_head + 1) % ITCP_MAX_R2T;
			task->r2t_count--;
		}
	} else {
		list_del_init(&task->xmit_node);
		return false;
	}
	if (!task->unsol_left && !task->r2t_count)
		list_del_init(&task->xmit_node);

	hdr->opcode = ISCSI_OP_SCSI_DATA_OUT;
	if (final)
		hdr->flags = ISCSI_FLAG_CMD_FINAL;
	hton24(hdr->dlength, n);
	int_to_scsilun(sc->device->lun, &hdr->lun);
	hdr->itt = cpu_to_itt(task->itt);
	hdr->ttt = cpu_to_be32(ttt);
	hdr->datasn = cpu_to_be32(datasn);
	hdr->offset = cpu_to_be32(*offset);
	*len = n;
	return true;
}

/* Under sess->lock: done sending from a task; returns a command to complete. */
static struct scsi_cmnd *task_xmit_done_locked(struct itcp_conn *conn,
					       struct itcp_task *task)
{
	task->flags &= ~TASK_XMIT;
	conn->xmit_task = NULL;
	wake_up_all(&conn->sess->xmit_wait);
	if (task->flags & TASK_DONE_PENDING) {
		task->flags &= ~TASK_DONE_PENDING;
		return task_sc(task);
	}
	return NULL;
}

static void xmit_failed(struct itcp_conn *conn, int err)
{
	WRITE_ONCE(conn->xmit_dead, true);
	trace_iscsi_tcp_conn_state(conn->ifc, ISCSI_IF_CONN_FAILED, ISCSI_IF_ERR_XMIT_FAILED);
	if (err != -EPIPE && err != -ECONNRESET)
		pr_info("connection%u:%u: send failed (%d)\n",
			conn->ifc->session->sid, conn->ifc->cid, err);
	iscsi_if_conn_error(conn->ifc, ISCSI_IF_ERR_XMIT_FAILED);
}

/* The counter of a PDU from iscsid or the error handler. */
static int mgmt_stat(u8 op)
{
	switch (op) {
	case ISCSI_OP_NOOP_OUT:
		return ISCSI_IF_STAT_NOPTX_PDUS;
	case ISCSI_OP_SCSI_TMFUNC:
		return ISCSI_IF_STAT_TMFCMD_PDUS;
	case ISCSI_OP_TEXT:
		return ISCSI_IF_STAT_TEXT_PDUS;
	case ISCSI_OP_LOGOUT:
		return ISCSI_IF_STAT_LOGOUT_PDUS;
	case ISCSI_OP_SNACK:
		return ISCSI_IF_STAT_SNACK_PDUS;
	default:
		return ISCSI_IF_STAT_UNSPEC;
	}
}

/*
 * The transmit work sends, in this order: iscsid's PDUs and the TMF, SCSI
 * Commands (with immediate data), Data-Out (unsolicited, then for R2Ts).
 * xmit_mgmt(), xmit_cmd() and xmit_dataout() are called with sess->lock
 * held and a PDU on their queue; they take it off, drop the lock, send it
 * and return 0 or the error of the send.
 */

static int xmit_mgmt(struct itcp_conn *conn)
	__releases(&conn->sess->lock)
{
	struct itcp_mgmt *m = list_first_entry(&conn->mgmtq, struct itcp_mgmt, node);
	struct iscsi_hdr *hdr = (struct iscsi_hdr *)m->buf;
	u8 op = hdr->opcode & ISCSI_OPCODE_MASK;
	int stat = mgmt_stat(op);
	u8 tmf_hdr[ISCSI_HDR_LEN] __aligned(__alignof__(struct iscsi_hdr));
	struct itcp_mgmt tmf_copy;
	int err;

	list_del_init(&m->node);
	if (!m->embedded)
		conn->mgmt_queued--;
	/* ExpStatSN as late as possible */
	hdr->exp_statsn = cpu_to_be32(READ_ONCE(conn->exp_statsn));
	if (m->embedded) {
		/*
		 * The session's TMF slot is rewritten by the next TMF as soon as
		 * the waiter of this one gives up, maybe while the socket still
		 * blocks this send: send a copy taken under the lock.
		 */
		memcpy(tmf_hdr, m->buf, ISCSI_HDR_LEN);
		tmf_copy = (struct itcp_mgmt){ .embedded = true, .hlen = ISCSI_HDR_LEN,
					       .buf = tmf_hdr };
		m = &tmf_copy;
	}
	spin_unlock_bh(&conn->sess->lock);

	if (op == ISCSI_OP_LOGOUT)
		WRITE_ONCE(conn->logout_sent, true);
	err = send_mgmt(conn, m);
	if (!err && stat != ISCSI_IF_STAT_UNSPEC)
		stat_add(conn, stat, 1);
	if (!m->embedded)
		kfree(m);
	return err;
}

static int xmit_cmd(struct itcp_conn *conn)
	__releases(&conn->sess->lock)
{
	struct itcp_session *sess = conn->sess;
	struct itcp_task *task = list_first_entry(&conn->cmdq, struct itcp_task, xmit_node);
	struct scsi_cmnd *done;
	int err;

	list_del_init(&task->xmit_node);
	task->flags |= TASK_XMIT;
	task->cmdsn = sess->cmdsn++;
	task->hdr.cmdsn = cpu_to_be32(task->cmdsn);
	conn->xmit_task = task;
	spin_unlock_bh(&sess->lock);

	err = send_cmd(conn, task);

	spin_lock_bh(&sess->lock);
	task->flags |= TASK_CMD_SENT;
	/* Unsolicited data, or R2Ts that came while the command was being sent */
	if ((task->unsol_left || task->r2t_count) && (task->flags & TASK_ACTIVE) &&
	    list_empty(&task->xmit_node))
		list_add_tail(&task->xmit_node, &conn->dataq);
	done = task_xmit_done_locked(conn, task);
	spin_unlock_bh(&sess->lock);
	if (done)
		scsi_done(done);
	return err;
}

static int xmit_dataout(struct itcp_conn *conn)
	__releases(&conn->sess->lock)
{
	struct itcp_session *sess = conn->sess;
	struct itcp_task *task = list_first_entry(&conn->dataq, struct itcp_task, xmit_node);
	struct scsi_cmnd *done;
	struct iscsi_data hdr;
	u32 offset, len;
	int err;

	if (!next_dataout_locked(conn, task, &hdr, &offset, &len)) {
		spin_unlock_bh(&sess->lock);
		return 0;	/* nothing left to send: off the queue now */
	}
	hdr.exp_statsn = cpu_to_be32(READ_ONCE(conn->exp_statsn));
	task->flags |= TASK_XMIT;
	conn->xmit_task = task;
	spin_unlock_bh(&sess->lock);

	err = send_hdr(conn, &hdr, sizeof(hdr), true);
	if (!err)
		err = send_sg_data(conn, task_sc(task), offset, len);
	if (!err)
		stat_add(conn, ISCSI_IF_STAT_DATAOUT_PDUS, 1);

	spin_lock_bh(&sess->lock);
	done = task_xmit_done_locked(conn, task);
	spin_unlock_bh(&sess->lock);
	if (done)
		scsi_done(done);
	return err;
}

/* Up to ITCP_XMIT_BUDGET PDUs a run; requeued when there may be more. */
static void xmit_work_fn(struct work_struct *work)
{
	struct itcp_conn *conn = container_of(work, struct itcp_conn, xmit_work);
	struct itcp_session *sess = conn->sess;
	unsigned int noio = memalloc_noio_save();
	int budget = ITCP_XMIT_BUDGET;
	int err;

	while (budget-- > 0 && !READ_ONCE(conn->xmit_dead)) {
		spin_lock_bh(&sess->lock);
		if (conn->stopping) {
			spin_unlock_bh(&sess->lock);
			break;
		}
		if (!list_empty(&conn->mgmtq)) {
			err = xmit_mgmt(conn);
		} else if (!list_empty(&conn->cmdq) && cmd_window_open_locked(sess)) {
			err = xmit_cmd(conn);
		} else if (!list_empty(&conn->dataq)) {
			err = xmit_dataout(conn);
		} else {
			spin_unlock_bh(&sess->lock);
			break;	/* nothing to send */
		}
		if (err) {
			xmit_failed(conn, err);
			break;
		}
	}
	if (budget < 0 && !READ_ONCE(conn->xmit_dead))
		queue_work(itcp_wq, &conn->xmit_work);
	memalloc_noio_restore(noio);
}

/* ---------------------------------------------------------- queuecommand */

static void task_build(struct itcp_session *sess, struct itcp_conn *conn,
		       struct itcp_task *task, struct scsi_cmnd *sc, u32 itt)
{
	struct iscsi_scsi_req *hdr = &task->hdr;
	u32 len = scsi_bufflen(sc);

	memset(hdr, 0, sizeof(*hdr));
	INIT_LIST_HEAD(&task->xmit_node);
	task->conn = conn;
	task->flags = TASK_ACTIVE;
	task->itt = itt;
	task->cmdsn = 0;		/* given when it is sent (xmit_cmd) */
	task->imm_len = 0;
	task->unsol_left = 0;
	task->unsol_datasn = 0;
	task->r2t_head = 0;
	task->r2t_count = 0;
	task->exp_r2tsn = 0;
	task->exp_datasn = 0;
	task->datain_got = 0;
	task->r2t_next = 0;
	task->rx_sg = scsi_sglist(sc);
	task->rx_sg_off = 0;
	task->rx_pos = 0;
	task->ahs_len = 0;

	hdr->opcode = ISCSI_OP_SCSI_CMD;
	hdr->flags = ISCSI_ATTR_SIMPLE;
	int_to_scsilun(sc->device->lun, &hdr->lun);
	hdr->itt = cpu_to_itt(itt);
	hdr->data_length = cpu_to_be32(len);
	memcpy(hdr->cdb, sc->cmnd, min_t(u32, sc->cmd_len, ISCSI_CDB_SIZE));
	if (sc->cmd_len > ISCSI_CDB_SIZE) {
		struct iscsi_ecdb_ahdr *ahs = (struct iscsi_ecdb_ahdr *)task->ahs;
		u32 extra = sc->cmd_len - ISCSI_CDB_SIZE;

		memset(task->ahs, 0, sizeof(task->ahs));
		ahs->ahslength = cpu_to_be16(extra + 1);
		ahs->ahstype = ISCSI_AHSTYPE_CDB;
		memcpy(ahs->ecdb, sc->cmnd + ISCSI_CDB_SIZE, extra);
		task->ahs_len = ALIGN(3 + 1 + extra, 4);
		hdr->hlength = task->ahs_len / 4;
	}

	if (sc->sc_data_direction == DMA_TO_DEVICE && len) {
		u32 first = min(len, sess->first_burst);

		hdr->flags |= ISCSI_FLAG_CMD_WRITE;
		if (sess->imm_data)
			task->imm_len = min(first, conn->max_xmit_dlength);
		if (!sess->initial_r2t) {
			task->unsol_off = task->imm_len;
			task->unsol_left = first - task->imm_len;
		}
		hton24(hdr->dlength, task->imm_len);
		task->r2t_next = sess->initial_r2t ? task->imm_len : first;
	} else if (sc->sc_data_direction == DMA_FROM_DEVICE && len) {
		hdr->flags |= ISCSI_FLAG_CMD_READ;
	}
	if (!task->unsol_left)
		hdr->flags |= ISCSI_FLAG_CMD_FINAL;
}

/**
 * pick_conn_locked() - the connection a new command goes to
 * @sess: the session
 *
 * The running connection (not being drained, transmit path alive) with the
 * fewest commands outstanding; of those, the one chosen longest ago. Fewest
 * outstanding follows what each connection really achieves: one whose
 * target side or path is slower keeps more commands and gets fewer new
 * ones, and a command never waits behind a busy connection while another
 * one idles. A choice by submitting CPU would leave connections idle when
 * one CPU submits everything (a single fio job) and cannot see a slow path.
 * The tie-break spreads even a queue depth of one over every connection.
 *
 * Context: sess->lock held.
 * Return: the connection, or NULL when none can take commands.
 */
static struct itcp_conn *pick_conn_locked(struct itcp_session *sess)
{
	struct itcp_conn *conn, *best = NULL;

	list_for_each_entry(conn, &sess->conns, node) {
		if (!conn->running || conn->draining || READ_ONCE(conn->xmit_dead))
			continue;
		if (!best || conn->ntasks < best->ntasks ||
		    (conn->ntasks == best->ntasks &&
		     (s32)(conn->picked - best->picked) < 0))
			best = conn;
	}
	if (best)
		best->picked = ++sess->pick_seq;
	return best;
}

static int itcp_queuecommand(struct Scsi_Host *shost, struct scsi_cmnd *sc)
{
	struct iscsi_if_session *ifs = iscsi_if_shost_session(shost);
	struct itcp_session *sess = ifs->dd_data;
	struct itcp_task *task = scsi_cmd_priv(sc);
	u32 tag = task_tag(task);
	struct itcp_conn *conn;
	u32 itt;

	spin_lock_bh(&sess->lock);
	conn = pick_conn_locked(sess);
	if (!conn) {
		int state = iscsi_if_session_state(ifs);

		spin_unlock_bh(&sess->lock);
		if (state == ISCSI_IF_SESSION_FREE) {
			sc->result = DID_TRANSPORT_FAILFAST << 16;
			scsi_done(sc);
			return 0;
		}
		/* Recovery: the queue is (about to be) blocked. */
		return SCSI_MLQUEUE_HOST_BUSY;
	}
	if (WARN_ON_ONCE(tag >= sess->ntasks || sess->tasks[tag])) {
		spin_unlock_bh(&sess->lock);
		return SCSI_MLQUEUE_HOST_BUSY;
	}
	sess->gen++;
	itt = tag | ((u32)(sess->gen & ITCP_ITT_GEN_MASK) << ITCP_ITT_TAG_BITS);
	task_build(sess, conn, task, sc, itt);
	conn->ntasks++;
	sess->tasks[tag] = task;
	list_add_tail(&task->xmit_node, &conn->cmdq);
	/*
	 * A batch from the block layer wakes the transmit work once, at its
	 * last command (or in commit_rqs), on every connection it went to.
	 * The error handler's commands come alone.
	 */
	if (sc->submitter != SUBMITTED_BY_BLOCK_LAYER)
		queue_work(itcp_wq, &conn->xmit_work);
	else if (sc->flags & SCMD_LAST)
		kick_conns_locked(sess);
	spin_unlock_bh(&sess->lock);
	return 0;
}

static void itcp_commit_rqs(struct Scsi_Host *shost, u16 hwq)
{
	struct itcp_session *sess = shost_sess(shost);

	spin_lock_bh(&sess->lock);
	kick_conns_locked(sess);
	spin_unlock_bh(&sess->lock);
}

/* -------------------------------------------------------------- receive */

/* Copy from the skb into the task's scatterlist at rx_offset. */
static int rx_copy_to_task(struct itcp_conn *conn, struct itcp_task *task,
			   struct sk_buff *skb, unsigned int off, u32 len)
{
	struct scatterlist *sg = task->rx_sg;

	/* Re-walk the list only when the data does not continue the cursor. */
	if (conn->rx_offset != task->rx_pos || !sg) {
		u32 skip = conn->rx_offset;
		int i;

		for_each_sg(scsi_sglist(task_sc(task)), sg, scsi_sg_count(task_sc(task)), i) {
			if (skip < sg->length)
				break;
			skip -= sg->length;
		}
		if (!sg)
			return -EINVAL;
		task->rx_sg = sg;
		task->rx_sg_off = skip;
		task->rx_pos = conn->rx_offset;
	}
	while (len) {
		u32 abs, poff, chunk;
		struct page *page;
		u8 *vaddr;

		if (!sg)
			return -EINVAL;
		if (task->rx_sg_off >= sg->length) {
			sg = sg_next(sg);
			task->rx_sg = sg;
			task->rx_sg_off = 0;
			continue;
		}
		abs = sg->offset + task->rx_sg_off;
		page = nth_page(sg_page(sg), abs >> PAGE_SHIFT);
		poff = abs & ~PAGE_MASK;
		chunk = min3(len, sg->length - task->rx_sg_off, (u32)PAGE_SIZE - poff);
		vaddr = kmap_local_page(page);
		if (skb_copy_bits(skb, off, vaddr + poff, chunk)) {
			kunmap_local(vaddr);
			return -EFAULT;
		}
		if (conn->datadgst)
			conn->rx_crc = crc32c(conn->rx_crc, vaddr + poff, chunk);
		kunmap_local(vaddr);
		off += chunk;
		len -= chunk;
		task->rx_sg_off += chunk;
		task->rx_pos += chunk;
		conn->rx_offset += chunk;
	}
	return 0;
}

/* Set up where the data segment goes; 0 or an iscsi_if_err. */
static int rx_datain_hdr(struct itcp_conn *conn, const struct iscsi_data_rsp *rhdr)
{
	struct itcp_session *sess = conn->sess;
	u32 itt = itt_to_cpu(rhdr->itt);
	u32 datasn = be32_to_cpu(rhdr->datasn);
	u32 offset = be32_to_cpu(rhdr->offset);
	struct itcp_task *task;
	struct scsi_cmnd *sc;

	if (rhdr->flags & ISCSI_FLAG_DATA_STATUS)
		update_statsn(conn, rhdr->statsn);
	stat_add(conn, ISCSI_IF_STAT_DATAIN_PDUS, 1);
	spin_lock_bh(&sess->lock);
	update_cmdsn(sess, rhdr->exp_cmdsn, rhdr->max_cmdsn);
	task = rx_task_lookup_locked(sess, conn, itt);
	spin_unlock_bh(&sess->lock);
	if (!task) {
		/* A task aborted or reset meanwhile: drop the data. */
		pr_debug("Data-In for unknown ITT 0x%x dropped\n", itt);
		conn->rx_discard = true;
		return 0;
	}
	sc = task_sc(task);
	if (conn->rx_dlen && sc->sc_data_direction != DMA_FROM_DEVICE) {
		pr_warn_ratelimited("Data-In for a command that reads nothing\n");
		return ISCSI_IF_ERR_PROTO;
	}
	if (datasn != task->exp_datasn) {
		pr_warn_ratelimited("Data-In DataSN %u, expected %u\n", datasn,
				    task->exp_datasn);
		return ISCSI_IF_ERR_PROTO;
	}
	if ((u64)offset + conn->rx_dlen > scsi_bufflen(sc)) {
		pr_warn_ratelimited("Data-In offset %u + %u beyond the buffer (%u)\n",
				    offset, conn->rx_dlen, scsi_bufflen(sc));
		return ISCSI_IF_ERR_PROTO;
	}
	/* DataPDUInOrder=Yes (RFC 7143 13.18): each PDU continues the last one. */
	if (sess->pdu_inorder && offset != task->datain_got) {
		pr_warn_ratelimited("Data-In offset %u, expected %u (a gap or an overlap)\n",
				    offset, task->datain_got);
		return ISCSI_IF_ERR_PROTO;
	}
	task->datain_got += conn->rx_dlen;
	task->exp_datasn++;
	conn->rx_task = task;
	conn->rx_offset = offset;
	return 0;
}

static int rx_r2t(struct itcp_conn *conn, const struct iscsi_r2t_rsp *rhdr)
{
	struct itcp_session *sess = conn->sess;
	u32 itt = itt_to_cpu(rhdr->itt);
	u32 ttt = be32_to_cpu(rhdr->ttt);
	u32 r2tsn = be32_to_cpu(rhdr->r2tsn);
	u32 offset = be32_to_cpu(rhdr->data_offset);
	u32 len = be32_to_cpu(rhdr->data_length);
	struct itcp_task *task;
	struct scsi_cmnd *sc;
	struct itcp_r2t *r;
	int err = 0;

	stat_add(conn, ISCSI_IF_STAT_R2T_PDUS, 1);
	if (conn->rx_dlen)
		return ISCSI_IF_ERR_PROTO;
	spin_lock_bh(&sess->lock);
	update_cmdsn(sess, rhdr->exp_cmdsn, rhdr->max_cmdsn);
	task = rx_task_lookup_locked(sess, conn, itt);
	if (!task)
		goto out;	/* completed or aborted meanwhile */
	sc = task_sc(task);
	if (sc->sc_data_direction != DMA_TO_DEVICE || !len ||
	    (u64)offset + len > scsi_bufflen(sc) || len > sess->max_burst ||
	    ttt == ISCSI_RESERVED_TAG) {
		pr_warn_ratelimited("R2T offset %u length %u TTT %#x for a %s of %u bytes (MaxBurstLength %u)\n",
				    offset, len, ttt,
				    sc->sc_data_direction == DMA_TO_DEVICE ? "write" : "non-write",
				    scsi_bufflen(sc), sess->max_burst);
		err = ISCSI_IF_ERR_BAD_R2T;
		goto out;
	}
	if (r2tsn != task->exp_r2tsn) {
		pr_warn_ratelimited("R2TSN %u, expected %u\n", r2tsn, task->exp_r2tsn);
		err = ISCSI_IF_ERR_PROTO;
		goto out;
	}
	/* DataSequenceInOrder=Yes (RFC 7143 13.19): each R2T continues the last one. */
	if (sess->dataseq_inorder && offset != task->r2t_next) {
		pr_warn_ratelimited("R2T offset %u, expected %u (a gap or an overlap)\n",
				    offset, task->r2t_next);
		err = ISCSI_IF_ERR_BAD_R2T;
		goto out;
	}
	if (task->r2t_count >= min_t(u32, sess->max_r2t, ITCP_MAX_R2T)) {
		pr_warn_ratelimited("more R2Ts than MaxOutstandingR2T=%u\n", sess->max_r2t);
		err = ISCSI_IF_ERR_BAD_R2T;
		goto out;
	}
	task->exp_r2tsn++;
	task->r2t_next = max(task->r2t_next, offset + len);
	r = &task->r2t[(task->r2t_head + task->r2t_count) % ITCP_MAX_R2T];
	r->ttt = ttt;
	r->offset = offset;
	r->left = len;
	r->datasn = 0;
	task->r2t_count++;
	/* The command PDU itself may still wait: it re-queues the data then. */
	if (list_empty(&task->xmit_node) && (task->flags & TASK_CMD_SENT))
		list_add_tail(&task->xmit_node, &conn->dataq);
	spin_unlock_bh(&sess->lock);
	queue_work(itcp_wq, &conn->xmit_work);
	return 0;
out:
	spin_unlock_bh(&sess->lock);
	return err;
}

/* The BHS (+AHS, digest checked) is complete: decide where the data goes. */
static int rx_hdr_done(struct itcp_conn *conn)
{
	struct itcp_session *sess = conn->sess;
	const struct iscsi_hdr *hdr = rx_pdu_hdr(conn);
	/* StatSN, ExpCmdSN and MaxCmdSN sit where a NOP-In has them in every target PDU. */
	const struct iscsi_nopin *rsp = (const struct iscsi_nopin *)hdr;
	u8 op = hdr->opcode & ISCSI_OPCODE_MASK;

	trace_iscsi_tcp_pdu_recv(conn->ifc, hdr);
	conn->rx_task = NULL;
	conn->rx_discard = false;
	conn->rx_crc = ~0;
	if (conn->rx_dlen > conn->max_recv_dlength) {
		pr_warn_ratelimited("data segment %u > MaxRecvDataSegmentLength %u\n",
				    conn->rx_dlen, conn->max_recv_dlength);
		return ISCSI_IF_ERR_PROTO;
	}
	/*
	 * ExpCmdSN/MaxCmdSN are taken in the same hold of sess->lock as the
	 * task they come with (Data-In, R2T here; a SCSI Response when it is
	 * complete, rx_scsi_rsp()): one lock round trip a PDU, not two.
	 */
	switch (op) {
	case ISCSI_OP_SCSI_DATA_IN:
		return rx_datain_hdr(conn, (const struct iscsi_data_rsp *)hdr);
	case ISCSI_OP_R2T:
		return rx_r2t(conn, (const struct iscsi_r2t_rsp *)hdr);
	case ISCSI_OP_SCSI_CMD_RSP:
		update_statsn(conn, rsp->statsn);
		return 0;
	default:
		break;
	}
	spin_lock_bh(&sess->lock);
	update_cmdsn(sess, rsp->exp_cmdsn, rsp->max_cmdsn);
	spin_unlock_bh(&sess->lock);

	switch (op) {
	case ISCSI_OP_NOOP_IN:
		/* A ping from the target (ITT reserved) does not advance StatSN. */
		if (rsp->itt != RESERVED_ITT)
			update_statsn(conn, rsp->statsn);
		return 0;
	case ISCSI_OP_SCSI_TMFUNC_RSP:
	case ISCSI_OP_TEXT_RSP:
	case ISCSI_OP_LOGOUT_RSP:
	case ISCSI_OP_ASYNC_EVENT:
	case ISCSI_OP_REJECT:
		update_statsn(conn, rsp->statsn);
		return 0;
	default:
		pr_warn_ratelimited("unexpected opcode 0x%02x from the target\n", op);
		return ISCSI_IF_ERR_PROTO;
	}
}

/*
 * REPORT LUNS data the SCSI midlayer cannot take. Its LUN scan
 * (scsi_report_lun_scan() in Linux 6.1) computes LUN LIST LENGTH + 8 in
 * 32 bits and allocates a buffer of that size for a second try: a length of
 * 0xfffffff8 or more allocates nothing, and the scan dereferences it. Such
 * an answer fails; the midlayer then scans LUN by LUN instead.
 */
static bool report_luns_sane(struct scsi_cmnd *sc)
{
	__be32 list_len;

	if (sc->cmnd[0] != REPORT_LUNS || scsi_bufflen(sc) < sizeof(list_len))
		return true;
	if (sg_pcopy_to_buffer(scsi_sglist(sc), scsi_sg_count(sc), &list_len,
			       sizeof(list_len), 0) != sizeof(list_len))
		return true;
	return be32_to_cpu(list_len) <= U32_MAX - 2 * sizeof(struct scsi_lun);
}

/**
 * task_status_result() - the result of a command whose status arrived
 * @sess: its session
 * @task: the command's task
 * @status: the SCSI status byte
 * @underflow: the status reports a residual underflow of @residual bytes
 * @residual: the residual count
 *
 * A good status must account for the data: the buffer less the residual
 * is what moved, and it must all have been received (a read) or asked for
 * (a write, when R2Ts come in order). A target that skips a range and
 * reports success would otherwise hand the reader whatever the buffer held
 * before. Such a command fails with DID_ERROR (the midlayer retries it);
 * an impossible residual, or REPORT LUNS data the midlayer would choke on
 * (report_luns_sane()), fails it with DID_BAD_TARGET.
 *
 * Context: any; the task is still in the table.
 * Return: the value for scsi_cmnd->result.
 */
static int task_status_result(struct itcp_session *sess, struct itcp_task *task,
			      u8 status, bool underflow, u32 residual)
{
	struct scsi_cmnd *sc = task_sc(task);
	u32 len = scsi_bufflen(sc);
	u32 want, moved;

	if (underflow) {
		if (residual > len)
			return (DID_BAD_TARGET << 16) | status;
		scsi_set_resid(sc, residual);
	}
	if (status != SAM_STAT_GOOD && status != SAM_STAT_CONDITION_MET)
		return (DID_OK << 16) | status;
	want = underflow ? len - residual : len;
	if (sc->sc_data_direction == DMA_FROM_DEVICE)
		moved = task->datain_got;
	else if (sc->sc_data_direction == DMA_TO_DEVICE && sess->dataseq_inorder)
		moved = task->r2t_next;
	else
		return (DID_OK << 16) | status;
	if (moved >= want) {
		if (report_luns_sane(sc))
			return (DID_OK << 16) | status;
		pr_warn_ratelimited("REPORT LUNS: LUN LIST LENGTH beyond 4 GiB\n");
		return DID_BAD_TARGET << 16;
	}
	pr_warn_ratelimited("%s of %u bytes: good status after %u of %u\n",
			    sc->sc_data_direction == DMA_FROM_DEVICE ? "read" : "write",
			    len, moved, want);
	return DID_ERROR << 16;
}

static void rx_scsi_rsp(struct itcp_conn *conn)
{
	struct itcp_session *sess = conn->sess;
	const struct iscsi_scsi_rsp *rhdr = (const struct iscsi_scsi_rsp *)rx_pdu_hdr(conn);
	u32 itt = itt_to_cpu(rhdr->itt);
	u8 status = rhdr->cmd_status;
	u32 residual = be32_to_cpu(rhdr->residual_count);
	struct itcp_task *task;
	struct scsi_cmnd *sc, *done;
	int result;

	stat_add(conn, ISCSI_IF_STAT_SCSIRSP_PDUS, 1);
	spin_lock_bh(&sess->lock);
	update_cmdsn(sess, rhdr->exp_cmdsn, rhdr->max_cmdsn);
	task = rx_task_lookup_locked(sess, conn, itt);
	if (!task) {
		spin_unlock_bh(&sess->lock);
		pr_debug("SCSI Response for unknown ITT 0x%x dropped\n", itt);
		return;
	}
	sc = task_sc(task);
	if (rhdr->response != ISCSI_STATUS_CMD_COMPLETED) {
		result = DID_ERROR << 16;
	} else {
		if (status == SAM_STAT_CHECK_CONDITION && conn->rx_dlen >= 2) {
			u32 slen = get_unaligned_be16(conn->rx_buf);

			if (slen + 2 > conn->rx_dlen) {
				spin_unlock_bh(&sess->lock);
				pr_warn_ratelimited("SenseLength %u in a %u-byte segment\n",
						    slen, conn->rx_dlen);
				conn_fail(conn, ISCSI_IF_ERR_PROTO);
				return;
			}
			memset(sc->sense_buffer, 0, SCSI_SENSE_BUFFERSIZE);
			memcpy(sc->sense_buffer, conn->rx_buf + 2,
			       min_t(u32, slen, SCSI_SENSE_BUFFERSIZE));
		}
		result = task_status_result(sess, task, status,
					    rhdr->flags & ISCSI_FLAG_CMD_UNDERFLOW, residual);
	}
	done = task_finish_locked(sess, task, result);
	spin_unlock_bh(&sess->lock);
	if (done)
		scsi_done(done);
}

/* Data-In with the S bit: status in the last Data-In PDU. */
static void rx_datain_status(struct itcp_conn *conn, struct itcp_task *task)
{
	struct itcp_session *sess = conn->sess;
	const struct iscsi_data_rsp *rhdr = (const struct iscsi_data_rsp *)rx_pdu_hdr(conn);
	struct scsi_cmnd *done;
	int result;

	spin_lock_bh(&sess->lock);
	if (!(task->flags & TASK_ACTIVE)) {
		spin_unlock_bh(&sess->lock);
		return;
	}
	result = task_status_result(sess, task, rhdr->cmd_status,
				    rhdr->flags & ISCSI_FLAG_DATA_UNDERFLOW,
				    be32_to_cpu(rhdr->residual_count));
	done = task_finish_locked(sess, task, result);
	spin_unlock_bh(&sess->lock);
	if (done)
		scsi_done(done);
}

static void rx_tmf_rsp(struct itcp_conn *conn)
{
	struct itcp_session *sess = conn->sess;
	const struct iscsi_tm_rsp *rhdr = (const struct iscsi_tm_rsp *)rx_pdu_hdr(conn);
	u32 itt = itt_to_cpu(rhdr->itt);
	u8 response = rhdr->response;
	u32 i;

	stat_add(conn, ISCSI_IF_STAT_TMFRSP_PDUS, 1);
	spin_lock_bh(&sess->lock);
	if (!sess->tmf_pending || itt != sess->tmf_itt || sess->tmf_conn != conn) {
		spin_unlock_bh(&sess->lock);
		return;
	}
	if (response == ISCSI_TMF_RSP_COMPLETE ||
	    (response == ISCSI_TMF_RSP_NO_TASK &&
	     sess->tmf_func == ISCSI_TM_FUNC_ABORT_TASK)) {
		/*
		 * The target is done with these tasks: forget them. The SCSI
		 * error handler owns their commands (no scsi_done here).
		 */
		for (i = 0; i < sess->ntasks; i++) {
			struct itcp_task *t = sess->tasks[i];

			if (!t)
				continue;
			if (sess->tmf_func == ISCSI_TM_FUNC_ABORT_TASK && t != sess->tmf_ref)
				continue;
			if (sess->tmf_func == ISCSI_TM_FUNC_LOGICAL_UNIT_RESET &&
			    task_sc(t)->device->lun != sess->tmf_lun)
				continue;
			task_forget_locked(sess, t);
		}
	}
	sess->tmf_response = response;
	sess->tmf_answered = true;
	sess->tmf_pending = false;
	complete(&sess->tmf_done);
	spin_unlock_bh(&sess->lock);
}

static void rx_reject(struct itcp_conn *conn)
{
	struct itcp_session *sess = conn->sess;
	/* The data segment holds the rejected PDU's header (rx_buf: kvmalloc, aligned). */
	const struct iscsi_hdr *rejected = (const struct iscsi_hdr *)conn->rx_buf;
	struct itcp_task *task;
	struct scsi_cmnd *done = NULL;

	stat_add(conn, ISCSI_IF_STAT_REJECT_PDUS, 1);
	if (conn->rx_dlen < ISCSI_HDR_LEN)
		return;
	/* A rejected SCSI command will never complete at the target. */
	if ((rejected->opcode & ISCSI_OPCODE_MASK) != ISCSI_OP_SCSI_CMD)
		return;
	spin_lock_bh(&sess->lock);
	task = rx_task_lookup_locked(sess, conn, itt_to_cpu(rejected->itt));
	if (task)
		done = task_finish_locked(sess, task, DID_ERROR << 16);
	spin_unlock_bh(&sess->lock);
	if (done)
		scsi_done(done);
}

/* Hand a PDU the data path does not handle to iscsid. */
static void rx_to_iscsid(struct itcp_conn *conn, size_t hlen, const void *data, size_t dlen)
{
	int err = iscsi_if_recv_pdu(conn->ifc, conn->rx_hdr, hlen, data, dlen);

	if (err)
		pr_warn_ratelimited("connection%u:%u: PDU opcode 0x%02x not passed to iscsid (%d)\n",
				    conn->ifc->session->sid, conn->ifc->cid,
				    rx_pdu_hdr(conn)->opcode & ISCSI_OPCODE_MASK, err);
}

/* The whole PDU is in: act on it. */
static void rx_pdu_done(struct itcp_conn *conn)
{
	const struct iscsi_hdr *hdr = rx_pdu_hdr(conn);
	u8 op = hdr->opcode & ISCSI_OPCODE_MASK;
	size_t hlen = ISCSI_HDR_LEN + conn->rx_ahslen;

	switch (op) {
	case ISCSI_OP_SCSI_DATA_IN:
		/* Status in the last Data-In counts as a response, as in libiscsi. */
		if (conn->rx_task && (hdr->flags & ISCSI_FLAG_DATA_STATUS)) {
			stat_add(conn, ISCSI_IF_STAT_SCSIRSP_PDUS, 1);
			rx_datain_status(conn, conn->rx_task);
		}
		break;
	case ISCSI_OP_SCSI_CMD_RSP:
		rx_scsi_rsp(conn);
		break;
	case ISCSI_OP_R2T:
		break;
	case ISCSI_OP_SCSI_TMFUNC_RSP:
		rx_tmf_rsp(conn);
		rx_to_iscsid(conn, hlen, NULL, 0);
		break;
	case ISCSI_OP_REJECT:
		rx_reject(conn);
		rx_to_iscsid(conn, hlen, conn->rx_buf, conn->rx_dlen);
		break;
	case ISCSI_OP_NOOP_IN:
		stat_add(conn, ISCSI_IF_STAT_NOPRX_PDUS, 1);
		rx_to_iscsid(conn, hlen, conn->rx_buf, conn->rx_dlen);
		break;
	case ISCSI_OP_TEXT_RSP:
		stat_add(conn, ISCSI_IF_STAT_TEXTRSP_PDUS, 1);
		rx_to_iscsid(conn, hlen, conn->rx_buf, conn->rx_dlen);
		break;
	case ISCSI_OP_LOGOUT_RSP:
		stat_add(conn, ISCSI_IF_STAT_LOGOUTRSP_PDUS, 1);
		/* Only the answer to our Logout makes the target's close expected. */
		if (READ_ONCE(conn->logout_sent))
			conn->logout_rsp_seen = true;
		else
			pr_warn_ratelimited("connection%u:%u: Logout Response to no Logout\n",
					    conn->ifc->session->sid, conn->ifc->cid);
		rx_to_iscsid(conn, hlen, conn->rx_buf, conn->rx_dlen);
		break;
	case ISCSI_OP_ASYNC_EVENT:
		stat_add(conn, ISCSI_IF_STAT_ASYNC_PDUS, 1);
		rx_to_iscsid(conn, hlen, conn->rx_buf, conn->rx_dlen);
		break;
	}
	conn->rx_task = NULL;
}

/*
 * The receive state machine: one state per part of a PDU as RFC 7143 11.2
 * lays it out (BHS, AHS, HeaderDigest, DataSegment, padding, DataDigest).
 * Each state takes what it needs from the skb, returns the bytes it used
 * (or -EFAULT) and moves to the next part when its own is complete.
 */

static void rx_set_state(struct itcp_conn *conn, enum rx_state state)
{
	conn->rx_state = state;
	conn->rx_got = 0;
}

static void rx_next_pdu(struct itcp_conn *conn)
{
	rx_set_state(conn, RX_BHS);
}

/* The whole PDU is in: act on it, then wait for the next one. */
static void rx_after_pdu(struct itcp_conn *conn)
{
	rx_pdu_done(conn);
	if (conn->rx_state != RX_DEAD)
		rx_next_pdu(conn);
}

/* The header is in (digest checked): go to the data segment or end the PDU. */
static void rx_after_hdr(struct itcp_conn *conn)
{
	int err = rx_hdr_done(conn);

	if (err) {
		conn_fail(conn, err);
		return;
	}
	if (conn->rx_dlen)
		rx_set_state(conn, RX_DATA);
	else
		rx_after_pdu(conn);
}

/* BHS and AHS are in: the header digest follows if negotiated. */
static void rx_after_ahs(struct itcp_conn *conn)
{
	if (conn->hdrdgst)
		rx_set_state(conn, RX_HDGST);
	else
		rx_after_hdr(conn);
}

/* The data segment and its padding are in: the data digest follows if negotiated. */
static void rx_after_pad(struct itcp_conn *conn)
{
	if (conn->datadgst)
		rx_set_state(conn, RX_DDGST);
	else
		rx_after_pdu(conn);
}

/* Copy the next bytes of a part of fixed size (BHS, AHS, padding, a digest). */
static int rx_fill(struct itcp_conn *conn, struct sk_buff *skb, unsigned int off,
		   size_t avail, void *buf, u32 size)
{
	u32 n = min_t(size_t, size - conn->rx_got, avail);

	if (skb_copy_bits(skb, off, buf + conn->rx_got, n))
		return -EFAULT;
	conn->rx_got += n;
	return n;
}

static int rx_bhs(struct itcp_conn *conn, struct sk_buff *skb, unsigned int off,
		  size_t avail)
{
	const struct iscsi_hdr *hdr = rx_pdu_hdr(conn);
	int n;

	if (!conn->rx_got && avail < ISCSI_HDR_LEN)	/* split across skbs */
		stat_add(conn, ISCSI_IF_STAT_RX_DISCONTIGUOUS_HDR, 1);
	n = rx_fill(conn, skb, off, avail, conn->rx_hdr, ISCSI_HDR_LEN);
	if (n < 0 || conn->rx_got < ISCSI_HDR_LEN)
		return n;
	conn->rx_ahslen = hdr->hlength * 4;
	conn->rx_dlen = ntoh24(hdr->dlength);
	conn->rx_padlen = pad_len(conn->rx_dlen);
	if (conn->rx_ahslen)
		rx_set_state(conn, RX_AHS);
	else
		rx_after_ahs(conn);
	return n;
}

static int rx_ahs(struct itcp_conn *conn, struct sk_buff *skb, unsigned int off,
		  size_t avail)
{
	int n = rx_fill(conn, skb, off, avail, conn->rx_hdr + ISCSI_HDR_LEN,
			conn->rx_ahslen);

	if (n >= 0 && conn->rx_got == conn->rx_ahslen)
		rx_after_ahs(conn);
	return n;
}

static int rx_hdgst(struct itcp_conn *conn, struct sk_buff *skb, unsigned int off,
		    size_t avail)
{
	int n = rx_fill(conn, skb, off, avail, &conn->rx_dgst, ITCP_DIGEST_SIZE);
	u32 crc;

	if (n < 0 || conn->rx_got < ITCP_DIGEST_SIZE)
		return n;
	crc = crc32c(~0, conn->rx_hdr, ISCSI_HDR_LEN + conn->rx_ahslen);
	if (le32_to_cpu(conn->rx_dgst) != digest_final(crc)) {
		stat_add(conn, ISCSI_IF_STAT_DIGEST_ERR, 1);
		pr_warn_ratelimited("header digest error\n");
		conn_fail(conn, ISCSI_IF_ERR_HDR_DGST);
		return n;
	}
	rx_after_hdr(conn);
	return n;
}

/* Data-In goes straight into the command's buffer, anything else to rx_buf. */
static int rx_data(struct itcp_conn *conn, struct sk_buff *skb, unsigned int off,
		   size_t avail)
{
	u32 n = min_t(size_t, conn->rx_dlen - conn->rx_got, avail);
	u32 at;

	if (conn->rx_task) {
		if (rx_copy_to_task(conn, conn->rx_task, skb, off, n)) {
			conn_fail(conn, ISCSI_IF_ERR_PROTO);
			return 0;
		}
	} else {
		/* rx_buf holds max_recv_dlength; discarded data wraps. */
		at = conn->rx_discard ? conn->rx_got % conn->rx_buf_size : conn->rx_got;
		n = min_t(u32, n, conn->rx_buf_size - at);
		if (skb_copy_bits(skb, off, conn->rx_buf + at, n))
			return -EFAULT;
		if (conn->datadgst)
			conn->rx_crc = crc32c(conn->rx_crc, conn->rx_buf + at, n);
	}
	conn->rx_got += n;
	if (conn->rx_got < conn->rx_dlen)
		return n;
	if (conn->rx_padlen)
		rx_set_state(conn, RX_PAD);
	else
		rx_after_pad(conn);
	return n;
}

static int rx_pad(struct itcp_conn *conn, struct sk_buff *skb, unsigned int off,
		  size_t avail)
{
	u8 pad[ISCSI_PAD_LEN];
	u32 got = conn->rx_got;
	int n = rx_fill(conn, skb, off, avail, pad, conn->rx_padlen);

	if (n < 0)
		return n;
	if (conn->datadgst)
		conn->rx_crc = crc32c(conn->rx_crc, pad + got, n);
	if (conn->rx_got == conn->rx_padlen)
		rx_after_pad(conn);
	return n;
}

static int rx_ddgst(struct itcp_conn *conn, struct sk_buff *skb, unsigned int off,
		    size_t avail)
{
	int n = rx_fill(conn, skb, off, avail, &conn->rx_dgst, ITCP_DIGEST_SIZE);

	if (n < 0 || conn->rx_got < ITCP_DIGEST_SIZE)
		return n;
	if (le32_to_cpu(conn->rx_dgst) != digest_final(conn->rx_crc)) {
		stat_add(conn, ISCSI_IF_STAT_DIGEST_ERR, 1);
		pr_warn_ratelimited("data digest error\n");
		conn_fail(conn, ISCSI_IF_ERR_DATA_DGST);
		return n;
	}
	rx_after_pdu(conn);
	return n;
}

/* tcp_read_sock() actor: hands the skb to the state of the PDU in progress. */
static int rx_actor(read_descriptor_t *desc, struct sk_buff *skb,
		    unsigned int offset, size_t len)
{
	struct itcp_conn *conn = desc->arg.data;
	size_t used = 0;
	int n;

	while (used < len && conn->rx_state != RX_DEAD) {
		switch (conn->rx_state) {
		case RX_BHS:
			n = rx_bhs(conn, skb, offset + used, len - used);
			break;
		case RX_AHS:
			n = rx_ahs(conn, skb, offset + used, len - used);
			break;
		case RX_HDGST:
			n = rx_hdgst(conn, skb, offset + used, len - used);
			break;
		case RX_DATA:
			n = rx_data(conn, skb, offset + used, len - used);
			break;
		case RX_PAD:
			n = rx_pad(conn, skb, offset + used, len - used);
			break;
		case RX_DDGST:
			n = rx_ddgst(conn, skb, offset + used, len - used);
			break;
		default:
			n = 0;
			break;
		}
		if (n < 0) {
			conn_fail(conn, ISCSI_IF_ERR_CONN_FAILED);
			break;
		}
		used += n;
	}
	if (conn->rx_state == RX_DEAD)
		desc->count = 0;
	stat_add(conn, ISCSI_IF_STAT_RXDATA_OCTETS, used);
	return used;
}

/* With the socket locked (softirq or the socket owner's release_sock). */
static void itcp_data_ready(struct sock *sk)
{
	struct itcp_conn *conn;
	read_descriptor_t desc;

	read_lock_bh(&sk->sk_callback_lock);
	conn = sk->sk_user_data;
	if (conn && conn->rx_state != RX_DEAD) {
		desc.arg.data = conn;
		desc.count = 1;
		tcp_read_sock(sk, &desc, rx_actor);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void itcp_state_change(struct sock *sk)
{
	void (*old)(struct sock *sk) = NULL;
	struct itcp_conn *conn;

	read_lock_bh(&sk->sk_callback_lock);
	conn = sk->sk_user_data;
	if (conn) {
		old = conn->old_state_change;
		if (sk->sk_state == TCP_CLOSE_WAIT || sk->sk_state == TCP_CLOSE ||
		    sk->sk_state == TCP_LAST_ACK || sk->sk_state == TCP_FIN_WAIT1 ||
		    sk->sk_state == TCP_FIN_WAIT2 || sk->sk_state == TCP_CLOSING) {
			/* After a Logout Response the close is expected. */
			if (conn->logout_rsp_seen)
				conn->rx_state = RX_DEAD;
			else
				conn_fail(conn, ISCSI_IF_ERR_CONN_FAILED);
		}
	}
	read_unlock_bh(&sk->sk_callback_lock);
	if (old)
		old(sk);
}

/* ------------------------------------------------------- task management */

/* No connection's transmit work sends from a forgotten (aborted/reset) task any more. */
static bool xmit_quiet(struct itcp_session *sess)
{
	struct itcp_conn *conn;
	bool quiet = true;

	spin_lock_bh(&sess->lock);
	list_for_each_entry(conn, &sess->conns, node)
		if (conn->xmit_task && !(conn->xmit_task->flags & TASK_ACTIVE))
			quiet = false;
	spin_unlock_bh(&sess->lock);
	return quiet;
}

/* Under sess->lock: is conn (maybe stopped and destroyed by now) still running? */
static bool conn_running_locked(struct itcp_session *sess, struct itcp_conn *conn)
{
	struct itcp_conn *c;

	list_for_each_entry(c, &sess->conns, node)
		if (c == conn)
			return c->running;
	return false;
}

/* Under sess->lock: any running connection, or NULL. */
static struct itcp_conn *first_running_locked(struct itcp_session *sess)
{
	struct itcp_conn *conn;

	list_for_each_entry(conn, &sess->conns, node)
		if (conn->running)
			return conn;
	return NULL;
}

/*
 * Under sess->lock: fail the session (ErrorRecoveryLevel 0: an error of one
 * connection recovers them all) through any of its running connections.
 */
static void sess_fail_locked(struct itcp_session *sess, enum iscsi_if_err err)
{
	struct itcp_conn *conn = first_running_locked(sess);

	if (conn)
		iscsi_if_conn_error(conn->ifc, err);
}

/* The time a task management function waits for its response, in seconds. */
static unsigned int tmf_timeout(struct itcp_session *sess, u8 func)
{
	switch (func) {
	case ISCSI_TM_FUNC_ABORT_TASK:
		return READ_ONCE(sess->abort_tmo);
	case ISCSI_TM_FUNC_LOGICAL_UNIT_RESET:
		return READ_ONCE(sess->lu_reset_tmo);
	default:
		return READ_ONCE(sess->tgt_reset_tmo);
	}
}

/* Under sess->lock: the TMF about sc, built in the session's slot, queued on conn. */
static void tmf_queue_locked(struct itcp_session *sess, struct itcp_conn *conn,
			     struct scsi_cmnd *sc, u8 func)
{
	struct itcp_task *ref = scsi_cmd_priv(sc);
	struct iscsi_tm *hdr = &sess->tmf_hdr;

	memset(hdr, 0, sizeof(*hdr));
	hdr->opcode = ISCSI_OP_SCSI_TMFUNC | ISCSI_OP_IMMEDIATE;
	hdr->flags = ISCSI_FLAG_CMD_FINAL | func;
	if (func != ISCSI_TM_FUNC_TARGET_WARM_RESET)
		int_to_scsilun(sc->device->lun, &hdr->lun);
	sess->gen++;
	sess->tmf_itt = ITCP_TMF_TAG |
		((u32)(sess->gen & ITCP_ITT_GEN_MASK) << ITCP_ITT_TAG_BITS);
	hdr->itt = cpu_to_itt(sess->tmf_itt);
	hdr->rtt = RESERVED_ITT;
	if (func == ISCSI_TM_FUNC_ABORT_TASK) {
		hdr->rtt = cpu_to_itt(ref->itt);
		hdr->refcmdsn = cpu_to_be32(ref->cmdsn);
	}
	hdr->cmdsn = cpu_to_be32(sess->cmdsn);	/* immediate: not advanced */
	sess->tmf_func = func;
	sess->tmf_lun = sc->device->lun;
	sess->tmf_ref = ref;
	sess->tmf_conn = conn;
	sess->tmf_pending = true;
	sess->tmf_answered = false;
	reinit_completion(&sess->tmf_done);
	sess->tmf_mgmt.embedded = true;
	sess->tmf_mgmt.buf = (u8 *)hdr;
	sess->tmf_mgmt.hlen = ISCSI_HDR_LEN;
	sess->tmf_mgmt.dlen = 0;
	list_add_tail(&sess->tmf_mgmt.node, &conn->mgmtq);
}

/*
 * The wait for the TMF's response is over (left: what
 * wait_for_completion_timeout() returned): SUCCESS or FAILED. conn may be
 * stopped (and freed) by now: it is used only while it is still current.
 */
static int tmf_end(struct Scsi_Host *shost, struct itcp_conn *conn, u8 func, long left)
{
	struct itcp_session *sess = shost_sess(shost);
	int ret = FAILED;

	spin_lock_bh(&sess->lock);
	sess->tmf_pending = false;
	list_del_init(&sess->tmf_mgmt.node);
	if (!left || !sess->tmf_answered) {
		if (conn_running_locked(sess, conn)) {
			stat_add(conn, ISCSI_IF_STAT_TIMEOUT_ERR, 1);
			/* The target does not answer: recover the connection. */
			iscsi_if_conn_error(conn->ifc, ISCSI_IF_ERR_SCSI_EH);
		}
		spin_unlock_bh(&sess->lock);
		shost_printk(KERN_WARNING, shost,
			     "task management function %u got no response\n", func);
		return FAILED;
	}
	if (sess->tmf_response == ISCSI_TMF_RSP_COMPLETE ||
	    (func == ISCSI_TM_FUNC_ABORT_TASK &&
	     sess->tmf_response == ISCSI_TMF_RSP_NO_TASK))
		ret = SUCCESS;
	spin_unlock_bh(&sess->lock);
	if (ret != SUCCESS)
		shost_printk(KERN_INFO, shost,
			     "task management function %u: response %u\n",
			     func, sess->tmf_response);
	return ret;
}

/*
 * The transmit work may still be sending from a forgotten task: the midlayer
 * must not reuse the command before it is done. A stalled socket ends with
 * the connection (stop_conn shuts it down).
 */
static void tmf_wait_xmit(struct itcp_session *sess)
{
	if (wait_event_timeout(sess->xmit_wait, xmit_quiet(sess), 5 * HZ))
		return;
	spin_lock_bh(&sess->lock);
	sess_fail_locked(sess, ISCSI_IF_ERR_SCSI_EH);
	spin_unlock_bh(&sess->lock);
	wait_event(sess->xmit_wait, xmit_quiet(sess));
}

/* One task management function at a time (tmf_mutex); SUCCESS or FAILED. */
static int itcp_tmf(struct scsi_cmnd *sc, u8 func)
{
	struct Scsi_Host *shost = sc->device->host;
	struct itcp_session *sess = shost_sess(shost);
	struct itcp_task *ref = scsi_cmd_priv(sc);
	unsigned int tmo = tmf_timeout(sess, func);
	struct itcp_conn *conn;
	long left;
	int ret;

	mutex_lock(&sess->tmf_mutex);
	spin_lock_bh(&sess->lock);
	if (func == ISCSI_TM_FUNC_ABORT_TASK && !task_lookup_locked(sess, ref->itt)) {
		/* Completed, or failed by a connection stop: nothing to abort. */
		spin_unlock_bh(&sess->lock);
		ret = SUCCESS;
		goto wait_xmit;
	}
	if (func == ISCSI_TM_FUNC_ABORT_TASK && !(ref->flags & (TASK_CMD_SENT | TASK_XMIT))) {
		/*
		 * Still waiting for the CmdSN window: the target has never seen
		 * it and it has no CmdSN yet, so it goes without a TMF.
		 */
		task_forget_locked(sess, ref);
		spin_unlock_bh(&sess->lock);
		ret = SUCCESS;
		goto out;
	}
	/*
	 * ABORT TASK goes on the connection the task is allegiant to (RFC 7143
	 * 11.5.1); a reset on any running one.
	 */
	conn = func == ISCSI_TM_FUNC_ABORT_TASK ? ref->conn : first_running_locked(sess);
	if (!conn || !conn->running || READ_ONCE(conn->xmit_dead) ||
	    test_bit(ISCSI_IF_CONN_F_ERROR, &conn->ifc->flags)) {
		/* No connection: fail, the midlayer escalates (or recovery ends it). */
		spin_unlock_bh(&sess->lock);
		ret = FAILED;
		goto out;
	}
	if (func == ISCSI_TM_FUNC_ABORT_TASK)
		stat_add(conn, ISCSI_IF_STAT_EH_ABORT_CNT, 1);
	tmf_queue_locked(sess, conn, sc, func);
	spin_unlock_bh(&sess->lock);
	queue_work(itcp_wq, &conn->xmit_work);

	left = wait_for_completion_timeout(&sess->tmf_done, (unsigned long)tmo * HZ);
	ret = tmf_end(shost, conn, func, left);
wait_xmit:
	if (ret == SUCCESS)
		tmf_wait_xmit(sess);
out:
	mutex_unlock(&sess->tmf_mutex);
	return ret;
}

static int itcp_eh_abort(struct scsi_cmnd *sc)
{
	return itcp_tmf(sc, ISCSI_TM_FUNC_ABORT_TASK);
}

static int itcp_eh_device_reset(struct scsi_cmnd *sc)
{
	return itcp_tmf(sc, ISCSI_TM_FUNC_LOGICAL_UNIT_RESET);
}

/*
 * After a failed target reset: 1 once a new connection runs, -1 when the
 * session ended (recovery timed out, logout, destroy), 0 while recovering.
 */
static int recovery_outcome(struct iscsi_if_session *ifs, u32 gen)
{
	struct itcp_session *sess = ifs->dd_data;
	bool up;

	if (iscsi_if_session_state(ifs) == ISCSI_IF_SESSION_FREE && ifs->removing)
		return -1;
	spin_lock_bh(&sess->lock);
	up = sess->nr_running && sess->conn_gen != gen;
	spin_unlock_bh(&sess->lock);
	if (up && iscsi_if_session_state(ifs) == ISCSI_IF_SESSION_LOGGED_IN)
		return 1;
	if (iscsi_if_session_state(ifs) == ISCSI_IF_SESSION_FREE &&
	    sess->conn_gen == gen && !READ_ONCE(sess->nr_running))
		return -1;
	return 0;
}

/*
 * The last resort before the midlayer takes the devices offline: if the
 * target cannot reset, recover the session (iscsid reconnects on the
 * connection error) and succeed once a new connection runs; fail when the
 * recovery timeout ends the session.
 */
static int itcp_eh_target_reset(struct scsi_cmnd *sc)
{
	struct Scsi_Host *shost = sc->device->host;
	struct iscsi_if_session *ifs = iscsi_if_shost_session(shost);
	struct itcp_session *sess = ifs->dd_data;
	unsigned long tmo;
	int outcome = 0;
	u32 gen;

	if (itcp_tmf(sc, ISCSI_TM_FUNC_TARGET_WARM_RESET) == SUCCESS)
		return SUCCESS;

	spin_lock_bh(&sess->lock);
	gen = sess->conn_gen;
	sess_fail_locked(sess, ISCSI_IF_ERR_SCSI_EH);
	spin_unlock_bh(&sess->lock);
	shost_printk(KERN_INFO, shost, "target reset failed: waiting for session recovery\n");

	/*
	 * iscsi_if wakes state_wq at every session and connection state
	 * change. TASK_IDLE: the wait may outlast the hung task timeout.
	 */
	tmo = (READ_ONCE(ifs->recovery_tmo) + 5) * HZ;
	wait_event_idle_timeout(ifs->state_wq,
				(outcome = recovery_outcome(ifs, gen)) != 0, tmo);
	return outcome > 0 ? SUCCESS : FAILED;
}

/* -------------------------------------------------- transport callbacks */

static int itcp_create_session(struct iscsi_if_session *ifs)
{
	struct itcp_session *sess = ifs->dd_data;

	sess->ifs = ifs;
	spin_lock_init(&sess->lock);
	mutex_init(&sess->tmf_mutex);
	init_completion(&sess->tmf_done);
	INIT_LIST_HEAD(&sess->tmf_mgmt.node);
	INIT_LIST_HEAD(&sess->conns);
	init_waitqueue_head(&sess->xmit_wait);
	sess->ntasks = ifs->shost->can_queue;
	sess->tasks = kcalloc(sess->ntasks, sizeof(*sess->tasks), GFP_KERNEL);
	if (!sess->tasks)
		return -ENOMEM;
	/* RFC 7143 defaults until iscsid sets the negotiated values */
	sess->initial_r2t = true;
	sess->imm_data = true;
	sess->pdu_inorder = true;
	sess->dataseq_inorder = true;
	sess->first_burst = 65536;
	sess->max_burst = 262144;
	sess->max_r2t = 1;
	sess->abort_tmo = 15;
	sess->lu_reset_tmo = 30;
	sess->tgt_reset_tmo = 30;
	return 0;
}

static void itcp_destroy_session(struct iscsi_if_session *ifs)
{
	struct itcp_session *sess = ifs->dd_data;

	kfree(sess->tasks);
	sess->tasks = NULL;
}

static int itcp_create_conn(struct iscsi_if_conn *ifc)
{
	struct itcp_conn *conn = ifc->dd_data;

	conn->ifc = ifc;
	conn->sess = ifc->session->dd_data;
	conn->max_recv_dlength = ITCP_DEF_RECV_DLENGTH;
	conn->max_xmit_dlength = ITCP_DEF_RECV_DLENGTH;
	INIT_WORK(&conn->xmit_work, xmit_work_fn);
	INIT_LIST_HEAD(&conn->cmdq);
	INIT_LIST_HEAD(&conn->dataq);
	INIT_LIST_HEAD(&conn->mgmtq);
	conn->rx_state = RX_DEAD;
	spin_lock_bh(&conn->sess->lock);
	list_add_tail(&conn->node, &conn->sess->conns);
	spin_unlock_bh(&conn->sess->lock);
	return 0;
}

/*
 * Drop what TCP still holds to send, and reset the connection. Data-Out
 * goes to TCP by reference (sendpage): skbs queued for (re)transmission
 * point into the pages of commands that stop_conn is about to complete,
 * after which their owners reuse the pages. Were they left queued, a link
 * that comes back would deliver the old command's header with other data
 * (what a retransmission reads from a reused page) to the target.
 */
static void itcp_abort_sock(struct itcp_conn *conn)
{
	struct sock *sk;

	if (!conn->sock)
		return;
	sk = conn->sock->sk;
	lock_sock(sk);
	tcp_disconnect(sk, 0);
	release_sock(sk);
}

static void itcp_release_sock(struct itcp_conn *conn)
{
	if (conn->sock) {
		sockfd_put(conn->sock);
		conn->sock = NULL;
	}
}

static void itcp_destroy_conn(struct iscsi_if_conn *ifc)
{
	struct itcp_conn *conn = ifc->dd_data;

	spin_lock_bh(&conn->sess->lock);
	list_del_init(&conn->node);
	spin_unlock_bh(&conn->sess->lock);
	itcp_release_sock(conn);
	kvfree(conn->rx_buf);
	conn->rx_buf = NULL;
}

static int itcp_bind_conn(struct iscsi_if_conn *ifc, int fd, u32 exp_statsn,
			  u32 cmdsn, u32 max_cmdsn)
{
	struct itcp_conn *conn = ifc->dd_data;
	struct itcp_session *sess = conn->sess;
	struct socket *sock;
	struct sock *sk;
	int err;

	sock = sockfd_lookup(fd, &err);
	if (!sock)
		return err;
	sk = sock->sk;
	if (!sk || sk->sk_protocol != IPPROTO_TCP || sock->type != SOCK_STREAM ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6) ||
	    sk->sk_state != TCP_ESTABLISHED) {
		sockfd_put(sock);
		return -EINVAL;
	}
	if (READ_ONCE(sk->sk_user_data)) {
		sockfd_put(sock);
		return -EBUSY;	/* bound already, or used by another kernel user */
	}
	itcp_release_sock(conn);
	conn->sock = sock;
	lock_sock(sk);
	sk->sk_allocation = GFP_NOIO;
	release_sock(sk);
	tcp_sock_set_nodelay(sk);

	spin_lock_bh(&sess->lock);
	conn->exp_statsn = exp_statsn;
	if (sess->nr_running) {
		/*
		 * A further connection: the session's CmdSN goes on; what its
		 * login answered can only widen the window.
		 */
		update_cmdsn_cpu(sess, cmdsn, max_cmdsn);
	} else {
		sess->cmdsn = cmdsn;
		sess->exp_cmdsn = cmdsn;
		sess->max_cmdsn = iscsi_sna_lt(max_cmdsn, cmdsn - 1) ? cmdsn : max_cmdsn;
	}
	spin_unlock_bh(&sess->lock);
	trace_iscsi_tcp_conn_state(ifc, ISCSI_IF_CONN_BOUND, 0);
	return 0;
}

/* Our end of the connection, as iscsi_host/hostN/ipaddress shows it. */
static void itcp_set_host_ipaddress(struct itcp_conn *conn)
{
	struct sockaddr_storage ss;
	char addr[64];

	if (kernel_getsockname(conn->sock, (struct sockaddr *)&ss) > 0) {
		snprintf(addr, sizeof(addr), "%pISc", &ss);
		iscsi_if_set_host_ipaddress(conn->sess->ifs, addr);
	}
}

static int itcp_start_conn(struct iscsi_if_conn *ifc)
{
	struct itcp_conn *conn = ifc->dd_data;
	struct itcp_session *sess = conn->sess;
	struct sock *sk;
	u32 size = max_t(u32, conn->max_recv_dlength, ISCSI_HDR_LEN);

	if (!conn->sock)
		return -EINVAL;
	sk = conn->sock->sk;
	if (!conn->rx_buf || conn->rx_buf_size != size) {
		kvfree(conn->rx_buf);
		conn->rx_buf = kvmalloc(size, GFP_KERNEL);
		if (!conn->rx_buf) {
			conn->rx_buf_size = 0;
			return -ENOMEM;
		}
		conn->rx_buf_size = size;
	}
	conn->xmit_dead = false;
	conn->stopping = false;
	conn->draining = false;
	conn->logout_sent = false;
	conn->logout_rsp_seen = false;
	conn->rx_task = NULL;
	rx_next_pdu(conn);
	trace_iscsi_tcp_conn_state(ifc, ISCSI_IF_CONN_STARTED, 0);

	spin_lock_bh(&sess->lock);
	conn->running = true;
	sess->nr_running++;
	sess->conn_gen++;
	spin_unlock_bh(&sess->lock);

	write_lock_bh(&sk->sk_callback_lock);
	conn->old_data_ready = sk->sk_data_ready;
	conn->old_state_change = sk->sk_state_change;
	sk->sk_user_data = conn;
	sk->sk_data_ready = itcp_data_ready;
	sk->sk_state_change = itcp_state_change;
	conn->callbacks_set = true;
	write_unlock_bh(&sk->sk_callback_lock);

	itcp_set_host_ipaddress(conn);

	/* Whatever arrived between login and now, and a peer already gone. */
	lock_sock(sk);
	itcp_data_ready(sk);
	release_sock(sk);
	if (sk->sk_state != TCP_ESTABLISHED)
		conn_fail(conn, ISCSI_IF_ERR_CONN_FAILED);
	return 0;
}

/* The socket's callbacks are its owner's again; a blocked sender wakes up. */
static void itcp_unhook_sock(struct itcp_conn *conn)
{
	struct sock *sk;

	if (!conn->sock)
		return;
	sk = conn->sock->sk;
	if (conn->callbacks_set) {
		write_lock_bh(&sk->sk_callback_lock);
		sk->sk_user_data = NULL;
		sk->sk_data_ready = conn->old_data_ready;
		sk->sk_state_change = conn->old_state_change;
		conn->callbacks_set = false;
		write_unlock_bh(&sk->sk_callback_lock);
	}
	kernel_sock_shutdown(conn->sock, SHUT_RDWR);
}

/*
 * Under sess->lock: every task allegiant to conn leaves the table with
 * result; the commands to complete go on done through their xmit_node (a
 * finished task is on no transmit queue), so that nothing needs to be
 * allocated here.
 */
static void tasks_finish_conn_locked(struct itcp_session *sess, struct itcp_conn *conn,
				     int result, struct list_head *done)
{
	struct itcp_task *task;
	u32 i;

	for (i = 0; i < sess->ntasks; i++) {
		task = sess->tasks[i];
		if (!task || task->conn != conn)
			continue;
		if (task_finish_locked(sess, task, result))
			list_add_tail(&task->xmit_node, done);
		task->flags &= ~TASK_DONE_PENDING;
	}
}

static void itcp_stop_conn(struct iscsi_if_conn *ifc, int flag)
{
	struct itcp_conn *conn = ifc->dd_data;
	struct itcp_session *sess = conn->sess;
	int result = DID_TRANSPORT_DISRUPTED << 16;
	struct itcp_task *task, *next;
	struct itcp_mgmt *m, *tmp;
	LIST_HEAD(mgmt);
	LIST_HEAD(done);

	spin_lock_bh(&sess->lock);
	conn->stopping = true;
	if (conn->running) {
		conn->running = false;
		sess->nr_running--;
	}
	/*
	 * Its commands are retried (the queue is blocked while the session
	 * recovers; other connections take them when one connection of several
	 * ends), unless the session ends with it.
	 */
	if (flag == ISCSI_IF_STOP_TERM && !sess->nr_running)
		result = DID_NO_CONNECT << 16;
	spin_unlock_bh(&sess->lock);
	wake_up_all(&sess->xmit_wait);	/* a DRAIN_CONN waiting on it */

	itcp_unhook_sock(conn);
	cancel_work_sync(&conn->xmit_work);
	conn->rx_state = RX_DEAD;
	itcp_abort_sock(conn);	/* before the commands' pages go back */

	spin_lock_bh(&sess->lock);
	tasks_finish_conn_locked(sess, conn, result, &done);
	INIT_LIST_HEAD(&conn->cmdq);
	INIT_LIST_HEAD(&conn->dataq);
	list_splice_init(&conn->mgmtq, &mgmt);
	conn->mgmt_queued = 0;
	conn->xmit_task = NULL;
	if (sess->tmf_pending && sess->tmf_conn == conn) {
		sess->tmf_pending = false;
		complete(&sess->tmf_done);
	}
	spin_unlock_bh(&sess->lock);
	list_for_each_entry_safe(m, tmp, &mgmt, node) {
		list_del_init(&m->node);
		if (!m->embedded)
			kfree(m);
	}
	list_for_each_entry_safe(task, next, &done, xmit_node) {
		list_del_init(&task->xmit_node);
		scsi_done(task_sc(task));
	}
	itcp_release_sock(conn);
	trace_iscsi_tcp_conn_state(ifc, ISCSI_IF_CONN_STOPPED, flag);
}

static int parse_uint(const char *v, u32 *out)
{
	return kstrtou32(v, 10, out);
}

static int itcp_set_param(struct iscsi_if_session *ifs, struct iscsi_if_conn *ifc,
			  enum iscsi_if_param param, const char *value)
{
	struct itcp_session *sess = ifs->dd_data;
	struct itcp_conn *conn = ifc ? ifc->dd_data : NULL;
	bool running;
	u32 v;
	int err = parse_uint(value, &v);	/* every value used here is a number */

	spin_lock_bh(&sess->lock);
	running = sess->nr_running;
	spin_unlock_bh(&sess->lock);

	switch (param) {
	case ISCSI_IF_PARAM_MAX_RECV_DLENGTH:
	case ISCSI_IF_PARAM_MAX_XMIT_DLENGTH:
	case ISCSI_IF_PARAM_HDRDGST_EN:
	case ISCSI_IF_PARAM_DATADGST_EN:
		if (!conn)
			return -EINVAL;	/* given for connection parameters */
		if (err)
			return err;
		if (READ_ONCE(conn->running))
			return -EBUSY;
		if (param == ISCSI_IF_PARAM_MAX_RECV_DLENGTH)
			conn->max_recv_dlength = v;
		else if (param == ISCSI_IF_PARAM_MAX_XMIT_DLENGTH)
			conn->max_xmit_dlength = v;
		else if (param == ISCSI_IF_PARAM_HDRDGST_EN)
			conn->hdrdgst = v;
		else
			conn->datadgst = v;
		return 0;
	case ISCSI_IF_PARAM_INITIAL_R2T_EN:
	case ISCSI_IF_PARAM_IMM_DATA_EN:
	case ISCSI_IF_PARAM_PDU_INORDER_EN:
	case ISCSI_IF_PARAM_DATASEQ_INORDER_EN:
	case ISCSI_IF_PARAM_FIRST_BURST:
	case ISCSI_IF_PARAM_MAX_BURST:
	case ISCSI_IF_PARAM_MAX_R2T:
		if (err)
			return err;
		if (running)
			return -EBUSY;
		spin_lock_bh(&sess->lock);
		if (param == ISCSI_IF_PARAM_INITIAL_R2T_EN)
			sess->initial_r2t = v;
		else if (param == ISCSI_IF_PARAM_IMM_DATA_EN)
			sess->imm_data = v;
		else if (param == ISCSI_IF_PARAM_PDU_INORDER_EN)
			sess->pdu_inorder = v;
		else if (param == ISCSI_IF_PARAM_DATASEQ_INORDER_EN)
			sess->dataseq_inorder = v;
		else if (param == ISCSI_IF_PARAM_FIRST_BURST)
			sess->first_burst = v;
		else if (param == ISCSI_IF_PARAM_MAX_BURST)
			sess->max_burst = v;
		else
			sess->max_r2t = v;
		spin_unlock_bh(&sess->lock);
		return 0;
	case ISCSI_IF_PARAM_ABORT_TMO:
		if (!err)
			WRITE_ONCE(sess->abort_tmo, v ? v : 1);
		return err;
	case ISCSI_IF_PARAM_LU_RESET_TMO:
		if (!err)
			WRITE_ONCE(sess->lu_reset_tmo, v ? v : 1);
		return err;
	case ISCSI_IF_PARAM_TGT_RESET_TMO:
		if (!err)
			WRITE_ONCE(sess->tgt_reset_tmo, v ? v : 1);
		return err;
	default:
		return 0;	/* shown in sysfs only */
	}
}

static int itcp_send_pdu(struct iscsi_if_conn *ifc, const u8 *pdu, size_t len)
{
	struct itcp_conn *conn = ifc->dd_data;
	struct itcp_session *sess = conn->sess;
	/* The caller's buffer may be unaligned: the ITT is read with get_unaligned(). */
	const struct iscsi_hdr *hdr = (const struct iscsi_hdr *)pdu;
	u32 ahslen = hdr->hlength * 4, dlen = ntoh24(hdr->dlength);
	u32 itt = itt_to_cpu(get_unaligned(&hdr->itt));
	u8 op = hdr->opcode & ISCSI_OPCODE_MASK;
	struct iscsi_nopout *out;
	struct itcp_mgmt *m;

	if (len != ISCSI_HDR_LEN + ahslen + dlen)
		return -EINVAL;
	if (op != ISCSI_OP_NOOP_OUT && op != ISCSI_OP_LOGOUT && op != ISCSI_OP_TEXT &&
	    op != ISCSI_OP_SNACK)
		return -EINVAL;
	if (!(itt & BIT(31)) && itt != ISCSI_RESERVED_TAG)
		return -EINVAL;	/* iscsid's ITTs have bit 31 set */
	if (dlen > conn->max_xmit_dlength)
		return -EMSGSIZE;
	m = kmalloc(sizeof(*m) + len, GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	m->buf = (u8 *)(m + 1);
	memcpy(m->buf, pdu, len);
	m->embedded = false;
	m->hlen = ISCSI_HDR_LEN + ahslen;
	m->dlen = dlen;
	INIT_LIST_HEAD(&m->node);

	spin_lock_bh(&sess->lock);
	if (!conn->running) {
		spin_unlock_bh(&sess->lock);
		kfree(m);
		return -ENOTCONN;
	}
	if (conn->mgmt_queued >= ITCP_MAX_MGMT_QUEUED) {
		spin_unlock_bh(&sess->lock);
		kfree(m);
		return -ENOBUFS;	/* the connection does not move: bounded */
	}
	conn->mgmt_queued++;
	if (op != ISCSI_OP_SNACK) {
		/* CmdSN sits where a NOP-Out has it in Text and Logout too. */
		out = (struct iscsi_nopout *)m->buf;
		out->cmdsn = cpu_to_be32(sess->cmdsn);
		if (!(out->opcode & ISCSI_OP_IMMEDIATE))
			sess->cmdsn++;
	}
	list_add_tail(&m->node, &conn->mgmtq);
	spin_unlock_bh(&sess->lock);
	queue_work(itcp_wq, &conn->xmit_work);
	return 0;
}

static void itcp_get_stats(struct iscsi_if_conn *ifc, u64 stats[__ISCSI_IF_STAT_MAX])
{
	struct itcp_conn *conn = ifc->dd_data;
	int i;

	for (i = 0; i < __ISCSI_IF_STAT_MAX; i++)
		stats[i] = READ_ONCE(conn->stats[i]);
}

/* Under sess->lock: DRAIN_CONN is over for conn: it stopped, or its last task left. */
static bool conn_drained(struct itcp_session *sess, struct itcp_conn *conn)
{
	bool drained;

	spin_lock_bh(&sess->lock);
	drained = !conn->running || !conn->ntasks;
	spin_unlock_bh(&sess->lock);
	return drained;
}

/*
 * Under sess->lock: the commands of a draining connection that have not
 * left yet (no CmdSN) go to the other connections, built again for the
 * new one's MaxXmitDataSegmentLength.
 */
static void drain_requeue_locked(struct itcp_session *sess, struct itcp_conn *conn)
{
	struct itcp_task *task, *next;
	struct itcp_conn *to;

	list_for_each_entry_safe(task, next, &conn->cmdq, xmit_node) {
		to = pick_conn_locked(sess);
		if (!to)
			break;
		list_del_init(&task->xmit_node);
		conn->ntasks--;
		task_build(sess, to, task, task_sc(task), task->itt);
		to->ntasks++;
		list_add_tail(&task->xmit_node, &to->cmdq);
	}
	kick_conns_locked(sess);
}

/**
 * itcp_drain_conn() - stop giving a connection new commands and wait for its others
 * @ifc: the connection, running
 * @timeout: seconds to wait for its outstanding commands
 *
 * The first step of closing one connection of a session (a Logout with
 * reason "close the connection" follows, RFC 7143 11.14): no new command is
 * given to it and those not sent yet move to the others, so that nothing
 * allegiant to it is left when the target drops the connection's tasks. On
 * a timeout or a signal it takes commands again.
 *
 * Context: process, without the iscsi_if mutex; sleeps.
 * Return: 0; -EBUSY when no other connection takes commands; -ENOTCONN when
 * the connection is not running or stopped meanwhile; -ETIMEDOUT; -EINTR.
 */
static int itcp_drain_conn(struct iscsi_if_conn *ifc, unsigned int timeout)
{
	struct itcp_conn *conn = ifc->dd_data;
	struct itcp_session *sess = conn->sess;
	struct itcp_conn *c;
	bool other = false;
	long left;

	spin_lock_bh(&sess->lock);
	if (!conn->running) {
		spin_unlock_bh(&sess->lock);
		return -ENOTCONN;
	}
	list_for_each_entry(c, &sess->conns, node)
		if (c != conn && c->running && !c->draining && !READ_ONCE(c->xmit_dead))
			other = true;
	if (!other) {
		spin_unlock_bh(&sess->lock);
		return -EBUSY;
	}
	conn->draining = true;
	drain_requeue_locked(sess, conn);
	spin_unlock_bh(&sess->lock);

	left = wait_event_interruptible_timeout(sess->xmit_wait, conn_drained(sess, conn),
						(unsigned long)timeout * HZ);
	spin_lock_bh(&sess->lock);
	if (!conn->running) {
		left = -ENOTCONN;
	} else if (left <= 0) {
		conn->draining = false;	/* it goes on taking commands */
		left = left ? -EINTR : -ETIMEDOUT;
	}
	spin_unlock_bh(&sess->lock);
	return left < 0 ? left : 0;
}

/* The CmdSN the session's next command gets. */
static u32 itcp_cmdsn(struct iscsi_if_session *ifs)
{
	struct itcp_session *sess = ifs->dd_data;
	u32 cmdsn;

	spin_lock_bh(&sess->lock);
	cmdsn = sess->cmdsn;
	spin_unlock_bh(&sess->lock);
	return cmdsn;
}

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 11, 0)
/*
 * Pages go to TCP without a copy: with a data digest the page must not
 * change between the CRC and the transmission, so ask for stable pages.
 */
static int itcp_slave_configure(struct scsi_device *sdev)
{
	struct itcp_session *sess = shost_sess(sdev->host);
	struct itcp_conn *conn;
	bool datadgst = false;

	spin_lock_bh(&sess->lock);
	list_for_each_entry(conn, &sess->conns, node)
		if (conn->running && conn->datadgst)
			datadgst = true;
	spin_unlock_bh(&sess->lock);
	if (datadgst)
		blk_queue_flag_set(QUEUE_FLAG_STABLE_WRITES, sdev->request_queue);
	return 0;
}
#endif

static struct scsi_host_template itcp_sht = {
	.module			= THIS_MODULE,
	.name			= "iSCSI Initiator over TCP/IP",
	.proc_name		= "iscsi_tcp",
	.queuecommand		= itcp_queuecommand,
	.commit_rqs		= itcp_commit_rqs,
	.eh_abort_handler	= itcp_eh_abort,
	.eh_device_reset_handler = itcp_eh_device_reset,
	.eh_target_reset_handler = itcp_eh_target_reset,
	.change_queue_depth	= scsi_change_queue_depth,
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 11, 0)
	.slave_configure	= itcp_slave_configure,
#endif
	.can_queue		= 128,
	.this_id		= -1,
	.sg_tablesize		= 4096,
	.max_sectors		= 0xffff,
	.cmd_per_lun		= 32,
	.cmd_size		= sizeof(struct itcp_task),
	.track_queue_depth	= 1,
};

static struct iscsi_if_transport itcp_transport = {
	.name			= "tcp",
	.owner			= THIS_MODULE,
	.sht			= &itcp_sht,
	.session_size		= sizeof(struct itcp_session),
	.conn_size		= sizeof(struct itcp_conn),
	.create_session		= itcp_create_session,
	.destroy_session	= itcp_destroy_session,
	.create_conn		= itcp_create_conn,
	.destroy_conn		= itcp_destroy_conn,
	.bind_conn		= itcp_bind_conn,
	.start_conn		= itcp_start_conn,
	.stop_conn		= itcp_stop_conn,
	.set_param		= itcp_set_param,
	.send_pdu		= itcp_send_pdu,
	.get_stats		= itcp_get_stats,
	.drain_conn		= itcp_drain_conn,
	.cmdsn			= itcp_cmdsn,
	.max_conns		= ITCP_MAX_CONNS,
};

static int __init itcp_init(void)
{
	int err;

	/*
	 * Unbound, normal priority: a per-CPU WQ_HIGHPRI worker would preempt
	 * the submitter at every queuecommand.
	 */
	itcp_wq = alloc_workqueue("iscsi_tcp_xmit", WQ_UNBOUND | WQ_MEM_RECLAIM, 0);
	if (!itcp_wq)
		return -ENOMEM;
	err = iscsi_if_register_transport(&itcp_transport);
	if (err)
		destroy_workqueue(itcp_wq);
	return err;
}

static void __exit itcp_exit(void)
{
	iscsi_if_unregister_transport(&itcp_transport);
	destroy_workqueue(itcp_wq);
}

module_init(itcp_init);
module_exit(itcp_exit);

MODULE_DESCRIPTION("pyiscsi: iSCSI initiator TCP transport (data path)");
MODULE_LICENSE("GPL");
MODULE_VERSION(PYISCSI_VERSION);
MODULE_SOFTDEP("pre: crc32c");

// SPDX-License-Identifier: GPL-2.0
/*
 * iscsi_if: the control plane of the pyiscsi initiator in the kernel.
 *
 * A generic netlink family through which iscsid creates sessions (one
 * Scsi_Host each) and connections, hands over logged-in sockets to a
 * transport (iscsi_tcp), sets the negotiated parameters, starts, stops and
 * scans. Events (connection errors, PDUs the data path does not handle,
 * session state changes) go to the "events" multicast group.
 *
 * sysfs follows the in-kernel iSCSI transport class so that udev's path_id,
 * lsscsi and other tools read it unchanged:
 *   /sys/devices/platform/hostH/sessionS/iscsi_session/sessionS
 *   /sys/devices/platform/hostH/sessionS/connectionS:C/iscsi_connection/connectionS:C
 *   /sys/devices/platform/hostH/iscsi_host/hostH
 *   /sys/devices/platform/hostH/sessionS/targetH:0:0/...
 *
 * Locking: iscsi_if_mutex serialises the netlink commands, the recovery
 * timeout and transport (un)registration, and protects the session IDR and
 * each session's connection list. The slow parts of CREATE_SESSION and
 * DESTROY_SESSION (adding and removing the SCSI host and the sysfs devices)
 * and SCAN run without it, on a session that is not (or no longer) in the
 * IDR, or with a reference and its scan_lock. session->lock (a spinlock, taken from any
 * context) protects the session and connection states, the queue-blocked
 * flag and the parameter strings.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/ctype.h>
#include <linux/idr.h>
#include <linux/if.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <net/genetlink.h>
#include <scsi/scsi_device.h>
#include <scsi/scsi_host.h>
#include <scsi/scsi_transport.h>

#include "iscsi_if_kern.h"

#define ISCSI_IF_DEF_CMDS_MAX		128
#define ISCSI_IF_DEF_QUEUE_DEPTH	32
#define ISCSI_IF_MAX_CMDS		4096
#define ISCSI_IF_MAX_QUEUE_DEPTH	1024
#define ISCSI_IF_DEF_RECOVERY_TMO	120
#define ISCSI_IF_MAX_VALUE_LEN		255
#define ISCSI_IF_MAX_PDU		65000	/* a netlink attribute holds < 64 KiB */

static DEFINE_MUTEX(iscsi_if_mutex);
static LIST_HEAD(iscsi_if_transports);
static DEFINE_IDR(iscsi_if_sessions);
static struct workqueue_struct *iscsi_if_wq;
static struct genl_family iscsi_if_family;

static struct class iscsi_session_class;
static struct class iscsi_connection_class;
static struct class iscsi_host_class;

/* ---------------------------------------------------------------- params */

enum param_kind { P_STR, P_UINT, P_BOOL, P_ISID, P_DIGEST };

struct param_desc {
	enum param_kind kind;
	u32 min, max;		/* P_UINT; P_STR: max length */
	bool conn;		/* a connection parameter: CID required */
};

static const struct param_desc param_descs[__ISCSI_IF_PARAM_MAX] = {
	/* connection parameters */
	[ISCSI_IF_PARAM_MAX_RECV_DLENGTH] = {
		.kind = P_UINT, .min = 512, .max = 16777215, .conn = true,
	},
	[ISCSI_IF_PARAM_MAX_XMIT_DLENGTH] = {
		.kind = P_UINT, .min = 512, .max = 16777215, .conn = true,
	},
	[ISCSI_IF_PARAM_HDRDGST_EN] = {
		.kind = P_DIGEST, .conn = true,
	},
	[ISCSI_IF_PARAM_DATADGST_EN] = {
		.kind = P_DIGEST, .conn = true,
	},
	[ISCSI_IF_PARAM_CONN_ADDRESS] = {
		.kind = P_STR, .max = 63, .conn = true,
	},
	[ISCSI_IF_PARAM_CONN_PORT] = {
		.kind = P_UINT, .min = 0, .max = 65535, .conn = true,
	},
	[ISCSI_IF_PARAM_PERSISTENT_ADDRESS] = {
		.kind = P_STR, .max = 63, .conn = true,
	},
	[ISCSI_IF_PARAM_PERSISTENT_PORT] = {
		.kind = P_UINT, .min = 0, .max = 65535, .conn = true,
	},
	[ISCSI_IF_PARAM_PING_TMO] = {
		.kind = P_UINT, .min = 0, .max = 86400, .conn = true,
	},
	[ISCSI_IF_PARAM_RECV_TMO] = {
		.kind = P_UINT, .min = 0, .max = 86400, .conn = true,
	},
	/* session parameters */
	[ISCSI_IF_PARAM_TARGET_NAME] = {
		.kind = P_STR, .max = 223,
	},
	[ISCSI_IF_PARAM_TPGT] = {
		.kind = P_UINT, .min = 0, .max = 65535,
	},
	[ISCSI_IF_PARAM_INITIATOR_NAME] = {
		.kind = P_STR, .max = 223,
	},
	[ISCSI_IF_PARAM_TARGET_ALIAS] = {
		.kind = P_STR, .max = 255,
	},
	[ISCSI_IF_PARAM_IFACE_NAME] = {
		.kind = P_STR, .max = 63,
	},
	[ISCSI_IF_PARAM_ISID] = {
		.kind = P_ISID,
	},
	[ISCSI_IF_PARAM_TSIH] = {
		.kind = P_UINT, .min = 0, .max = 65535,
	},
	[ISCSI_IF_PARAM_INITIAL_R2T_EN] = {
		.kind = P_BOOL,
	},
	[ISCSI_IF_PARAM_IMM_DATA_EN] = {
		.kind = P_BOOL,
	},
	[ISCSI_IF_PARAM_FIRST_BURST] = {
		.kind = P_UINT, .min = 512, .max = 16777215,
	},
	[ISCSI_IF_PARAM_MAX_BURST] = {
		.kind = P_UINT, .min = 512, .max = 16777215,
	},
	[ISCSI_IF_PARAM_MAX_R2T] = {
		.kind = P_UINT, .min = 1, .max = 65535,
	},
	[ISCSI_IF_PARAM_PDU_INORDER_EN] = {
		.kind = P_BOOL,
	},
	[ISCSI_IF_PARAM_DATASEQ_INORDER_EN] = {
		.kind = P_BOOL,
	},
	[ISCSI_IF_PARAM_ERL] = {
		.kind = P_UINT, .min = 0, .max = 2,
	},
	[ISCSI_IF_PARAM_DEF_TIME2WAIT] = {
		.kind = P_UINT, .min = 0, .max = 3600,
	},
	[ISCSI_IF_PARAM_DEF_TIME2RETAIN] = {
		.kind = P_UINT, .min = 0, .max = 3600,
	},
	[ISCSI_IF_PARAM_RECOVERY_TMO] = {
		.kind = P_UINT, .min = 0, .max = 86400 * 365,
	},
	[ISCSI_IF_PARAM_ABORT_TMO] = {
		.kind = P_UINT, .min = 0, .max = 3600,
	},
	[ISCSI_IF_PARAM_LU_RESET_TMO] = {
		.kind = P_UINT, .min = 0, .max = 3600,
	},
	[ISCSI_IF_PARAM_TGT_RESET_TMO] = {
		.kind = P_UINT, .min = 0, .max = 3600,
	},
	[ISCSI_IF_PARAM_USERNAME] = {
		.kind = P_STR, .max = 255,
	},
	[ISCSI_IF_PARAM_USERNAME_IN] = {
		.kind = P_STR, .max = 255,
	},
	[ISCSI_IF_PARAM_NETDEV_NAME] = {
		.kind = P_STR, .max = IFNAMSIZ - 1,
	},
	[ISCSI_IF_PARAM_HWADDRESS] = {
		.kind = P_STR, .max = 63,
	},
};

static bool str_all_print(const char *v)
{
	for (; *v; v++)
		if (!isprint(*v))
			return false;
	return true;
}

static bool str_all_xdigit(const char *v)
{
	for (; *v; v++)
		if (!isxdigit(*v))
			return false;
	return true;
}

/*
 * Check a parameter's text and return it normalised in a new string:
 * numbers in decimal, booleans and digests as "0"/"1", ISID lower-case hex.
 */
static char *param_normalise(enum iscsi_if_param p, const char *v,
			     struct netlink_ext_ack *extack)
{
	const struct param_desc *d = &param_descs[p];
	size_t len = strlen(v);
	unsigned int u;

	switch (d->kind) {
	case P_STR:
		if (len > d->max) {
			NL_SET_ERR_MSG(extack, "parameter value too long");
			return ERR_PTR(-EINVAL);
		}
		if (!str_all_print(v)) {
			NL_SET_ERR_MSG(extack, "parameter value has unprintable characters");
			return ERR_PTR(-EINVAL);
		}
		return kstrdup(v, GFP_KERNEL) ?: ERR_PTR(-ENOMEM);
	case P_UINT:
		if (kstrtouint(v, 10, &u) || u < d->min || u > d->max) {
			NL_SET_ERR_MSG(extack, "parameter value is not a number in range");
			return ERR_PTR(-EINVAL);
		}
		return kasprintf(GFP_KERNEL, "%u", u) ?: ERR_PTR(-ENOMEM);
	case P_BOOL:
	case P_DIGEST:
		if (!strcmp(v, "1") || !strcasecmp(v, "Yes") ||
		    (d->kind == P_DIGEST && !strcasecmp(v, "CRC32C"))) {
			u = 1;
		} else if (!strcmp(v, "0") || !strcasecmp(v, "No") ||
			   (d->kind == P_DIGEST && !strcasecmp(v, "None"))) {
			u = 0;
		} else {
			NL_SET_ERR_MSG(extack, "parameter value must be 0 or 1");
			return ERR_PTR(-EINVAL);
		}
		return kstrdup(u ? "1" : "0", GFP_KERNEL) ?: ERR_PTR(-ENOMEM);
	case P_ISID:
		if (len != 12 || !str_all_xdigit(v)) {
			NL_SET_ERR_MSG(extack, "ISID must be 12 hex digits");
			return ERR_PTR(-EINVAL);
		}
		return kstrdup(v, GFP_KERNEL) ? : ERR_PTR(-ENOMEM);
	}
	return ERR_PTR(-EINVAL);
}

/* ----------------------------------------------------------------- sysfs */

/* Where a parameter's text lives: the connection's table for connection parameters. */
static char **param_slot(struct iscsi_if_session *s, struct iscsi_if_conn *c, int p)
{
	return param_descs[p].conn ? &c->params[p] : &s->params[p];
}

static ssize_t param_text_show(struct iscsi_if_session *s, struct iscsi_if_conn *c, int p,
			       char *buf)
{
	unsigned long flags;
	ssize_t n;
	char *v;

	spin_lock_irqsave(&s->lock, flags);
	v = *param_slot(s, c, p);
	n = sysfs_emit(buf, "%s\n", v ? v : "(null)");
	spin_unlock_irqrestore(&s->lock, flags);
	return n;
}

struct param_attr {
	struct device_attribute attr;
	int param;
};

#define to_param_attr(a) container_of(a, struct param_attr, attr)

static ssize_t sess_param_show(struct device *dev, struct device_attribute *attr,
			       char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, cdev);

	return param_text_show(s, NULL, to_param_attr(attr)->param, buf);
}

static ssize_t conn_param_show(struct device *dev, struct device_attribute *attr,
			       char *buf)
{
	struct iscsi_if_conn *c = container_of(dev, struct iscsi_if_conn, cdev);

	return param_text_show(c->session, c, to_param_attr(attr)->param, buf);
}

#define SESS_ATTR(_name, _p)						\
	static struct param_attr sess_attr_##_name = {			\
		.attr = __ATTR(_name, 0444, sess_param_show, NULL),	\
		.param = _p,						\
	}
#define CONN_ATTR(_name, _p)						\
	static struct param_attr conn_attr_##_name = {			\
		.attr = __ATTR(_name, 0444, conn_param_show, NULL),	\
		.param = _p,						\
	}

SESS_ATTR(targetname, ISCSI_IF_PARAM_TARGET_NAME);
SESS_ATTR(tpgt, ISCSI_IF_PARAM_TPGT);
SESS_ATTR(initiatorname, ISCSI_IF_PARAM_INITIATOR_NAME);
SESS_ATTR(targetalias, ISCSI_IF_PARAM_TARGET_ALIAS);
SESS_ATTR(ifacename, ISCSI_IF_PARAM_IFACE_NAME);
SESS_ATTR(isid, ISCSI_IF_PARAM_ISID);
SESS_ATTR(tsih, ISCSI_IF_PARAM_TSIH);
SESS_ATTR(initial_r2t, ISCSI_IF_PARAM_INITIAL_R2T_EN);
SESS_ATTR(immediate_data, ISCSI_IF_PARAM_IMM_DATA_EN);
SESS_ATTR(first_burst_len, ISCSI_IF_PARAM_FIRST_BURST);
SESS_ATTR(max_burst_len, ISCSI_IF_PARAM_MAX_BURST);
SESS_ATTR(max_outstanding_r2t, ISCSI_IF_PARAM_MAX_R2T);
SESS_ATTR(data_pdu_in_order, ISCSI_IF_PARAM_PDU_INORDER_EN);
SESS_ATTR(data_seq_in_order, ISCSI_IF_PARAM_DATASEQ_INORDER_EN);
SESS_ATTR(erl, ISCSI_IF_PARAM_ERL);
SESS_ATTR(def_time2wait, ISCSI_IF_PARAM_DEF_TIME2WAIT);
SESS_ATTR(def_time2retain, ISCSI_IF_PARAM_DEF_TIME2RETAIN);
SESS_ATTR(abort_tmo, ISCSI_IF_PARAM_ABORT_TMO);
SESS_ATTR(lu_reset_tmo, ISCSI_IF_PARAM_LU_RESET_TMO);
SESS_ATTR(tgt_reset_tmo, ISCSI_IF_PARAM_TGT_RESET_TMO);
SESS_ATTR(username, ISCSI_IF_PARAM_USERNAME);
SESS_ATTR(username_in, ISCSI_IF_PARAM_USERNAME_IN);

static const char *session_state_name(int state)
{
	switch (state) {
	case ISCSI_IF_SESSION_LOGGED_IN:
		return "LOGGED_IN";
	case ISCSI_IF_SESSION_FAILED:
		return "FAILED";
	default:
		return "FREE";
	}
}

static ssize_t state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, cdev);

	return sysfs_emit(buf, "%s\n", session_state_name(READ_ONCE(s->state)));
}
static DEVICE_ATTR_RO(state);

static ssize_t recovery_tmo_show(struct device *dev, struct device_attribute *attr,
				 char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, cdev);

	return sysfs_emit(buf, "%u\n", READ_ONCE(s->recovery_tmo));
}

/*
 * Writable as in the in-kernel transport class: multipathd sets its
 * fast_io_fail_tmo here. It applies from the next time the session fails;
 * iscsid does not set it again when it recovers the session.
 */
static ssize_t recovery_tmo_store(struct device *dev, struct device_attribute *attr,
				  const char *buf, size_t count)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, cdev);
	const struct param_desc *d = &param_descs[ISCSI_IF_PARAM_RECOVERY_TMO];
	unsigned int tmo;

	if (kstrtouint(buf, 10, &tmo) || tmo < d->min || tmo > d->max)
		return -EINVAL;
	WRITE_ONCE(s->recovery_tmo, min(tmo, ISCSI_IF_MAX_RECOVERY_TMO));
	return count;
}
static DEVICE_ATTR_RW(recovery_tmo);

/* Secrets never reach the kernel; the in-kernel class prints "(null)" too. */
static ssize_t null_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "(null)\n");
}

static struct device_attribute dev_attr_password = __ATTR(password, 0444, null_show, NULL);
static struct device_attribute dev_attr_password_in = __ATTR(password_in, 0444, null_show, NULL);

static ssize_t creator_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, cdev);

	return sysfs_emit(buf, "%d\n", s->creator);
}
static DEVICE_ATTR_RO(creator);

static ssize_t target_id_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "0\n");
}
static DEVICE_ATTR_RO(target_id);

static struct attribute *iscsi_session_attrs[] = {
	&sess_attr_targetname.attr.attr,
	&sess_attr_tpgt.attr.attr,
	&sess_attr_initiatorname.attr.attr,
	&sess_attr_targetalias.attr.attr,
	&sess_attr_ifacename.attr.attr,
	&sess_attr_isid.attr.attr,
	&sess_attr_tsih.attr.attr,
	&sess_attr_initial_r2t.attr.attr,
	&sess_attr_immediate_data.attr.attr,
	&sess_attr_first_burst_len.attr.attr,
	&sess_attr_max_burst_len.attr.attr,
	&sess_attr_max_outstanding_r2t.attr.attr,
	&sess_attr_data_pdu_in_order.attr.attr,
	&sess_attr_data_seq_in_order.attr.attr,
	&sess_attr_erl.attr.attr,
	&sess_attr_def_time2wait.attr.attr,
	&sess_attr_def_time2retain.attr.attr,
	&sess_attr_abort_tmo.attr.attr,
	&sess_attr_lu_reset_tmo.attr.attr,
	&sess_attr_tgt_reset_tmo.attr.attr,
	&sess_attr_username.attr.attr,
	&sess_attr_username_in.attr.attr,
	&dev_attr_password.attr,
	&dev_attr_password_in.attr,
	&dev_attr_state.attr,
	&dev_attr_recovery_tmo.attr,
	&dev_attr_creator.attr,
	&dev_attr_target_id.attr,
	NULL,
};
ATTRIBUTE_GROUPS(iscsi_session);

CONN_ATTR(address, ISCSI_IF_PARAM_CONN_ADDRESS);
CONN_ATTR(port, ISCSI_IF_PARAM_CONN_PORT);
CONN_ATTR(persistent_address, ISCSI_IF_PARAM_PERSISTENT_ADDRESS);
CONN_ATTR(persistent_port, ISCSI_IF_PARAM_PERSISTENT_PORT);
CONN_ATTR(max_recv_dlength, ISCSI_IF_PARAM_MAX_RECV_DLENGTH);
CONN_ATTR(max_xmit_dlength, ISCSI_IF_PARAM_MAX_XMIT_DLENGTH);
CONN_ATTR(header_digest, ISCSI_IF_PARAM_HDRDGST_EN);
CONN_ATTR(data_digest, ISCSI_IF_PARAM_DATADGST_EN);
CONN_ATTR(ping_tmo, ISCSI_IF_PARAM_PING_TMO);
CONN_ATTR(recv_tmo, ISCSI_IF_PARAM_RECV_TMO);

static const char *conn_state_name(int state)
{
	switch (state) {
	case ISCSI_IF_CONN_BOUND:
		return "bound";
	case ISCSI_IF_CONN_STARTED:
		return "up";
	case ISCSI_IF_CONN_FAILED:
		return "failed";
	default:
		return "down";
	}
}

static ssize_t conn_state_show(struct device *dev, struct device_attribute *attr,
			       char *buf)
{
	struct iscsi_if_conn *c = container_of(dev, struct iscsi_if_conn, cdev);

	return sysfs_emit(buf, "%s\n", conn_state_name(READ_ONCE(c->state)));
}

static struct device_attribute conn_attr_state = __ATTR(state, 0444, conn_state_show, NULL);

static struct attribute *iscsi_connection_attrs[] = {
	&conn_attr_address.attr.attr,
	&conn_attr_port.attr.attr,
	&conn_attr_persistent_address.attr.attr,
	&conn_attr_persistent_port.attr.attr,
	&conn_attr_max_recv_dlength.attr.attr,
	&conn_attr_max_xmit_dlength.attr.attr,
	&conn_attr_header_digest.attr.attr,
	&conn_attr_data_digest.attr.attr,
	&conn_attr_ping_tmo.attr.attr,
	&conn_attr_recv_tmo.attr.attr,
	&conn_attr_state.attr,
	NULL,
};
ATTRIBUTE_GROUPS(iscsi_connection);

static ssize_t host_initiatorname_show(struct device *dev,
				       struct device_attribute *attr, char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, hdev);

	return param_text_show(s, NULL, ISCSI_IF_PARAM_INITIATOR_NAME, buf);
}

static struct device_attribute host_attr_initiatorname =
	__ATTR(initiatorname, 0444, host_initiatorname_show, NULL);

static ssize_t host_netdev_show(struct device *dev, struct device_attribute *attr,
				char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, hdev);

	return param_text_show(s, NULL, ISCSI_IF_PARAM_NETDEV_NAME, buf);
}

static struct device_attribute host_attr_netdev =
	__ATTR(netdev, 0444, host_netdev_show, NULL);

static ssize_t host_hwaddress_show(struct device *dev, struct device_attribute *attr,
				   char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, hdev);

	return param_text_show(s, NULL, ISCSI_IF_PARAM_HWADDRESS, buf);
}

static struct device_attribute host_attr_hwaddress =
	__ATTR(hwaddress, 0444, host_hwaddress_show, NULL);

static ssize_t host_ipaddress_show(struct device *dev, struct device_attribute *attr,
				   char *buf)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, hdev);
	unsigned long flags;
	ssize_t n;

	spin_lock_irqsave(&s->lock, flags);
	n = sysfs_emit(buf, "%s\n", s->host_ipaddress[0] ? s->host_ipaddress : "(null)");
	spin_unlock_irqrestore(&s->lock, flags);
	return n;
}

static struct device_attribute host_attr_ipaddress =
	__ATTR(ipaddress, 0444, host_ipaddress_show, NULL);

/**
 * iscsi_if_set_host_ipaddress - set the address iscsi_host/hostM/ipaddress shows
 * @session: the session
 * @addr: our end of the connection, as text
 *
 * Context: any context.
 */
void iscsi_if_set_host_ipaddress(struct iscsi_if_session *session, const char *addr)
{
	unsigned long flags;

	spin_lock_irqsave(&session->lock, flags);
	strscpy(session->host_ipaddress, addr, sizeof(session->host_ipaddress));
	spin_unlock_irqrestore(&session->lock, flags);
}
EXPORT_SYMBOL_GPL(iscsi_if_set_host_ipaddress);

static struct attribute *iscsi_host_attrs[] = {
	&host_attr_initiatorname.attr,
	&host_attr_netdev.attr,
	&host_attr_hwaddress.attr,
	&host_attr_ipaddress.attr,
	NULL,
};
ATTRIBUTE_GROUPS(iscsi_host);

static struct class iscsi_session_class = {
	.name = "iscsi_session",
	.dev_groups = iscsi_session_groups,
};

static struct class iscsi_connection_class = {
	.name = "iscsi_connection",
	.dev_groups = iscsi_connection_groups,
};

static struct class iscsi_host_class = {
	.name = "iscsi_host",
	.dev_groups = iscsi_host_groups,
};

/* -------------------------------------------------------------- events */

static void event_send(struct sk_buff *skb, void *hdr, gfp_t gfp)
{
	genlmsg_end(skb, hdr);
	/* -ESRCH (nobody listening) is normal: sessions outlive iscsid. */
	genlmsg_multicast(&iscsi_if_family, skb, 0, 0, gfp);
}

static void event_simple(enum iscsi_if_cmd cmd, u32 sid, int has_cid, u32 cid,
			 u32 attr, u32 val, gfp_t gfp)
{
	struct sk_buff *skb;
	void *hdr;

	skb = genlmsg_new(NLMSG_GOODSIZE, gfp);
	if (!skb)
		return;
	hdr = genlmsg_put(skb, 0, 0, &iscsi_if_family, 0, cmd);
	if (!hdr)
		goto fail;
	if (nla_put_u32(skb, ISCSI_IF_ATTR_SID, sid))
		goto fail;
	if (has_cid && nla_put_u32(skb, ISCSI_IF_ATTR_CID, cid))
		goto fail;
	if (attr && nla_put_u32(skb, attr, val))
		goto fail;
	event_send(skb, hdr, gfp);
	return;
fail:
	nlmsg_free(skb);
}

static void session_state_event(struct iscsi_if_session *s, int state)
{
	event_simple(ISCSI_IF_EVENT_SESSION_STATE, s->sid, 0, 0,
		     ISCSI_IF_ATTR_STATE, state, GFP_KERNEL);
}

/**
 * iscsi_if_recv_pdu - pass a PDU the data path does not handle to iscsid
 * @conn: the connection it came on
 * @hdr: its BHS and AHS
 * @hlen: bytes at @hdr
 * @data: its data segment, without padding or digest
 * @dlen: bytes at @data
 *
 * Sends a RECV_PDU event to the events multicast group.
 *
 * Context: any context (allocates with GFP_ATOMIC).
 * Return: 0, -EMSGSIZE when the PDU does not fit in an event, -ENOMEM.
 */
int iscsi_if_recv_pdu(struct iscsi_if_conn *conn, const void *hdr, size_t hlen,
		      const void *data, size_t dlen)
{
	struct sk_buff *skb;
	struct nlattr *nla;
	void *gh;

	if (hlen + dlen > ISCSI_IF_MAX_PDU)
		return -EMSGSIZE;
	skb = genlmsg_new(nla_total_size(hlen + dlen) + 64, GFP_ATOMIC);
	if (!skb)
		return -ENOMEM;
	gh = genlmsg_put(skb, 0, 0, &iscsi_if_family, 0, ISCSI_IF_EVENT_RECV_PDU);
	if (!gh)
		goto fail;
	if (nla_put_u32(skb, ISCSI_IF_ATTR_SID, conn->session->sid) ||
	    nla_put_u32(skb, ISCSI_IF_ATTR_CID, conn->cid))
		goto fail;
	nla = nla_reserve(skb, ISCSI_IF_ATTR_PDU, hlen + dlen);
	if (!nla)
		goto fail;
	memcpy(nla_data(nla), hdr, hlen);
	if (dlen)
		memcpy((u8 *)nla_data(nla) + hlen, data, dlen);
	event_send(skb, gh, GFP_ATOMIC);
	return 0;
fail:
	nlmsg_free(skb);
	return -EMSGSIZE;
}
EXPORT_SYMBOL_GPL(iscsi_if_recv_pdu);

/* ------------------------------------------------- session state machine */

/**
 * iscsi_if_session_state - the session's state as the data path sees it
 * @session: the session
 *
 * Context: any context; @session->state_wq is woken when it changes.
 * Return: an enum iscsi_if_session_state.
 */
int iscsi_if_session_state(struct iscsi_if_session *session)
{
	return READ_ONCE(session->state);
}
EXPORT_SYMBOL_GPL(iscsi_if_session_state);

/* The recovery work holds a session reference while it is queued. */
static void recovery_arm(struct iscsi_if_session *s)
{
	get_device(&s->dev);
	if (!queue_delayed_work(iscsi_if_wq, &s->recovery_work,
				(unsigned long)s->recovery_tmo * HZ))
		put_device(&s->dev);
}

static void recovery_cancel(struct iscsi_if_session *s)
{
	if (cancel_delayed_work(&s->recovery_work))
		put_device(&s->dev);
}

/* Connection lost: block the queue and start the replacement timer. */
static void session_fail(struct iscsi_if_session *s)
{
	unsigned long flags;
	bool changed = false;

	spin_lock_irqsave(&s->lock, flags);
	if (!s->removing && s->state == ISCSI_IF_SESSION_LOGGED_IN) {
		WRITE_ONCE(s->state, ISCSI_IF_SESSION_FAILED);
		if (!s->blocked) {
			s->blocked = true;
			scsi_block_requests(s->shost);
		}
		changed = true;
	}
	spin_unlock_irqrestore(&s->lock, flags);
	if (changed) {
		wake_up_all(&s->state_wq);
		recovery_arm(s);
		session_state_event(s, ISCSI_IF_SESSION_FAILED);
	}
}

static void session_unblock(struct iscsi_if_session *s)
{
	unsigned long flags;
	bool unblock;

	spin_lock_irqsave(&s->lock, flags);
	unblock = s->blocked;
	s->blocked = false;
	spin_unlock_irqrestore(&s->lock, flags);
	if (unblock)
		scsi_unblock_requests(s->shost);
}

static int session_set_state(struct iscsi_if_session *s, int state)
{
	unsigned long flags;
	int old;

	spin_lock_irqsave(&s->lock, flags);
	old = s->state;
	WRITE_ONCE(s->state, state);
	spin_unlock_irqrestore(&s->lock, flags);
	wake_up_all(&s->state_wq);
	return old;
}

static void session_up(struct iscsi_if_session *s)
{
	int old;

	recovery_cancel(s);
	old = session_set_state(s, ISCSI_IF_SESSION_LOGGED_IN);
	session_unblock(s);
	if (old != ISCSI_IF_SESSION_LOGGED_IN)
		session_state_event(s, ISCSI_IF_SESSION_LOGGED_IN);
}

/*
 * Logout/teardown (STOP_CONN TERM) with no other connection left: commands
 * fail fast from now on instead of waiting for a connection.
 */
static void session_terminate(struct iscsi_if_session *s)
{
	struct iscsi_if_conn *c;
	int old;

	list_for_each_entry(c, &s->conns, node)
		if (c->state == ISCSI_IF_CONN_STARTED || c->state == ISCSI_IF_CONN_FAILED)
			return;
	recovery_cancel(s);
	old = session_set_state(s, ISCSI_IF_SESSION_FREE);
	session_unblock(s);
	if (old != ISCSI_IF_SESSION_FREE)
		session_state_event(s, ISCSI_IF_SESSION_FREE);
}

static void conn_set_state(struct iscsi_if_conn *c, int state)
{
	unsigned long flags;

	spin_lock_irqsave(&c->session->lock, flags);
	WRITE_ONCE(c->state, state);
	spin_unlock_irqrestore(&c->session->lock, flags);
	wake_up_all(&c->session->state_wq);
}

static void conn_stop(struct iscsi_if_conn *c, int flag)
{
	if (c->state == ISCSI_IF_CONN_CREATED || c->state == ISCSI_IF_CONN_STOPPED)
		return;
	c->session->transport->stop_conn(c, flag);
	conn_set_state(c, ISCSI_IF_CONN_STOPPED);
}

static void recovery_work_fn(struct work_struct *work)
{
	struct iscsi_if_session *s =
		container_of(to_delayed_work(work), struct iscsi_if_session, recovery_work);
	struct iscsi_if_conn *c;
	bool expired = false;

	mutex_lock(&iscsi_if_mutex);
	if (!s->removing && READ_ONCE(s->state) == ISCSI_IF_SESSION_FAILED) {
		pr_info("session%u: recovery timed out after %u s, failing I/O\n",
			s->sid, s->recovery_tmo);
		list_for_each_entry(c, &s->conns, node)
			conn_stop(c, ISCSI_IF_STOP_TERM);
		session_set_state(s, ISCSI_IF_SESSION_FREE);
		session_unblock(s);
		expired = true;
	}
	mutex_unlock(&iscsi_if_mutex);
	if (expired)
		session_state_event(s, ISCSI_IF_SESSION_FREE);
	put_device(&s->dev);
}

static void conn_err_work_fn(struct work_struct *work)
{
	struct iscsi_if_conn *c = container_of(work, struct iscsi_if_conn, err_work);
	struct iscsi_if_session *s = c->session;
	unsigned long flags;
	bool running;

	spin_lock_irqsave(&s->lock, flags);
	running = c->state == ISCSI_IF_CONN_STARTED;
	if (running)
		WRITE_ONCE(c->state, ISCSI_IF_CONN_FAILED);
	spin_unlock_irqrestore(&s->lock, flags);
	/* Raised just before a stop: iscsid already acted on it. */
	if (running) {
		wake_up_all(&s->state_wq);
		event_simple(ISCSI_IF_EVENT_CONN_ERROR, s->sid, 1, c->cid,
			     ISCSI_IF_ATTR_ERROR, c->error, GFP_KERNEL);
		session_fail(s);
	}
	put_device(&c->dev);
}

/**
 * iscsi_if_conn_error - report that a connection failed
 * @conn: the connection
 * @err: why
 *
 * The first call after a START_CONN sends a CONN_ERROR event to iscsid and
 * fails the session (its queue blocks, the recovery timer starts) from a
 * work item; later calls are ignored until the connection starts again.
 *
 * Context: any context.
 */
void iscsi_if_conn_error(struct iscsi_if_conn *conn, enum iscsi_if_err err)
{
	if (test_and_set_bit(ISCSI_IF_CONN_F_ERROR, &conn->flags))
		return;
	conn->error = err;
	pr_info("connection%u:%u: error %d\n", conn->session->sid, conn->cid, err);
	get_device(&conn->dev);
	if (!queue_work(iscsi_if_wq, &conn->err_work))
		put_device(&conn->dev);
}
EXPORT_SYMBOL_GPL(iscsi_if_conn_error);

/* ------------------------------------------------------------ transports */

static struct iscsi_if_transport *transport_find(const char *name)
{
	struct iscsi_if_transport *t;

	list_for_each_entry(t, &iscsi_if_transports, list)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

/**
 * iscsi_if_register_transport - make a transport available to CREATE_SESSION
 * @t: the transport; name, sht, bind_conn, start_conn, stop_conn and
 *	send_pdu are required
 *
 * Context: process context.
 * Return: 0, -EINVAL when a required member is missing, -EEXIST when a
 * transport of that name is registered already.
 */
int iscsi_if_register_transport(struct iscsi_if_transport *t)
{
	int err = 0;

	if (!t->name || !t->sht || !t->bind_conn || !t->start_conn ||
	    !t->stop_conn || !t->send_pdu)
		return -EINVAL;
	mutex_lock(&iscsi_if_mutex);
	if (transport_find(t->name))
		err = -EEXIST;
	else
		list_add_tail(&t->list, &iscsi_if_transports);
	mutex_unlock(&iscsi_if_mutex);
	if (!err)
		pr_info("transport %s registered\n", t->name);
	return err;
}
EXPORT_SYMBOL_GPL(iscsi_if_register_transport);

/**
 * iscsi_if_unregister_transport - remove a transport
 * @t: a registered transport
 *
 * Called from the transport's module exit: its sessions pin the module, so
 * none exists any more.
 *
 * Context: process context.
 */
void iscsi_if_unregister_transport(struct iscsi_if_transport *t)
{
	mutex_lock(&iscsi_if_mutex);
	list_del(&t->list);
	mutex_unlock(&iscsi_if_mutex);
	pr_info("transport %s unregistered\n", t->name);
}
EXPORT_SYMBOL_GPL(iscsi_if_unregister_transport);

/* ------------------------------------------------------ object lifetimes */

/*
 * A session is one allocation with three devices in it: dev ("sessionN")
 * owns it, and the class devices cdev and hdev each hold a reference on dev
 * from their initialisation to their release. The session is freed when the
 * last of the three goes. A connection: dev owns it, cdev holds a reference
 * on dev, and dev one on the session's dev.
 */
static void session_release(struct device *dev)
{
	struct iscsi_if_session *s = container_of(dev, struct iscsi_if_session, dev);
	struct module *owner = s->transport->owner;
	int i;

	for (i = 0; i < __ISCSI_IF_PARAM_MAX; i++)
		kfree(s->params[i]);
	if (s->shost)
		scsi_host_put(s->shost);
	kfree(s);
	module_put(owner);
}

static void session_cdev_release(struct device *dev)
{
	put_device(&container_of(dev, struct iscsi_if_session, cdev)->dev);
}

static void session_hdev_release(struct device *dev)
{
	put_device(&container_of(dev, struct iscsi_if_session, hdev)->dev);
}

static void conn_release(struct device *dev)
{
	struct iscsi_if_conn *c = container_of(dev, struct iscsi_if_conn, dev);
	struct iscsi_if_session *s = c->session;
	int i;

	for (i = 0; i < __ISCSI_IF_PARAM_MAX; i++)
		kfree(c->params[i]);
	kfree(c);
	put_device(&s->dev);
}

static void conn_cdev_release(struct device *dev)
{
	put_device(&container_of(dev, struct iscsi_if_conn, cdev)->dev);
}

/* A connection of s, not yet known to the transport or sysfs: put both devices to free it. */
static struct iscsi_if_conn *conn_alloc(struct iscsi_if_session *s, u32 cid)
{
	struct iscsi_if_conn *c;

	c = kzalloc(sizeof(*c) + s->transport->conn_size, GFP_KERNEL);
	if (!c)
		return NULL;
	c->session = s;
	c->cid = cid;
	c->dd_data = c + 1;
	c->state = ISCSI_IF_CONN_CREATED;
	INIT_WORK(&c->err_work, conn_err_work_fn);
	INIT_LIST_HEAD(&c->node);
	get_device(&s->dev);
	device_initialize(&c->dev);
	c->dev.release = conn_release;
	c->dev.parent = &s->dev;
	dev_set_name(&c->dev, "connection%u:%u", s->sid, cid);
	device_initialize(&c->cdev);
	c->cdev.release = conn_cdev_release;
	get_device(&c->dev);
	c->cdev.class = &iscsi_connection_class;
	c->cdev.parent = &c->dev;
	dev_set_name(&c->cdev, "connection%u:%u", s->sid, cid);
	return c;
}

/*
 * A session of transport t (whose module the caller holds: the session's
 * release puts it), its devices initialised so that session_teardown() can
 * always put them.
 */
static struct iscsi_if_session *session_alloc(struct iscsi_if_transport *t)
{
	struct iscsi_if_session *s;

	s = kzalloc(sizeof(*s) + t->session_size, GFP_KERNEL);
	if (!s)
		return NULL;
	s->transport = t;
	s->dd_data = s + 1;
	s->state = ISCSI_IF_SESSION_FREE;	/* LOGGED_IN from the first START_CONN */
	s->recovery_tmo = ISCSI_IF_DEF_RECOVERY_TMO;
	s->creator = task_tgid_vnr(current);
	spin_lock_init(&s->lock);
	mutex_init(&s->scan_lock);
	init_waitqueue_head(&s->state_wq);
	INIT_LIST_HEAD(&s->conns);
	INIT_DELAYED_WORK(&s->recovery_work, recovery_work_fn);
	device_initialize(&s->dev);
	s->dev.release = session_release;
	device_initialize(&s->cdev);
	s->cdev.release = session_cdev_release;
	get_device(&s->dev);
	device_initialize(&s->hdev);
	s->hdev.release = session_hdev_release;
	get_device(&s->dev);
	return s;
}

static struct iscsi_if_session *session_get_locked(u32 sid)
{
	return idr_find(&iscsi_if_sessions, sid);
}

static struct iscsi_if_conn *conn_find(struct iscsi_if_session *s, u32 cid)
{
	struct iscsi_if_conn *c;

	list_for_each_entry(c, &s->conns, node)
		if (c->cid == cid)
			return c;
	return NULL;
}

static void conn_destroy(struct iscsi_if_conn *c)
{
	struct iscsi_if_session *s = c->session;

	conn_stop(c, ISCSI_IF_STOP_TERM);
	if (cancel_work_sync(&c->err_work))
		put_device(&c->dev);
	if (s->transport->destroy_conn)
		s->transport->destroy_conn(c);
	list_del(&c->node);
	if (c->cdev_added)
		device_del(&c->cdev);
	put_device(&c->cdev);
	if (c->dev_added)
		device_del(&c->dev);
	put_device(&c->dev);
}

/*
 * Under iscsi_if_mutex: commands cannot find the session any more (its
 * number stays taken until session_teardown(), so that no new session gets
 * the sysfs names still in use), I/O fails fast, the connections are gone.
 */
static void session_unpublish(struct iscsi_if_session *s)
{
	struct iscsi_if_conn *c, *tmp;
	unsigned long flags;

	lockdep_assert_held(&iscsi_if_mutex);
	idr_replace(&iscsi_if_sessions, NULL, s->sid);
	spin_lock_irqsave(&s->lock, flags);
	s->removing = true;
	WRITE_ONCE(s->state, ISCSI_IF_SESSION_FREE);
	spin_unlock_irqrestore(&s->lock, flags);
	wake_up_all(&s->state_wq);
	recovery_cancel(s);

	/* Fail outstanding I/O first, so a running scan or sd's final
	 * SYNCHRONIZE CACHE cannot wait on a dead connection.
	 */
	list_for_each_entry_safe(c, tmp, &s->conns, node)
		conn_destroy(c);
	session_unblock(s);
}

/*
 * Without iscsi_if_mutex (removing the SCSI host waits for the block layer
 * and udev; other sessions' commands go on meanwhile), after
 * session_unpublish(). Drops the IDR's reference.
 */
static void session_teardown(struct iscsi_if_session *s)
{
	u32 sid = s->sid;

	mutex_lock(&s->scan_lock);	/* a scan in progress ends now */
	mutex_unlock(&s->scan_lock);

	if (s->dev_added)
		scsi_remove_target(&s->dev);
	if (s->hdev_added)
		device_del(&s->hdev);
	put_device(&s->hdev);
	if (s->cdev_added)
		device_del(&s->cdev);
	put_device(&s->cdev);
	if (s->dev_added)
		device_del(&s->dev);
	if (s->host_added)
		scsi_remove_host(s->shost);
	if (s->tsess_created && s->transport->destroy_session)
		s->transport->destroy_session(s);
	mutex_lock(&iscsi_if_mutex);
	idr_remove(&iscsi_if_sessions, sid);
	mutex_unlock(&iscsi_if_mutex);
	event_simple(ISCSI_IF_EVENT_SESSION_DESTROYED, sid, 0, 0, 0, 0, GFP_KERNEL);
	pr_info("session%u destroyed\n", sid);
	put_device(&s->dev);
}

/* ---------------------------------------------------- netlink commands */

static struct iscsi_if_session *req_session(struct genl_info *info)
{
	struct iscsi_if_session *s;

	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_SID))
		return ERR_PTR(-EINVAL);
	s = session_get_locked(nla_get_u32(info->attrs[ISCSI_IF_ATTR_SID]));
	if (!s) {
		GENL_SET_ERR_MSG(info, "no such session");
		return ERR_PTR(-ENOENT);
	}
	return s;
}

static struct iscsi_if_conn *req_conn(struct genl_info *info,
				      struct iscsi_if_session **sp)
{
	struct iscsi_if_session *s = req_session(info);
	struct iscsi_if_conn *c;

	if (IS_ERR(s))
		return ERR_CAST(s);
	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_CID))
		return ERR_PTR(-EINVAL);
	c = conn_find(s, nla_get_u32(info->attrs[ISCSI_IF_ATTR_CID]));
	if (!c) {
		GENL_SET_ERR_MSG(info, "no such connection");
		return ERR_PTR(-ENOENT);
	}
	*sp = s;
	return c;
}

static struct sk_buff *reply_new(struct genl_info *info, u8 cmd, void **hdr,
				 size_t size)
{
	struct sk_buff *skb = genlmsg_new(size, GFP_KERNEL);

	if (!skb)
		return NULL;
	*hdr = genlmsg_put_reply(skb, info, &iscsi_if_family, 0, cmd);
	if (!*hdr) {
		nlmsg_free(skb);
		return NULL;
	}
	return skb;
}

static int reply_send(struct sk_buff *skb, void *hdr, struct genl_info *info)
{
	genlmsg_end(skb, hdr);
	return genlmsg_reply(skb, info);
}

static int session_fill(struct sk_buff *skb, struct iscsi_if_session *s)
{
	if (nla_put_u32(skb, ISCSI_IF_ATTR_SID, s->sid) ||
	    nla_put_u32(skb, ISCSI_IF_ATTR_HOST_NO, s->shost->host_no) ||
	    nla_put_u32(skb, ISCSI_IF_ATTR_STATE, READ_ONCE(s->state)) ||
	    nla_put_string(skb, ISCSI_IF_ATTR_TRANSPORT, s->transport->name) ||
	    nla_put_u32(skb, ISCSI_IF_ATTR_CMDS_MAX, s->shost->can_queue) ||
	    nla_put_u32(skb, ISCSI_IF_ATTR_QUEUE_DEPTH, s->shost->cmd_per_lun))
		return -EMSGSIZE;
	if (s->transport->cmdsn && s->tsess_created &&
	    nla_put_u32(skb, ISCSI_IF_ATTR_CMDSN, s->transport->cmdsn(s)))
		return -EMSGSIZE;
	return 0;
}

/**
 * session_scan - scan the session's target for one LUN or all of them
 * @s: the session
 * @lun: the LUN, or SCAN_WILD_CARD
 * @rescan: SCSI_SCAN_INITIAL (our own SCAN command) or SCSI_SCAN_MANUAL
 *
 * The target sits under the session device, as the in-kernel transport
 * class places it (hostH/sessionS/targetH:0:0), so that udev's path_id and
 * tools that walk the session directory find its disks. s->scan_lock keeps
 * the scan and DESTROY_SESSION apart.
 *
 * Return: 0, or -ENOTCONN when the session is not logged in.
 */
static int session_scan(struct iscsi_if_session *s, u64 lun,
			enum scsi_scan_mode rescan)
{
	int err = 0;

	mutex_lock(&s->scan_lock);
	if (s->removing || READ_ONCE(s->state) != ISCSI_IF_SESSION_LOGGED_IN)
		err = -ENOTCONN;
	else
		scsi_scan_target(&s->dev, 0, 0, lun, rescan);
	mutex_unlock(&s->scan_lock);
	return err;
}

/*
 * A write to /sys/class/scsi_host/hostH/scan ("C T L", "-" for any).
 * Without this hook the midlayer would scan under the SCSI host itself and
 * the disks would appear outside the session directory, where os-brick and
 * udev do not look for them. Channel and target id are always 0 here: any
 * other value matches nothing, as in the in-kernel transport class.
 */
static int iscsi_if_user_scan(struct Scsi_Host *shost, uint channel, uint id,
			      u64 lun)
{
	if ((channel != SCAN_WILD_CARD && channel != 0) ||
	    (id != SCAN_WILD_CARD && id != 0))
		return 0;
	return session_scan(iscsi_if_shost_session(shost), lun,
			    SCSI_SCAN_MANUAL);
}

static struct scsi_transport_template iscsi_if_scsi_transport = {
	.user_scan = iscsi_if_user_scan,
};

/* On error the caller undoes what was done with session_teardown(). */
static int session_setup(struct iscsi_if_session *s, u32 cmds_max, u32 qdepth)
{
	struct iscsi_if_transport *t = s->transport;
	struct Scsi_Host *shost;
	int err;

	shost = scsi_host_alloc(t->sht, sizeof(struct iscsi_if_session *));
	if (!shost)
		return -ENOMEM;
	*(struct iscsi_if_session **)shost_priv(shost) = s;
	shost->can_queue = cmds_max;
	shost->cmd_per_lun = min(qdepth, cmds_max);
	shost->max_id = 1;
	shost->max_channel = 0;
	shost->max_lun = 512;
	shost->max_cmd_len = SCSI_MAX_VARLEN_CDB_SIZE;
	shost->nr_hw_queues = 1;
	shost->transportt = &iscsi_if_scsi_transport;
	s->shost = shost;

	if (t->create_session) {
		err = t->create_session(s);
		if (err)
			return err;
	}
	s->tsess_created = true;
	err = scsi_add_host(shost, NULL);
	if (err)
		return err;
	s->host_added = true;

	s->dev.parent = &shost->shost_gendev;
	err = device_add(&s->dev);
	if (err)
		return err;
	s->dev_added = true;

	s->cdev.class = &iscsi_session_class;
	s->cdev.parent = &s->dev;
	dev_set_name(&s->cdev, "session%u", s->sid);
	err = device_add(&s->cdev);
	if (err)
		return err;
	s->cdev_added = true;

	s->hdev.class = &iscsi_host_class;
	s->hdev.parent = &shost->shost_gendev;
	dev_set_name(&s->hdev, "host%u", shost->host_no);
	err = device_add(&s->hdev);
	if (err)
		return err;
	s->hdev_added = true;
	return 0;
}

static int cmd_create_session(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_transport *t;
	struct iscsi_if_session *s;
	char name[16];
	u32 cmds_max = ISCSI_IF_DEF_CMDS_MAX, qdepth = ISCSI_IF_DEF_QUEUE_DEPTH;
	struct sk_buff *msg;
	void *hdr;
	int id, err;

	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_TRANSPORT))
		return -EINVAL;
	nla_strscpy(name, info->attrs[ISCSI_IF_ATTR_TRANSPORT], sizeof(name));
	if (info->attrs[ISCSI_IF_ATTR_CMDS_MAX])
		cmds_max = nla_get_u32(info->attrs[ISCSI_IF_ATTR_CMDS_MAX]);
	if (info->attrs[ISCSI_IF_ATTR_QUEUE_DEPTH])
		qdepth = nla_get_u32(info->attrs[ISCSI_IF_ATTR_QUEUE_DEPTH]);

	mutex_lock(&iscsi_if_mutex);
	t = transport_find(name);
	if (!t) {
		GENL_SET_ERR_MSG(info, "no such transport (is its module loaded?)");
		err = -ENOENT;
		goto out_unlock;
	}
	if (!try_module_get(t->owner)) {
		err = -ENOENT;
		goto out_unlock;
	}
	s = session_alloc(t);
	if (!s) {
		module_put(t->owner);
		err = -ENOMEM;
		goto out_unlock;
	}

	/* The number is taken now; commands find the session once it is set up. */
	id = idr_alloc(&iscsi_if_sessions, NULL, 1, INT_MAX, GFP_KERNEL);
	mutex_unlock(&iscsi_if_mutex);
	if (id < 0) {
		put_device(&s->cdev);
		put_device(&s->hdev);
		put_device(&s->dev);	/* frees s, puts the module */
		return id;
	}
	s->sid = id;
	dev_set_name(&s->dev, "session%u", s->sid);

	/* Adding the SCSI host and the sysfs devices is slow: other sessions'
	 * logins and logouts go on meanwhile.
	 */
	err = session_setup(s, cmds_max, qdepth);
	if (err) {
		GENL_SET_ERR_MSG(info, "cannot create the SCSI host");
		goto out_teardown;
	}
	err = -ENOMEM;
	msg = reply_new(info, ISCSI_IF_CMD_CREATE_SESSION, &hdr, NLMSG_GOODSIZE);
	if (!msg)
		goto out_teardown;
	if (session_fill(msg, s)) {
		nlmsg_free(msg);
		goto out_teardown;
	}
	mutex_lock(&iscsi_if_mutex);
	idr_replace(&iscsi_if_sessions, s, s->sid);
	mutex_unlock(&iscsi_if_mutex);
	pr_info("session%u created on host%u (%s, can_queue %u, cmd_per_lun %u)\n",
		s->sid, s->shost->host_no, t->name, s->shost->can_queue,
		s->shost->cmd_per_lun);
	return reply_send(msg, hdr, info);

out_teardown:
	mutex_lock(&iscsi_if_mutex);
	session_unpublish(s);
	mutex_unlock(&iscsi_if_mutex);
	session_teardown(s);
	return err;

out_unlock:
	mutex_unlock(&iscsi_if_mutex);
	return err;
}

static int cmd_destroy_session(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	int err = 0;

	mutex_lock(&iscsi_if_mutex);
	s = req_session(info);
	if (IS_ERR(s))
		err = PTR_ERR(s);
	else
		session_unpublish(s);
	mutex_unlock(&iscsi_if_mutex);
	if (!err)
		session_teardown(s);
	return err;
}

static int cmd_create_conn(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c;
	u32 cid;
	int err;

	mutex_lock(&iscsi_if_mutex);
	s = req_session(info);
	if (IS_ERR(s)) {
		err = PTR_ERR(s);
		goto out;
	}
	err = -EINVAL;
	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_CID))
		goto out;
	cid = nla_get_u32(info->attrs[ISCSI_IF_ATTR_CID]);
	if (conn_find(s, cid)) {
		GENL_SET_ERR_MSG(info, "connection already exists");
		err = -EEXIST;
		goto out;
	}
	err = -ENOMEM;
	c = conn_alloc(s, cid);
	if (!c)
		goto out;
	if (s->transport->create_conn) {
		err = s->transport->create_conn(c);
		if (err) {
			put_device(&c->cdev);
			put_device(&c->dev);
			goto out;
		}
	}
	list_add_tail(&c->node, &s->conns);
	err = device_add(&c->dev);
	if (!err) {
		c->dev_added = true;
		err = device_add(&c->cdev);
		if (!err)
			c->cdev_added = true;
	}
	if (err)
		conn_destroy(c);
out:
	mutex_unlock(&iscsi_if_mutex);
	return err;
}

static int cmd_destroy_conn(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c;
	int err = 0;

	mutex_lock(&iscsi_if_mutex);
	c = req_conn(info, &s);
	if (IS_ERR(c)) {
		err = PTR_ERR(c);
	} else if (c->state == ISCSI_IF_CONN_STARTED) {
		GENL_SET_ERR_MSG(info, "connection is started: stop it first");
		err = -EBUSY;
	} else {
		conn_destroy(c);
	}
	mutex_unlock(&iscsi_if_mutex);
	return err;
}

static int cmd_bind_conn(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c;
	u32 exp_statsn, cmdsn, max_cmdsn;
	int fd, err;

	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_SOCK_FD) ||
	    GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_EXP_STATSN) ||
	    GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_CMDSN))
		return -EINVAL;
	fd = nla_get_s32(info->attrs[ISCSI_IF_ATTR_SOCK_FD]);
	exp_statsn = nla_get_u32(info->attrs[ISCSI_IF_ATTR_EXP_STATSN]);
	cmdsn = nla_get_u32(info->attrs[ISCSI_IF_ATTR_CMDSN]);
	max_cmdsn = cmdsn;
	if (info->attrs[ISCSI_IF_ATTR_MAX_CMDSN])
		max_cmdsn = nla_get_u32(info->attrs[ISCSI_IF_ATTR_MAX_CMDSN]);

	mutex_lock(&iscsi_if_mutex);
	c = req_conn(info, &s);
	if (IS_ERR(c)) {
		err = PTR_ERR(c);
		goto out;
	}
	if (c->state != ISCSI_IF_CONN_CREATED && c->state != ISCSI_IF_CONN_STOPPED) {
		GENL_SET_ERR_MSG(info, "connection is already bound");
		err = -EBUSY;
		goto out;
	}
	if (s->removing) {
		err = -ENOENT;
		goto out;
	}
	err = s->transport->bind_conn(c, fd, exp_statsn, cmdsn, max_cmdsn);
	if (err) {
		GENL_SET_ERR_MSG(info, "cannot bind the socket (not a connected TCP socket?)");
		goto out;
	}
	conn_set_state(c, ISCSI_IF_CONN_BOUND);
out:
	mutex_unlock(&iscsi_if_mutex);
	return err;
}

static int cmd_start_conn(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c, *o;
	unsigned int running;
	int err;

	mutex_lock(&iscsi_if_mutex);
	c = req_conn(info, &s);
	if (IS_ERR(c)) {
		err = PTR_ERR(c);
		goto out;
	}
	if (c->state != ISCSI_IF_CONN_BOUND) {
		GENL_SET_ERR_MSG(info, "connection is not bound");
		err = c->state == ISCSI_IF_CONN_STARTED ? -EBUSY : -EINVAL;
		goto out;
	}
	running = 0;
	list_for_each_entry(o, &s->conns, node)
		if (o != c && (o->state == ISCSI_IF_CONN_STARTED ||
			       o->state == ISCSI_IF_CONN_FAILED))
			running++;
	if (running >= max(1U, s->transport->max_conns)) {
		if (running == 1)
			GENL_SET_ERR_MSG(info, "another connection of the session is running");
		else
			GENL_SET_ERR_MSG(info, "the session runs as many connections as it may");
		err = -EBUSY;
		goto out;
	}
	/* A pending error work item of the previous run is finished first. */
	if (cancel_work_sync(&c->err_work))
		put_device(&c->dev);
	clear_bit(ISCSI_IF_CONN_F_ERROR, &c->flags);
	c->error = ISCSI_IF_ERR_NONE;
	conn_set_state(c, ISCSI_IF_CONN_STARTED);
	err = s->transport->start_conn(c);
	if (err) {
		conn_set_state(c, ISCSI_IF_CONN_BOUND);
		goto out;
	}
	session_up(s);
out:
	mutex_unlock(&iscsi_if_mutex);
	return err;
}

static int cmd_stop_conn(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c;
	int err = 0, flag;

	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_STOP_FLAG))
		return -EINVAL;
	flag = nla_get_u32(info->attrs[ISCSI_IF_ATTR_STOP_FLAG]);

	mutex_lock(&iscsi_if_mutex);
	c = req_conn(info, &s);
	if (IS_ERR(c)) {
		err = PTR_ERR(c);
		goto out;
	}
	if (flag == ISCSI_IF_STOP_RECOVER && c->state != ISCSI_IF_CONN_CREATED &&
	    c->state != ISCSI_IF_CONN_STOPPED) {
		/* Block first: commands failed by the stop wait for the new connection. */
		session_fail(s);
	}
	conn_stop(c, flag);
	if (flag == ISCSI_IF_STOP_TERM)
		session_terminate(s);
out:
	mutex_unlock(&iscsi_if_mutex);
	return err;
}

/*
 * DRAIN_CONN: the transport waits for the connection's commands, which may
 * take as long as the target does: without the global mutex, like SCAN. The
 * device reference keeps the connection's memory; a STOP_CONN meanwhile ends
 * the wait (the transport sees the connection stop).
 */
static int cmd_drain_conn(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c;
	u32 timeout = 30;
	int err;

	if (info->attrs[ISCSI_IF_ATTR_TIMEOUT])
		timeout = nla_get_u32(info->attrs[ISCSI_IF_ATTR_TIMEOUT]);

	mutex_lock(&iscsi_if_mutex);
	c = req_conn(info, &s);
	if (IS_ERR(c)) {
		mutex_unlock(&iscsi_if_mutex);
		return PTR_ERR(c);
	}
	if (!s->transport->drain_conn) {
		mutex_unlock(&iscsi_if_mutex);
		return -EOPNOTSUPP;
	}
	if (c->state != ISCSI_IF_CONN_STARTED) {
		mutex_unlock(&iscsi_if_mutex);
		GENL_SET_ERR_MSG(info, "connection is not running");
		return -ENOTCONN;
	}
	get_device(&c->dev);
	mutex_unlock(&iscsi_if_mutex);

	err = s->transport->drain_conn(c, timeout);
	if (err == -EBUSY)
		GENL_SET_ERR_MSG(info, "the last running connection: log the session out");
	else if (err == -ETIMEDOUT)
		GENL_SET_ERR_MSG(info, "the connection's commands did not complete in time");
	put_device(&c->dev);
	return err;
}

/* SET_PARAM's value, checked and normalised in a new string. */
static char *param_value(struct genl_info *info, enum iscsi_if_param param)
{
	char *raw, *value;

	raw = nla_strdup(info->attrs[ISCSI_IF_ATTR_VALUE], GFP_KERNEL);
	if (!raw)
		return ERR_PTR(-ENOMEM);
	value = param_normalise(param, raw, info->extack);
	kfree(raw);
	return value;
}

static int cmd_set_param(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c = NULL;
	char *value, *old;
	unsigned long flags;
	unsigned int tmo;
	u32 param;
	int err;

	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_PARAM) ||
	    GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_VALUE))
		return -EINVAL;
	param = nla_get_u32(info->attrs[ISCSI_IF_ATTR_PARAM]);
	if (param >= __ISCSI_IF_PARAM_MAX)
		return -EINVAL;
	value = param_value(info, param);
	if (IS_ERR(value))
		return PTR_ERR(value);

	mutex_lock(&iscsi_if_mutex);
	if (param_descs[param].conn) {
		c = req_conn(info, &s);
		if (IS_ERR(c)) {
			err = PTR_ERR(c);
			goto out;
		}
	} else {
		s = req_session(info);
		if (IS_ERR(s)) {
			err = PTR_ERR(s);
			goto out;
		}
	}
	if (param == ISCSI_IF_PARAM_RECOVERY_TMO) {
		err = kstrtouint(value, 10, &tmo);
		if (err)
			goto out;
		/* bounded, so that (tmo + slack) * HZ fits an unsigned long everywhere */
		WRITE_ONCE(s->recovery_tmo, min(tmo, ISCSI_IF_MAX_RECOVERY_TMO));
	}
	err = s->transport->set_param ? s->transport->set_param(s, c, param, value) : 0;
	if (err == -EBUSY)
		GENL_SET_ERR_MSG(info, "parameter cannot change while the connection runs");
	if (err)
		goto out;
	spin_lock_irqsave(&s->lock, flags);
	old = *param_slot(s, c, param);
	*param_slot(s, c, param) = value;
	spin_unlock_irqrestore(&s->lock, flags);
	value = NULL;
	kfree(old);
out:
	mutex_unlock(&iscsi_if_mutex);
	kfree(value);
	return err;
}

static int cmd_get_param(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c = NULL;
	struct sk_buff *msg;
	const char *value;
	unsigned long flags;
	void *hdr;
	u32 param;
	int err;

	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_PARAM))
		return -EINVAL;
	param = nla_get_u32(info->attrs[ISCSI_IF_ATTR_PARAM]);
	if (param >= __ISCSI_IF_PARAM_MAX)
		return -EINVAL;
	msg = reply_new(info, ISCSI_IF_CMD_GET_PARAM, &hdr, NLMSG_GOODSIZE);
	if (!msg)
		return -ENOMEM;

	mutex_lock(&iscsi_if_mutex);
	if (param_descs[param].conn) {
		c = req_conn(info, &s);
		if (IS_ERR(c)) {
			err = PTR_ERR(c);
			goto fail;
		}
	} else {
		s = req_session(info);
		if (IS_ERR(s)) {
			err = PTR_ERR(s);
			goto fail;
		}
	}
	err = -ENOENT;
	spin_lock_irqsave(&s->lock, flags);
	value = *param_slot(s, c, param);
	if (value)
		err = nla_put_u32(msg, ISCSI_IF_ATTR_SID, s->sid) ||
		      nla_put_u32(msg, ISCSI_IF_ATTR_PARAM, param) ||
		      nla_put_string(msg, ISCSI_IF_ATTR_VALUE, value) ?
		      -EMSGSIZE : 0;
	spin_unlock_irqrestore(&s->lock, flags);
	if (err == -ENOENT)
		GENL_SET_ERR_MSG(info, "parameter not set");
	if (err)
		goto fail;
	mutex_unlock(&iscsi_if_mutex);
	return reply_send(msg, hdr, info);
fail:
	mutex_unlock(&iscsi_if_mutex);
	nlmsg_free(msg);
	return err;
}

static int cmd_send_pdu(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c;
	struct nlattr *pdu;
	int err;

	if (GENL_REQ_ATTR_CHECK(info, ISCSI_IF_ATTR_PDU))
		return -EINVAL;
	pdu = info->attrs[ISCSI_IF_ATTR_PDU];
	if (nla_len(pdu) < 48) {
		GENL_SET_ERR_MSG(info, "PDU shorter than a BHS");
		return -EINVAL;
	}
	mutex_lock(&iscsi_if_mutex);
	c = req_conn(info, &s);
	if (IS_ERR(c)) {
		err = PTR_ERR(c);
	} else if (c->state != ISCSI_IF_CONN_STARTED &&
		   c->state != ISCSI_IF_CONN_BOUND) {
		GENL_SET_ERR_MSG(info, "connection is not running");
		err = -ENOTCONN;
	} else {
		err = s->transport->send_pdu(c, nla_data(pdu), nla_len(pdu));
		if (err == -EINVAL)
			GENL_SET_ERR_MSG(info, "malformed PDU or opcode not allowed");
	}
	mutex_unlock(&iscsi_if_mutex);
	return err;
}

static int cmd_scan(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	unsigned int channel = SCAN_WILD_CARD, id = SCAN_WILD_CARD;
	u64 lun = SCAN_WILD_CARD;
	int err;

	if (info->attrs[ISCSI_IF_ATTR_CHANNEL])
		channel = nla_get_u32(info->attrs[ISCSI_IF_ATTR_CHANNEL]);
	if (info->attrs[ISCSI_IF_ATTR_ID])
		id = nla_get_u32(info->attrs[ISCSI_IF_ATTR_ID]);
	if (info->attrs[ISCSI_IF_ATTR_LUN])
		lun = nla_get_u64(info->attrs[ISCSI_IF_ATTR_LUN]);
	if ((channel != SCAN_WILD_CARD && channel != 0) ||
	    (id != SCAN_WILD_CARD && id != 0)) {
		GENL_SET_ERR_MSG(info, "channel and id must be 0");
		return -EINVAL;
	}

	mutex_lock(&iscsi_if_mutex);
	s = req_session(info);
	if (IS_ERR(s)) {
		mutex_unlock(&iscsi_if_mutex);
		return PTR_ERR(s);
	}
	get_device(&s->dev);
	mutex_unlock(&iscsi_if_mutex);

	/* Long (I/O to the target): without the global mutex, so that other
	 * sessions and a STOP/DESTROY of this one are not held up.
	 */
	err = session_scan(s, lun, SCSI_SCAN_INITIAL);
	if (err)
		GENL_SET_ERR_MSG(info, "session is not logged in");
	put_device(&s->dev);
	return err;
}

static int cmd_get_stats(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct iscsi_if_conn *c;
	struct sk_buff *msg;
	struct nlattr *nest;
	u64 *stats;
	void *hdr;
	int i, err;

	stats = kcalloc(__ISCSI_IF_STAT_MAX, sizeof(*stats), GFP_KERNEL);
	if (!stats)
		return -ENOMEM;
	msg = reply_new(info, ISCSI_IF_CMD_GET_STATS, &hdr, NLMSG_GOODSIZE);
	if (!msg) {
		kfree(stats);
		return -ENOMEM;
	}
	mutex_lock(&iscsi_if_mutex);
	c = req_conn(info, &s);
	if (IS_ERR(c)) {
		err = PTR_ERR(c);
		goto fail;
	}
	if (s->transport->get_stats)
		s->transport->get_stats(c, stats);
	err = -EMSGSIZE;
	if (nla_put_u32(msg, ISCSI_IF_ATTR_SID, s->sid) ||
	    nla_put_u32(msg, ISCSI_IF_ATTR_CID, c->cid))
		goto fail;
	nest = nla_nest_start(msg, ISCSI_IF_ATTR_STATS);
	if (!nest)
		goto fail;
	for (i = 1; i < __ISCSI_IF_STAT_MAX; i++)
		if (nla_put_u64_64bit(msg, i, stats[i], ISCSI_IF_STAT_UNSPEC))
			goto fail;
	nla_nest_end(msg, nest);
	mutex_unlock(&iscsi_if_mutex);
	kfree(stats);
	return reply_send(msg, hdr, info);
fail:
	mutex_unlock(&iscsi_if_mutex);
	nlmsg_free(msg);
	kfree(stats);
	return err;
}

static int cmd_get_session(struct sk_buff *skb, struct genl_info *info)
{
	struct iscsi_if_session *s;
	struct sk_buff *msg;
	void *hdr;
	int err;

	msg = reply_new(info, ISCSI_IF_CMD_GET_SESSION, &hdr, NLMSG_GOODSIZE);
	if (!msg)
		return -ENOMEM;
	mutex_lock(&iscsi_if_mutex);
	s = req_session(info);
	if (IS_ERR(s))
		err = PTR_ERR(s);
	else
		err = session_fill(msg, s);
	mutex_unlock(&iscsi_if_mutex);
	if (err) {
		nlmsg_free(msg);
		return err;
	}
	return reply_send(msg, hdr, info);
}

static int dump_sessions(struct sk_buff *skb, struct netlink_callback *cb)
{
	struct iscsi_if_session *s;
	int id = cb->args[0];
	void *hdr;

	mutex_lock(&iscsi_if_mutex);
	for (s = idr_get_next(&iscsi_if_sessions, &id); s;
	     id++, s = idr_get_next(&iscsi_if_sessions, &id)) {
		hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
				  &iscsi_if_family, NLM_F_MULTI,
				  ISCSI_IF_CMD_GET_SESSION);
		if (!hdr)
			break;
		if (session_fill(skb, s)) {
			genlmsg_cancel(skb, hdr);
			break;
		}
		genlmsg_end(skb, hdr);
	}
	mutex_unlock(&iscsi_if_mutex);
	cb->args[0] = id;
	return skb->len;
}

static const struct nla_policy iscsi_if_policy[__ISCSI_IF_ATTR_MAX] = {
	[ISCSI_IF_ATTR_TRANSPORT]	= { .type = NLA_STRING, .len = 15 },
	[ISCSI_IF_ATTR_SID]		= { .type = NLA_U32 },
	[ISCSI_IF_ATTR_CID]		= { .type = NLA_U32 },
	[ISCSI_IF_ATTR_SOCK_FD]		= { .type = NLA_S32 },
	[ISCSI_IF_ATTR_CMDS_MAX]	= NLA_POLICY_RANGE(NLA_U32, 1, ISCSI_IF_MAX_CMDS),
	[ISCSI_IF_ATTR_QUEUE_DEPTH]	= NLA_POLICY_RANGE(NLA_U32, 1, ISCSI_IF_MAX_QUEUE_DEPTH),
	[ISCSI_IF_ATTR_CMDSN]		= { .type = NLA_U32 },
	[ISCSI_IF_ATTR_EXP_STATSN]	= { .type = NLA_U32 },
	[ISCSI_IF_ATTR_PARAM]		= NLA_POLICY_MAX(NLA_U32, __ISCSI_IF_PARAM_MAX - 1),
	[ISCSI_IF_ATTR_VALUE]		= { .type = NLA_STRING, .len = ISCSI_IF_MAX_VALUE_LEN },
	[ISCSI_IF_ATTR_PDU]		= { .type = NLA_BINARY, .len = ISCSI_IF_MAX_PDU },
	[ISCSI_IF_ATTR_STOP_FLAG]	= NLA_POLICY_RANGE(NLA_U32, ISCSI_IF_STOP_RECOVER,
							   ISCSI_IF_STOP_TERM),
	[ISCSI_IF_ATTR_CHANNEL]		= { .type = NLA_U32 },
	[ISCSI_IF_ATTR_ID]		= { .type = NLA_U32 },
	[ISCSI_IF_ATTR_LUN]		= { .type = NLA_U64 },
	[ISCSI_IF_ATTR_MAX_CMDSN]	= { .type = NLA_U32 },
	[ISCSI_IF_ATTR_TIMEOUT]		= { .type = NLA_U32 },
};

static const struct genl_small_ops iscsi_if_ops[] = {
	{ .cmd = ISCSI_IF_CMD_CREATE_SESSION, .doit = cmd_create_session,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_DESTROY_SESSION, .doit = cmd_destroy_session,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_CREATE_CONN, .doit = cmd_create_conn,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_DESTROY_CONN, .doit = cmd_destroy_conn,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_BIND_CONN, .doit = cmd_bind_conn,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_START_CONN, .doit = cmd_start_conn,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_STOP_CONN, .doit = cmd_stop_conn,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_SET_PARAM, .doit = cmd_set_param,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_GET_PARAM, .doit = cmd_get_param,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_SEND_PDU, .doit = cmd_send_pdu,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_SCAN, .doit = cmd_scan,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_GET_STATS, .doit = cmd_get_stats,
	  .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_GET_SESSION, .doit = cmd_get_session,
	  .dumpit = dump_sessions, .flags = GENL_ADMIN_PERM },
	{ .cmd = ISCSI_IF_CMD_DRAIN_CONN, .doit = cmd_drain_conn,
	  .flags = GENL_ADMIN_PERM },
};

static const struct genl_multicast_group iscsi_if_mcgrps[] = {
#ifdef GENL_MCAST_CAP_NET_ADMIN
	{ .name = ISCSI_IF_MCGRP_EVENTS, .flags = GENL_MCAST_CAP_NET_ADMIN },
#else
	{ .name = ISCSI_IF_MCGRP_EVENTS },
#endif
};

static struct genl_family iscsi_if_family __ro_after_init = {
	.name = ISCSI_IF_GENL_NAME,
	.version = ISCSI_IF_GENL_VERSION,
	.maxattr = __ISCSI_IF_ATTR_MAX - 1,
	.policy = iscsi_if_policy,
	.parallel_ops = true,
	.module = THIS_MODULE,
	.small_ops = iscsi_if_ops,
	.n_small_ops = ARRAY_SIZE(iscsi_if_ops),
	.mcgrps = iscsi_if_mcgrps,
	.n_mcgrps = ARRAY_SIZE(iscsi_if_mcgrps),
};

static int __init iscsi_if_init(void)
{
	int err;

	iscsi_if_wq = alloc_workqueue("iscsi_if", WQ_MEM_RECLAIM, 0);
	if (!iscsi_if_wq)
		return -ENOMEM;
	err = class_register(&iscsi_session_class);
	if (err)
		goto fail_wq;
	err = class_register(&iscsi_connection_class);
	if (err)
		goto fail_sess;
	err = class_register(&iscsi_host_class);
	if (err)
		goto fail_conn;
	err = genl_register_family(&iscsi_if_family);
	if (err)
		goto fail_host;
	pr_info("pyiscsi control plane loaded (genetlink family %s)\n", ISCSI_IF_GENL_NAME);
	return 0;

fail_host:
	class_unregister(&iscsi_host_class);
fail_conn:
	class_unregister(&iscsi_connection_class);
fail_sess:
	class_unregister(&iscsi_session_class);
	if (err == -EEXIST)
		pr_err("iSCSI sysfs classes already exist: unload scsi_transport_iscsi first\n");
fail_wq:
	destroy_workqueue(iscsi_if_wq);
	return err;
}

static void __exit iscsi_if_exit(void)
{
	genl_unregister_family(&iscsi_if_family);
	/* Sessions pin the transports, transports pin us: nothing is left but
	 * work items that drop the last references.
	 */
	destroy_workqueue(iscsi_if_wq);
	class_unregister(&iscsi_host_class);
	class_unregister(&iscsi_connection_class);
	class_unregister(&iscsi_session_class);
	idr_destroy(&iscsi_if_sessions);
}

module_init(iscsi_if_init);
module_exit(iscsi_if_exit);

MODULE_DESCRIPTION("pyiscsi: iSCSI initiator control plane (generic netlink, sessions, sysfs)");
MODULE_LICENSE("GPL");
MODULE_VERSION(PYISCSI_VERSION);
MODULE_ALIAS_GENL_FAMILY(ISCSI_IF_GENL_NAME);

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * iscsi_tcp_trace.h: the tracepoints of the iscsi_tcp data path.
 *
 * Events (system "iscsi_tcp", /sys/kernel/tracing/events/iscsi_tcp/):
 * - iscsi_tcp_pdu_send: a PDU's header goes to the socket (every PDU we
 *   send: SCSI Command, Data-Out, and iscsid's NOP-Out, Text, Logout, SNACK,
 *   the error handler's Task Management Function Request);
 * - iscsi_tcp_pdu_recv: the header of a PDU from the target is in (header
 *   digest checked), before it is checked and acted on: a PDU that fails the
 *   connection is traced too;
 * - iscsi_tcp_cmd_done: a SCSI command leaves the task table with its result
 *   (a response, a status in the last Data-In, a Reject, or the connection's
 *   stop), and its latency;
 * - iscsi_tcp_conn_state: a connection is bound to its socket, started,
 *   failed by the data path, or stopped.
 *
 * Sequence numbers and tags are the values on the wire, in host order; an
 * ITT is the blk-mq tag in bits 0-15 and a generation count above. Fields a
 * PDU does not carry are 0. docs/tracing.md shows how to read them.
 *
 * Disabled tracepoints cost a static branch; the latency is computed inside
 * the event, only when it is enabled. Exactly one file, iscsi_tcp.c, defines
 * CREATE_TRACE_POINTS before including this header.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM iscsi_tcp

#if !defined(_ISCSI_TCP_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _ISCSI_TCP_TRACE_H

#include <linux/blk-mq.h>
#include <linux/dma-direction.h>
#include <linux/ktime.h>
#include <linux/string.h>
#include <linux/tracepoint.h>
#include <scsi/iscsi_proto.h>
#include <scsi/scsi_cmnd.h>

#include "iscsi_if_kern.h"

TRACE_DEFINE_ENUM(ISCSI_IF_CONN_BOUND);
TRACE_DEFINE_ENUM(ISCSI_IF_CONN_STARTED);
TRACE_DEFINE_ENUM(ISCSI_IF_CONN_FAILED);
TRACE_DEFINE_ENUM(ISCSI_IF_CONN_STOPPED);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_NONE);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_CONN_FAILED);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_PROTO);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_HDR_DGST);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_DATA_DGST);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_XMIT_FAILED);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_BAD_R2T);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_SCSI_EH);
TRACE_DEFINE_ENUM(ISCSI_IF_ERR_NOP_TIMEOUT);
TRACE_DEFINE_ENUM(ISCSI_IF_STOP_RECOVER);
TRACE_DEFINE_ENUM(ISCSI_IF_STOP_TERM);
TRACE_DEFINE_ENUM(DMA_BIDIRECTIONAL);
TRACE_DEFINE_ENUM(DMA_TO_DEVICE);
TRACE_DEFINE_ENUM(DMA_FROM_DEVICE);
TRACE_DEFINE_ENUM(DMA_NONE);

#define show_iscsi_opcode(op)						\
	__print_symbolic(op,						\
		{ ISCSI_OP_NOOP_OUT,		"NOOP_OUT" },		\
		{ ISCSI_OP_SCSI_CMD,		"SCSI_CMD" },		\
		{ ISCSI_OP_SCSI_TMFUNC,		"SCSI_TMFUNC" },	\
		{ ISCSI_OP_LOGIN,		"LOGIN" },		\
		{ ISCSI_OP_TEXT,		"TEXT" },		\
		{ ISCSI_OP_SCSI_DATA_OUT,	"SCSI_DATA_OUT" },	\
		{ ISCSI_OP_LOGOUT,		"LOGOUT" },		\
		{ ISCSI_OP_SNACK,		"SNACK" },		\
		{ ISCSI_OP_NOOP_IN,		"NOOP_IN" },		\
		{ ISCSI_OP_SCSI_CMD_RSP,	"SCSI_CMD_RSP" },	\
		{ ISCSI_OP_SCSI_TMFUNC_RSP,	"SCSI_TMFUNC_RSP" },	\
		{ ISCSI_OP_LOGIN_RSP,		"LOGIN_RSP" },		\
		{ ISCSI_OP_TEXT_RSP,		"TEXT_RSP" },		\
		{ ISCSI_OP_SCSI_DATA_IN,	"SCSI_DATA_IN" },	\
		{ ISCSI_OP_LOGOUT_RSP,		"LOGOUT_RSP" },		\
		{ ISCSI_OP_R2T,			"R2T" },		\
		{ ISCSI_OP_ASYNC_EVENT,		"ASYNC_EVENT" },	\
		{ ISCSI_OP_REJECT,		"REJECT" })

#define show_conn_state(state)						\
	__print_symbolic(state,						\
		{ ISCSI_IF_CONN_BOUND,		"bound" },		\
		{ ISCSI_IF_CONN_STARTED,	"up" },			\
		{ ISCSI_IF_CONN_FAILED,		"failed" },		\
		{ ISCSI_IF_CONN_STOPPED,	"stopped" })

#define show_conn_err(err)						\
	__print_symbolic(err,						\
		{ ISCSI_IF_ERR_NONE,		"none" },		\
		{ ISCSI_IF_ERR_CONN_FAILED,	"conn_failed" },	\
		{ ISCSI_IF_ERR_PROTO,		"proto" },		\
		{ ISCSI_IF_ERR_HDR_DGST,	"hdr_dgst" },		\
		{ ISCSI_IF_ERR_DATA_DGST,	"data_dgst" },		\
		{ ISCSI_IF_ERR_XMIT_FAILED,	"xmit_failed" },	\
		{ ISCSI_IF_ERR_BAD_R2T,		"bad_r2t" },		\
		{ ISCSI_IF_ERR_SCSI_EH,		"scsi_eh" },		\
		{ ISCSI_IF_ERR_NOP_TIMEOUT,	"nop_timeout" })

#define show_stop_flag(flag)						\
	__print_symbolic(flag,						\
		{ 0,				"none" },		\
		{ ISCSI_IF_STOP_RECOVER,	"recover" },		\
		{ ISCSI_IF_STOP_TERM,		"term" })

#define show_dma_dir(dir)						\
	__print_symbolic(dir,						\
		{ DMA_BIDIRECTIONAL,		"bidi" },		\
		{ DMA_TO_DEVICE,		"write" },		\
		{ DMA_FROM_DEVICE,		"read" },		\
		{ DMA_NONE,			"none" })

/* Defined once: this header is read again by define_trace.h. */
#ifndef _ISCSI_TCP_TRACE_HELPERS
#define _ISCSI_TCP_TRACE_HELPERS
/* The opcodes a BHS field is defined for, as a set: BIT_ULL(opcode). */
#define ITCP_OPS2(a, b)		(BIT_ULL(ISCSI_OP_##a) | BIT_ULL(ISCSI_OP_##b))
#define ITCP_OPS3(a, b, c)	(ITCP_OPS2(a, b) | BIT_ULL(ISCSI_OP_##c))
#define ITCP_OPS4(a, b, c, d)	(ITCP_OPS2(a, b) | ITCP_OPS2(c, d))

/**
 * itcp_trace_op() - the opcode of a PDU
 * @bhs: its Basic Header Segment
 *
 * Return: the opcode without the I bit.
 */
static inline u8 itcp_trace_op(const u8 *bhs)
{
	return bhs[0] & ISCSI_OPCODE_MASK;
}

/**
 * itcp_trace_byte() - a byte of a BHS, for the opcodes it is defined for
 * @bhs: the Basic Header Segment
 * @off: the byte's offset
 * @ops: the opcodes that have the field, BIT_ULL(opcode) each
 *
 * Return: the byte at @off if the PDU's opcode is in @ops, else 0.
 */
static inline u8 itcp_trace_byte(const u8 *bhs, unsigned int off, u64 ops)
{
	return ops & BIT_ULL(itcp_trace_op(bhs)) ? bhs[off] : 0;
}

/**
 * itcp_trace_word() - a 32-bit field of a BHS, for the opcodes it is defined for
 * @bhs: the Basic Header Segment; it may be unaligned
 * @off: the field's offset
 * @ops: the opcodes that have the field, BIT_ULL(opcode) each
 *
 * Return: the big-endian word at @off in host order if the PDU's opcode is in
 * @ops, else 0.
 */
static inline u32 itcp_trace_word(const u8 *bhs, unsigned int off, u64 ops)
{
	__be32 v;

	if (!(ops & BIT_ULL(itcp_trace_op(bhs))))
		return 0;
	memcpy(&v, bhs + off, sizeof(v));
	return be32_to_cpu(v);
}

/**
 * itcp_trace_dlen() - the DataSegmentLength of a PDU
 * @bhs: its Basic Header Segment
 *
 * Return: bytes 5-7 of the header: the data segment's length without padding.
 */
static inline u32 itcp_trace_dlen(const u8 *bhs)
{
	return itcp_trace_word(bhs, 4, U64_MAX) & 0xffffff;
}

/**
 * itcp_trace_statsn() - the StatSN of a PDU from the target
 * @bhs: its Basic Header Segment
 *
 * Return: the StatSN; 0 for a Data-In without the S bit, which carries none.
 */
static inline u32 itcp_trace_statsn(const u8 *bhs)
{
	if (itcp_trace_op(bhs) == ISCSI_OP_SCSI_DATA_IN && !(bhs[1] & ISCSI_FLAG_DATA_STATUS))
		return 0;
	return itcp_trace_word(bhs, 24, U64_MAX);
}

/**
 * itcp_trace_latency() - how long a command has taken so far
 * @sc: the command
 *
 * Return: nanoseconds since the block layer started the request (its
 * start_time_ns, where iostat's await starts), 0 if it did not time it.
 */
static inline u64 itcp_trace_latency(struct scsi_cmnd *sc)
{
	u64 start = scsi_cmd_to_rq(sc)->start_time_ns;

	return start ? ktime_get_ns() - start : 0;
}
#endif

/**
 * iscsi_tcp_pdu_send - a PDU we send: its header goes to the socket
 * @ifc: the connection
 * @bhs: the PDU's Basic Header Segment (AHS after it); it may be unaligned
 *
 * Fields: op, imm (the I bit), flags, itt; ttt (Target Transfer Tag of a
 * Data-Out, NOP-Out, Text or SNACK; the Referenced Task Tag of a Task
 * Management Function Request); cmdsn (none in Data-Out and SNACK);
 * exp_statsn; datasn and offset (Data-Out); xferlen (Expected Data Transfer
 * Length of a SCSI Command); ahslen, dlen (the data segment, without
 * padding and digest).
 */
TRACE_EVENT(iscsi_tcp_pdu_send,
	    TP_PROTO(const struct iscsi_if_conn *ifc, const void *bhs),
	    TP_ARGS(ifc, bhs),
	    TP_STRUCT__entry(__field(u32, sid)
			     __field(u32, cid)
			     __field(u8, op)
			     __field(u8, imm)
			     __field(u8, flags)
			     __field(u32, itt)
			     __field(u32, ttt)
			     __field(u32, cmdsn)
			     __field(u32, exp_statsn)
			     __field(u32, datasn)
			     __field(u32, offset)
			     __field(u32, xferlen)
			     __field(u32, ahslen)
			     __field(u32, dlen)),
	    TP_fast_assign(__entry->sid = ifc->session->sid;
			   __entry->cid = ifc->cid;
			   __entry->op = itcp_trace_op(bhs);
			   __entry->imm = !!(*(const u8 *)bhs & ISCSI_OP_IMMEDIATE);
			   __entry->flags = ((const u8 *)bhs)[1];
			   __entry->itt = itcp_trace_word(bhs, 16, U64_MAX);
			   __entry->ttt = itcp_trace_word(bhs, 20,
							  ITCP_OPS4(NOOP_OUT, TEXT, SCSI_TMFUNC,
								    SCSI_DATA_OUT) |
							  BIT_ULL(ISCSI_OP_SNACK));
			   __entry->cmdsn = itcp_trace_word(bhs, 24,
							    ~ITCP_OPS2(SCSI_DATA_OUT, SNACK));
			   __entry->exp_statsn = itcp_trace_word(bhs, 28, U64_MAX);
			   __entry->datasn = itcp_trace_word(bhs, 36,
							     BIT_ULL(ISCSI_OP_SCSI_DATA_OUT));
			   __entry->offset = itcp_trace_word(bhs, 40,
							     BIT_ULL(ISCSI_OP_SCSI_DATA_OUT));
			   __entry->xferlen = itcp_trace_word(bhs, 20,
							      BIT_ULL(ISCSI_OP_SCSI_CMD));
			   __entry->ahslen = ((const u8 *)bhs)[4] * 4;
			   __entry->dlen = itcp_trace_dlen(bhs);),
	    TP_printk("sid=%u cid=%u op=%s imm=%u flags=0x%02x itt=0x%08x ttt=0x%08x cmdsn=%u exp_statsn=%u datasn=%u offset=%u xferlen=%u ahslen=%u dlen=%u",
		      __entry->sid, __entry->cid, show_iscsi_opcode(__entry->op),
		      __entry->imm, __entry->flags, __entry->itt, __entry->ttt,
		      __entry->cmdsn, __entry->exp_statsn, __entry->datasn,
		      __entry->offset, __entry->xferlen, __entry->ahslen,
		      __entry->dlen)
);

/**
 * iscsi_tcp_pdu_recv - the header of a PDU from the target is in
 * @ifc: the connection
 * @bhs: the PDU's Basic Header Segment (AHS after it)
 *
 * The header digest is checked; the PDU is not yet checked nor acted on.
 * Fields: op, flags; response (byte 2 of a SCSI, Task Management or Logout
 * Response; the reason of a Reject); status (byte 3: the SCSI status of a
 * SCSI Response, of a Data-In with the S bit); itt; ttt (Data-In, R2T,
 * NOP-In, Text Response); statsn (none in a Data-In without the S bit),
 * exp_cmdsn, max_cmdsn; datasn (DataSN of a Data-In, R2TSN of an R2T,
 * ExpDataSN of a SCSI Response); offset (Buffer Offset of a Data-In or R2T);
 * xferlen (Desired Data Transfer Length of an R2T); residual (Residual Count
 * of a Data-In or SCSI Response); ahslen, dlen.
 */
TRACE_EVENT(iscsi_tcp_pdu_recv,
	    TP_PROTO(const struct iscsi_if_conn *ifc, const void *bhs),
	    TP_ARGS(ifc, bhs),
	    TP_STRUCT__entry(__field(u32, sid)
			     __field(u32, cid)
			     __field(u8, op)
			     __field(u8, flags)
			     __field(u8, response)
			     __field(u8, status)
			     __field(u32, itt)
			     __field(u32, ttt)
			     __field(u32, statsn)
			     __field(u32, exp_cmdsn)
			     __field(u32, max_cmdsn)
			     __field(u32, datasn)
			     __field(u32, offset)
			     __field(u32, xferlen)
			     __field(u32, residual)
			     __field(u32, ahslen)
			     __field(u32, dlen)),
	    TP_fast_assign(__entry->sid = ifc->session->sid;
			   __entry->cid = ifc->cid;
			   __entry->op = itcp_trace_op(bhs);
			   __entry->flags = ((const u8 *)bhs)[1];
			   __entry->response = itcp_trace_byte(bhs, 2,
							       ITCP_OPS4(SCSI_CMD_RSP,
									 SCSI_TMFUNC_RSP,
									 LOGOUT_RSP, REJECT));
			   __entry->status = itcp_trace_byte(bhs, 3,
							     ITCP_OPS2(SCSI_CMD_RSP,
								       SCSI_DATA_IN));
			   __entry->itt = itcp_trace_word(bhs, 16, U64_MAX);
			   __entry->ttt = itcp_trace_word(bhs, 20,
							  ITCP_OPS4(SCSI_DATA_IN, R2T, NOOP_IN,
								    TEXT_RSP));
			   __entry->statsn = itcp_trace_statsn(bhs);
			   __entry->exp_cmdsn = itcp_trace_word(bhs, 28, U64_MAX);
			   __entry->max_cmdsn = itcp_trace_word(bhs, 32, U64_MAX);
			   __entry->datasn = itcp_trace_word(bhs, 36,
							     ITCP_OPS3(SCSI_DATA_IN, R2T,
								       SCSI_CMD_RSP));
			   __entry->offset = itcp_trace_word(bhs, 40,
							     ITCP_OPS2(SCSI_DATA_IN, R2T));
			   __entry->xferlen = itcp_trace_word(bhs, 44, BIT_ULL(ISCSI_OP_R2T));
			   __entry->residual = itcp_trace_word(bhs, 44,
							       ITCP_OPS2(SCSI_DATA_IN,
									 SCSI_CMD_RSP));
			   __entry->ahslen = ((const u8 *)bhs)[4] * 4;
			   __entry->dlen = itcp_trace_dlen(bhs);),
	    TP_printk("sid=%u cid=%u op=%s flags=0x%02x response=0x%02x status=0x%02x itt=0x%08x ttt=0x%08x statsn=%u exp_cmdsn=%u max_cmdsn=%u datasn=%u offset=%u xferlen=%u residual=%u ahslen=%u dlen=%u",
		      __entry->sid, __entry->cid, show_iscsi_opcode(__entry->op),
		      __entry->flags, __entry->response, __entry->status,
		      __entry->itt, __entry->ttt, __entry->statsn,
		      __entry->exp_cmdsn, __entry->max_cmdsn, __entry->datasn,
		      __entry->offset, __entry->xferlen, __entry->residual,
		      __entry->ahslen, __entry->dlen)
);

/**
 * iscsi_tcp_cmd_done - a SCSI command leaves the task table with its result
 * @ifs: the session
 * @sc: the command, its result set
 * @itt: its Initiator Task Tag
 * @cmdsn: its CmdSN
 *
 * The result comes from a SCSI Response, the status in the last Data-In, a
 * Reject, or the stop of the command's connection.
 * Fields: sid, itt, cmdsn, lun; cdb (the CDB's operation code), dir, len
 * (the command's buffer), resid (what the target did not transfer); result
 * (host byte << 16 | SCSI status); latency_ns, from the block layer's start
 * of the request (where iostat's await starts) to this completion, 0 when
 * the block layer did not time it (I/O statistics off and no I/O
 * scheduler). The latency is computed here: only when the event is on.
 */
TRACE_EVENT(iscsi_tcp_cmd_done,
	    TP_PROTO(const struct iscsi_if_session *ifs, struct scsi_cmnd *sc, u32 itt,
		     u32 cmdsn),
	    TP_ARGS(ifs, sc, itt, cmdsn),
	    TP_STRUCT__entry(__field(u32, sid)
			     __field(u32, itt)
			     __field(u32, cmdsn)
			     __field(u64, lun)
			     __field(u8, cdb)
			     __field(u8, dir)
			     __field(u32, len)
			     __field(u32, resid)
			     __field(u32, result)
			     __field(u64, latency_ns)),
	    TP_fast_assign(__entry->sid = ifs->sid;
			   __entry->itt = itt;
			   __entry->cmdsn = cmdsn;
			   __entry->lun = sc->device->lun;
			   __entry->cdb = sc->cmnd[0];
			   __entry->dir = sc->sc_data_direction;
			   __entry->len = scsi_bufflen(sc);
			   __entry->resid = scsi_get_resid(sc);
			   __entry->result = sc->result;
			   __entry->latency_ns = itcp_trace_latency(sc);),
	    TP_printk("sid=%u itt=0x%08x cmdsn=%u lun=%llu cdb=0x%02x dir=%s len=%u resid=%u result=0x%x latency_ns=%llu",
		      __entry->sid, __entry->itt, __entry->cmdsn, __entry->lun,
		      __entry->cdb, show_dma_dir(__entry->dir), __entry->len,
		      __entry->resid, __entry->result, __entry->latency_ns)
);

/**
 * iscsi_tcp_conn_state - a connection changes state in the data path
 * @ifc: the connection
 * @state: ISCSI_IF_CONN_BOUND (BIND_CONN took the socket), _STARTED ("up":
 *	SCSI commands may flow), _FAILED (the receive or transmit path raised a
 *	connection error) or _STOPPED (STOP_CONN: commands failed, the socket
 *	given back)
 * @reason: the enum iscsi_if_err of a failure (field err), the
 *	ISCSI_IF_STOP_* flag of a stop (field stop), 0 otherwise
 */
TRACE_EVENT(iscsi_tcp_conn_state,
	    TP_PROTO(const struct iscsi_if_conn *ifc, int state, int reason),
	    TP_ARGS(ifc, state, reason),
	    TP_STRUCT__entry(__field(u32, sid)
			     __field(u32, cid)
			     __field(u8, state)
			     __field(u8, err)
			     __field(u8, stop)),
	    TP_fast_assign(__entry->sid = ifc->session->sid;
			   __entry->cid = ifc->cid;
			   __entry->state = state;
			   __entry->err = state == ISCSI_IF_CONN_FAILED ? reason : 0;
			   __entry->stop = state == ISCSI_IF_CONN_STOPPED ? reason : 0;),
	    TP_printk("sid=%u cid=%u state=%s err=%s stop=%s",
		      __entry->sid, __entry->cid, show_conn_state(__entry->state),
		      show_conn_err(__entry->err), show_stop_flag(__entry->stop))
);

#endif /* _ISCSI_TCP_TRACE_H */

/* Out of tree: define_trace.h finds this file through -I$(src) (Kbuild). */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE iscsi_tcp_trace
#include <trace/define_trace.h>

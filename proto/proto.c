/* SPDX-License-Identifier: MIT */
/*
 * Encoding and decoding of memguard messages.  Each message type is a table
 * of fields (wire kind + where the value lives in struct mg_msg); one loop
 * encodes and one decodes every type, so the wire layout is written down
 * exactly once, here, and in docs/protocol.md.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "macro.h"
#include "proto.h"

enum field_kind { F_U8, F_U16, F_U32, F_U64, F_STR };

struct field {
	enum field_kind kind;
	uint16_t offset;                 /* into struct mg_msg */
	uint16_t max;                    /* F_STR: longest string in bytes */
};

#define U8(m) { F_U8, offsetof(struct mg_msg, m), 0 }
#define U16(m) { F_U16, offsetof(struct mg_msg, m), 0 }
#define U32(m) { F_U32, offsetof(struct mg_msg, m), 0 }
#define U64(m) { F_U64, offsetof(struct mg_msg, m), 0 }
#define STR(m, n) { F_STR, offsetof(struct mg_msg, m), n }

static const struct field hello_fields[] = {
	U32(hello.capabilities), STR(hello.service, MG_NAME_MAX),
	STR(hello.process, MG_NAME_MAX),
};
static const struct field report_fields[] = {
	U64(report.heap_sys), U64(report.heap_inuse), U64(report.heap_idle),
	U64(report.heap_released), U64(report.external), U64(report.admitted),
	U64(report.rejected), U64(report.released_total), U16(report.gc_percent),
};
static const struct field released_fields[] = {
	U32(released.directive_seq), U64(released.bytes), U64(released.usec),
};
static const struct field ping_fields[] = {
	U64(ping.cookie),
};
static const struct field bye_fields[] = {
	U32(bye.reason),
};
static const struct field welcome_fields[] = {
	U64(welcome.client_id), U64(welcome.budget), U32(welcome.report_interval_ms),
	STR(welcome.service, MG_NAME_MAX),
};
static const struct field directive_fields[] = {
	U8(directive.level), U16(directive.gc_percent), U16(directive.throttle),
	U64(directive.soft_limit), U64(directive.release), U32(directive.deadline_ms),
};
static const struct field error_fields[] = {
	U32(error.code), STR(error.text, MG_TEXT_MAX),
};
static const struct field board_fields[] = {
	U32(board.slot), U32(board.slots),
};
static const struct field clients_fields[] = {
	STR(clients.service, MG_NAME_MAX),
};
static const struct field release_fields[] = {
	U64(release.bytes), STR(release.service, MG_NAME_MAX),
};
static const struct field set_budget_fields[] = {
	U64(set_budget.budget), STR(set_budget.service, MG_NAME_MAX),
};
static const struct field status_daemon_fields[] = {
	U32(status_daemon.services), U32(status_daemon.clients),
	U64(status_daemon.mem_total), U64(status_daemon.mem_available),
	U32(status_daemon.host_some_avg10), U32(status_daemon.host_full_avg10),
	U32(status_daemon.tick_ms), STR(status_daemon.version, MG_NAME_MAX),
};
static const struct field status_service_fields[] = {
	U8(status_service.level), U8(status_service.enforce),
	U8(status_service.escalation), U8(status_service.psi_mode),
	U16(status_service.gc_percent), U16(status_service.throttle),
	U32(status_service.clients), U32(status_service.utilization),
	U32(status_service.some_avg10), U32(status_service.full_avg10),
	U64(status_service.budget), U64(status_service.working_set),
	U64(status_service.released_total),
	STR(status_service.name, MG_NAME_MAX), STR(status_service.cgroup, MG_PATH_MAX),
};
static const struct field client_info_fields[] = {
	U64(client_info.client_id), U32(client_info.pid), U32(client_info.uid),
	U64(client_info.heap_sys), U64(client_info.heap_inuse),
	U64(client_info.heap_released), U32(client_info.last_directive_seq),
	U8(client_info.last_level), U32(client_info.asked), U32(client_info.answered),
	U64(client_info.asked_bytes), U64(client_info.released_bytes),
	U32(client_info.response_us),
	STR(client_info.service, MG_NAME_MAX), STR(client_info.process, MG_NAME_MAX),
};
static const struct field result_fields[] = {
	U32(result.code), STR(result.text, MG_TEXT_MAX),
};

struct msg_desc {
	uint16_t type;
	enum mg_sender sender;
	const char *name;
	const struct field *fields;
	size_t n_fields;
};

#define DESC(t, s, f) { MG_MSG_##t, MG_SENDER_##s, #t, f, ARRAY_SIZE(f) }
#define DESC_EMPTY(t, s) { MG_MSG_##t, MG_SENDER_##s, #t, NULL, 0 }

static const struct msg_desc descs[] = {
	DESC(HELLO, CLIENT, hello_fields),
	DESC(REPORT, CLIENT, report_fields),
	DESC(RELEASED, CLIENT, released_fields),
	DESC(PONG, CLIENT, ping_fields),
	DESC(BYE, ANY, bye_fields),
	DESC(WELCOME, DAEMON, welcome_fields),
	DESC(DIRECTIVE, DAEMON, directive_fields),
	DESC(PING, DAEMON, ping_fields),
	DESC(ERROR, DAEMON, error_fields),
	DESC(BOARD, DAEMON, board_fields),
	DESC_EMPTY(STATUS, ADMIN),
	DESC(CLIENTS, ADMIN, clients_fields),
	DESC(RELEASE, ADMIN, release_fields),
	DESC_EMPTY(RELOAD, ADMIN),
	DESC(SET_BUDGET, ADMIN, set_budget_fields),
	DESC(STATUS_DAEMON, DAEMON, status_daemon_fields),
	DESC(STATUS_SERVICE, DAEMON, status_service_fields),
	DESC(CLIENT_INFO, DAEMON, client_info_fields),
	DESC(RESULT, DAEMON, result_fields),
};

static const struct msg_desc *desc_of(uint16_t type)
{
	for (size_t i = 0; i < ARRAY_SIZE(descs); i++)
		if (descs[i].type == type)
			return &descs[i];
	return NULL;
}

const char *proto_type_name(uint16_t type)
{
	const struct msg_desc *d = desc_of(type);

	return d ? d->name : NULL;
}

enum mg_sender proto_type_sender(uint16_t type)
{
	const struct msg_desc *d = desc_of(type);

	return d ? d->sender : MG_SENDER_NONE;
}

const char *proto_level_name(unsigned level)
{
	static const char *const names[] = {
		[MG_LEVEL_NORMAL] = "NORMAL",
		[MG_LEVEL_WARN] = "WARN",
		[MG_LEVEL_CRITICAL] = "CRITICAL",
		[MG_LEVEL_EMERGENCY] = "EMERGENCY",
	};

	return level < ARRAY_SIZE(names) ? names[level] : NULL;
}

const char *proto_enforce_name(unsigned enforce)
{
	static const char *const names[] = {
		[MG_ENFORCE_NOTIFY] = "notify",
		[MG_ENFORCE_HIGH] = "high",
		[MG_ENFORCE_KILL] = "kill",
	};

	return enforce < ARRAY_SIZE(names) ? names[enforce] : NULL;
}

const char *proto_err_name(unsigned code)
{
	static const char *const names[] = {
		[MG_ERR_OK] = "success",
		[MG_ERR_PROTOCOL] = "protocol error",
		[MG_ERR_VERSION] = "protocol version not supported",
		[MG_ERR_SERVICE] = "service does not match the peer's cgroup",
		[MG_ERR_PERMISSION] = "permission denied",
		[MG_ERR_NO_SERVICE] = "no such service",
		[MG_ERR_INVALID] = "invalid value",
		[MG_ERR_BUSY] = "busy",
		[MG_ERR_INTERNAL] = "internal error",
		[MG_ERR_CONFIG] = "configuration error",
	};

	return code < ARRAY_SIZE(names) ? names[code] : NULL;
}

/* Names travel into logs and cgroup lookups: printable ASCII only. */
static bool name_char_ok(char c)
{
	return (unsigned char)c >= 0x20 && (unsigned char)c < 0x7f;
}

bool proto_name_ok(const char *s)
{
	for (; *s; s++)
		if (!name_char_ok(*s))
			return false;
	return true;
}

void proto_name_copy(char *dst, size_t size, const char *src, char replacement)
{
	size_t i;

	assert(size > 0);
	for (i = 0; src[i] && i + 1 < size; i++)
		dst[i] = name_char_ok(src[i]) ? src[i] : replacement;
	dst[i] = 0;
}

/* docs/protocol.md §8.2: levels 0..3 on the wire, the API's values. */
_Static_assert(MG_LEVEL_NORMAL == 0 && MG_LEVEL_WARN == 1 && MG_LEVEL_CRITICAL == 2 &&
		       MG_LEVEL_EMERGENCY == 3,
	       "the wire's levels are the API's");

static bool directive_ok(const struct mg_directive *d)
{
	return d->level <= MG_LEVEL_EMERGENCY && d->throttle <= MG_THROTTLE_MAX;
}

int proto_msg_validate(const struct mg_msg *m)
{
	const struct msg_desc *d = desc_of(m->hdr.type);
	const char *base = (const char *)m;

	if (!d)
		return -EINVAL;

	/* Every string must end inside its field. */
	for (size_t i = 0; i < d->n_fields; i++) {
		const struct field *f = &d->fields[i];

		if (f->kind == F_STR && !memchr(base + f->offset, 0, (size_t)f->max + 1))
			return -EINVAL;
	}

	switch (m->hdr.type) {
	case MG_MSG_HELLO:
		if (!proto_name_ok(m->hello.service) || !proto_name_ok(m->hello.process))
			return -EINVAL;
		break;
	case MG_MSG_WELCOME:
		if (!proto_name_ok(m->welcome.service))
			return -EINVAL;
		break;
	case MG_MSG_DIRECTIVE:
		if (!directive_ok(&m->directive))
			return -EINVAL;
		break;
	case MG_MSG_BOARD:
		if (m->board.slots == 0 || m->board.slot >= m->board.slots)
			return -EINVAL;
		break;
	case MG_MSG_CLIENTS:
		if (!proto_name_ok(m->clients.service))
			return -EINVAL;
		break;
	case MG_MSG_RELEASE:
		if (!proto_name_ok(m->release.service) || m->release.service[0] == 0)
			return -EINVAL;
		break;
	case MG_MSG_SET_BUDGET:
		if (!proto_name_ok(m->set_budget.service) || m->set_budget.service[0] == 0 ||
		    m->set_budget.budget == 0)
			return -EINVAL;
		break;
	case MG_MSG_STATUS_SERVICE: {
		const struct mg_status_service *s = &m->status_service;

		if (s->level > MG_LEVEL_EMERGENCY || s->enforce > MG_ENFORCE_KILL ||
		    s->escalation > MG_ESCALATION_KILLED || s->psi_mode > MG_PSI_POLLING ||
		    s->throttle > MG_THROTTLE_MAX || !proto_name_ok(s->name))
			return -EINVAL;
		break;
	}
	case MG_MSG_CLIENT_INFO:
		if (m->client_info.last_level > MG_LEVEL_EMERGENCY ||
		    !proto_name_ok(m->client_info.service) || !proto_name_ok(m->client_info.process))
			return -EINVAL;
		break;
	default:
		break;
	}
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static size_t int_size(enum field_kind k)
{
	switch (k) {
	case F_U8:
		return 1;
	case F_U16:
		return 2;
	case F_U32:
		return 4;
	case F_U64:
		return 8;
	default:
		return 0;
	}
}

/* Integer fields are read and written through memcpy of the exact width,
 * since the struct member's alignment is not the wire's concern. */
static uint64_t load_int(const void *p, enum field_kind k)
{
	uint8_t v8;
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;

	switch (k) {
	case F_U8:
		memcpy(&v8, p, 1);
		return v8;
	case F_U16:
		memcpy(&v16, p, 2);
		return v16;
	case F_U32:
		memcpy(&v32, p, 4);
		return v32;
	default:
		memcpy(&v64, p, 8);
		return v64;
	}
}

static void store_int(void *p, enum field_kind k, uint64_t v)
{
	uint8_t v8 = (uint8_t)v;
	uint16_t v16 = (uint16_t)v;
	uint32_t v32 = (uint32_t)v;

	switch (k) {
	case F_U8:
		memcpy(p, &v8, 1);
		break;
	case F_U16:
		memcpy(p, &v16, 2);
		break;
	case F_U32:
		memcpy(p, &v32, 4);
		break;
	default:
		memcpy(p, &v, 8);
		break;
	}
}

static void header_put(uint8_t *p, const struct mg_header *h)
{
	put_le(p + 0, h->type, 2);
	put_le(p + 2, h->version, 2);
	put_le(p + 4, h->length, 4);
	put_le(p + 8, h->seq, 4);
	put_le(p + 12, h->flags, 4);
}

int proto_msg_encode(const struct mg_msg *m, void *buf, size_t size)
{
	const struct msg_desc *d = desc_of(m->hdr.type);
	const char *base = (const char *)m;
	uint8_t *out = buf;
	size_t pos = MG_HEADER_SIZE;
	struct mg_header h;
	int r;

	r = proto_msg_validate(m);
	if (r < 0)
		return r;

	for (size_t i = 0; i < d->n_fields; i++) {
		const struct field *f = &d->fields[i];
		const void *src = base + f->offset;

		if (f->kind == F_STR) {
			size_t n = strlen(src);

			if (size < pos + 2 + n)
				return -ENOBUFS;
			put_le(out + pos, n, 2);
			memcpy(out + pos + 2, src, n);
			pos += 2 + n;
		} else {
			size_t n = int_size(f->kind);

			if (size < pos + n)
				return -ENOBUFS;
			put_le(out + pos, load_int(src, f->kind), n);
			pos += n;
		}
	}
	if (size < MG_HEADER_SIZE || pos > MG_MSG_MAX)
		return -ENOBUFS;

	h = m->hdr;
	h.version = MG_PROTO_VERSION;
	h.length = (uint32_t)(pos - MG_HEADER_SIZE);
	header_put(out, &h);
	return (int)pos;
}

int proto_header_decode(const void *buf, size_t len, struct mg_header *ret)
{
	const uint8_t *p = buf;
	struct mg_header h;

	if (len < MG_HEADER_SIZE)
		return -EBADMSG;

	h.type = (uint16_t)get_le(p + 0, 2);
	h.version = (uint16_t)get_le(p + 2, 2);
	h.length = (uint32_t)get_le(p + 4, 4);
	h.seq = (uint32_t)get_le(p + 8, 4);
	h.flags = (uint32_t)get_le(p + 12, 4);
	if (h.length != len - MG_HEADER_SIZE)
		return -EBADMSG;

	*ret = h;
	return 0;
}

uint32_t proto_peek_seq(const void *buf, size_t len)
{
	return len < MG_HEADER_SIZE ? 0 : (uint32_t)get_le((const uint8_t *)buf + 8, 4);
}

int proto_msg_decode(const void *buf, size_t len, struct mg_msg *ret)
{
	const uint8_t *p = buf;
	const struct msg_desc *d;
	struct mg_msg m;
	char *base = (char *)&m;
	size_t pos = MG_HEADER_SIZE;
	int r;

	memset(&m, 0, sizeof(m));
	r = proto_header_decode(buf, len, &m.hdr);
	if (r < 0)
		return r;
	if (m.hdr.version != MG_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	d = desc_of(m.hdr.type);
	if (!d)
		return -EOPNOTSUPP;

	for (size_t i = 0; i < d->n_fields; i++) {
		const struct field *f = &d->fields[i];
		char *dst = base + f->offset;

		if (f->kind == F_STR) {
			size_t n;

			if (len - pos < 2)
				return -EBADMSG;
			n = get_le(p + pos, 2);
			pos += 2;
			if (n > f->max || len - pos < n || memchr(p + pos, 0, n))
				return -EBADMSG;
			memcpy(dst, p + pos, n);
			dst[n] = 0;
			pos += n;
		} else {
			size_t n = int_size(f->kind);

			if (len - pos < n)
				return -EBADMSG;
			store_int(dst, f->kind, get_le(p + pos, n));
			pos += n;
		}
	}
	/* Bytes after the known fields belong to a newer minor revision. */

	if (proto_msg_validate(&m) < 0)
		return -EBADMSG;

	*ret = m;
	return 0;
}

/*
 * The slot's sequence lock.  Every field is read and written atomically
 * (the reader may race the writer by design).  The writer makes the lock
 * odd, then stores each field with release order, so that a reader that
 * sees any new field value sees the odd lock too; then it makes the lock
 * even again, with release order.  The reader loads the lock and each
 * field with acquire order, so that its second load of the lock comes
 * after them, and keeps the copy only when the lock was even and
 * unchanged around it.  (Release stores and acquire loads cost nothing
 * more than plain ones on x86 and need no fences, which ThreadSanitizer
 * does not model.)
 */
#define LD(f) __atomic_load_n(&(f), __ATOMIC_ACQUIRE)
#define ST(f, v) __atomic_store_n(&(f), (v), __ATOMIC_RELEASE)
#define SLOT_READ_TRIES 64

void proto_slot_write(struct mg_board_slot *s, const struct mg_directive *d, uint64_t owner,
		      uint32_t seq, uint64_t stamp_ns)
{
	uint32_t lock = __atomic_load_n(&s->lock, __ATOMIC_RELAXED);

	__atomic_store_n(&s->lock, lock + 1, __ATOMIC_RELAXED);
	ST(s->seq, seq);
	ST(s->level, d->level);
	ST(s->gc_percent, d->gc_percent);
	ST(s->throttle, d->throttle);
	ST(s->soft_limit, d->soft_limit);
	ST(s->stamp_ns, stamp_ns);
	ST(s->owner, owner);
	ST(s->lock, lock + 2);
}

int proto_slot_read(const struct mg_board_slot *s, uint64_t owner, struct mg_directive *ret,
		    uint32_t *ret_seq, uint64_t *ret_stamp_ns)
{
	for (int i = 0; i < SLOT_READ_TRIES; i++) {
		uint32_t lock = LD(s->lock), seq;
		struct mg_directive d = { 0 };
		uint64_t stamp, who;

		if (lock & 1)
			continue;
		seq = LD(s->seq);
		d.level = LD(s->level);
		d.gc_percent = LD(s->gc_percent);
		d.throttle = LD(s->throttle);
		d.soft_limit = LD(s->soft_limit);
		stamp = LD(s->stamp_ns);
		who = LD(s->owner);
		if (__atomic_load_n(&s->lock, __ATOMIC_RELAXED) != lock)
			continue;
		if (seq == 0 || who != owner)
			return -ENODATA;
		if (!directive_ok(&d))
			return -EBADMSG;
		*ret = d;
		if (ret_seq)
			*ret_seq = seq;
		if (ret_stamp_ns)
			*ret_stamp_ns = stamp;
		return 0;
	}
	return -EAGAIN;
}

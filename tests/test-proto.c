/* SPDX-License-Identifier: MIT */
/*
 * Tests of the wire format (proto/proto.c): every message type round trips
 * with boundary values, literal byte arrays pin the layout, and every way a
 * datagram can be short, long or wrong is rejected with the documented
 * error.  Inputs handed to the decoder live in heap buffers of exactly their
 * length, so a sanitizer build catches any read past the end.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/macro.h"
#include "proto/proto.h"

static const uint16_t all_types[] = {
	MG_MSG_HELLO, MG_MSG_REPORT, MG_MSG_RELEASED, MG_MSG_PONG, MG_MSG_BYE,
	MG_MSG_WELCOME, MG_MSG_DIRECTIVE, MG_MSG_PING, MG_MSG_ERROR, MG_MSG_BOARD,
	MG_MSG_STATUS, MG_MSG_CLIENTS, MG_MSG_RELEASE, MG_MSG_RELOAD, MG_MSG_SET_BUDGET,
	MG_MSG_STATUS_DAEMON, MG_MSG_STATUS_SERVICE, MG_MSG_CLIENT_INFO, MG_MSG_RESULT,
};

#define N_TYPES ARRAY_SIZE(all_types)

/* Types that are not (or no longer) defined: must all be unknown. */
static const uint16_t unknown_types[] = {
	0x0000, 0x0006, 0x00ff, 0x0100, 0x0106, 0x0200, 0x0206,
	0x0300, 0x0305, 0x0400, 0x0401, 0x8001, 0xffff,
};

/* Byte values a name must not contain. */
static const uint8_t bad_name_bytes[] = {
	0x01, 0x09, 0x0a, 0x0d, 0x1b, 0x1f, 0x7f, 0x80, 0xc3, 0xff,
};

/* ---- little helpers ------------------------------------------------------ */

static void le_put(uint8_t *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le_get(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	for (size_t i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* A heap copy of exactly `len` bytes, so ASan sees reads past the end. */
static uint8_t *dup_exact(const void *buf, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	memcpy(p, buf, len);
	return p;
}

/* Decode a copy of `buf` of exactly `len` bytes; `*ret` as for decode. */
static int decode_exact(const void *buf, size_t len, struct mg_msg *ret)
{
	_cleanup_free_ uint8_t *p = dup_exact(buf, len);

	return proto_msg_decode(p, len, ret);
}

/* Decoding must fail with `err` and leave the output untouched. */
static void assert_decode_fails(const void *buf, size_t len, int err)
{
	struct mg_msg out, before;

	memset(&out, 0xa5, sizeof(out));
	memcpy(&before, &out, sizeof(before));
	assert_int_equal(decode_exact(buf, len, &out), err);
	assert_memory_equal(&out, &before, sizeof(out));
}

static void assert_decode_ok(const void *buf, size_t len, struct mg_msg *ret)
{
	memset(ret, 0, sizeof(*ret));
	assert_int_equal(decode_exact(buf, len, ret), 0);
}

/* ---- sample messages ----------------------------------------------------- */

enum variant {
	V_ZERO,    /* integers 0, strings empty (one byte where one is required) */
	V_MAX,     /* integers at the top of their width or range, strings at their max */
	V_PATTERN, /* every byte of every field differs: catches swapped bytes or fields */
	N_VARIANTS,
};

/* An integer of `bytes` width for field number `k` of a message. */
static uint64_t ival(enum variant v, size_t bytes, unsigned k)
{
	uint64_t x = 0;

	switch (v) {
	case V_ZERO:
		return 0;
	case V_MAX:
		return bytes == 8 ? UINT64_MAX : (UINT64_C(1) << (8 * bytes)) - 1;
	default:
		for (size_t i = 0; i < bytes; i++)
			x |= (uint64_t)(uint8_t)(0x10 * k + i + 1) << (8 * i);
		return x;
	}
}

#define U16V(v, k) ((uint16_t)ival(v, 2, k))
#define U32V(v, k) ((uint32_t)ival(v, 4, k))
#define U64V(v, k) ival(v, 8, k)

/*
 * A string of printable ASCII in `s` (room for max + 1 bytes): empty (or
 * one byte when `required`), `max` bytes covering 0x20..0x7e, or a short
 * one that differs for each `k`.
 */
static void sval(char *s, size_t max, enum variant v, unsigned k, bool required)
{
	size_t n;

	switch (v) {
	case V_ZERO:
		n = required ? 1 : 0;
		break;
	case V_MAX:
		n = max;
		break;
	default:
		n = 3 + k;
		break;
	}
	for (size_t i = 0; i < n; i++)
		s[i] = (char)(0x20 + (i + 7 * k) % 95);
	s[n] = 0;
}

static void fill_directive(struct mg_directive *d, enum variant v, unsigned k)
{
	static const uint8_t level[] = { MG_LEVEL_NORMAL, MG_LEVEL_EMERGENCY, MG_LEVEL_CRITICAL };
	static const uint16_t throttle[] = { 0, MG_THROTTLE_MAX, 0x0304 };

	d->level = level[v];
	d->gc_percent = U16V(v, k);
	d->throttle = throttle[v];
	d->soft_limit = U64V(v, k + 1);
	d->release = U64V(v, k + 2);
	d->deadline_ms = U32V(v, k + 3);
}

/* A valid message of `type` holding the values of variant `v`. */
static void fill(struct mg_msg *m, uint16_t type, enum variant v)
{
	memset(m, 0, sizeof(*m));
	m->hdr.type = type;
	/* encode fills in version and length whatever they hold */
	m->hdr.version = U16V(v, 12);
	m->hdr.length = U32V(v, 13);
	m->hdr.seq = U32V(v, 14);
	m->hdr.flags = U32V(v, 15);

	switch (type) {
	case MG_MSG_HELLO:
		m->hello.capabilities = U32V(v, 1);
		sval(m->hello.service, MG_NAME_MAX, v, 2, false);
		sval(m->hello.process, MG_NAME_MAX, v, 3, false);
		break;
	case MG_MSG_REPORT:
		m->report.heap_sys = U64V(v, 1);
		m->report.heap_inuse = U64V(v, 2);
		m->report.heap_idle = U64V(v, 3);
		m->report.heap_released = U64V(v, 4);
		m->report.external = U64V(v, 5);
		m->report.admitted = U64V(v, 6);
		m->report.rejected = U64V(v, 7);
		m->report.released_total = U64V(v, 8);
		m->report.gc_percent = U16V(v, 9);
		break;
	case MG_MSG_RELEASED:
		m->released.directive_seq = U32V(v, 1);
		m->released.bytes = U64V(v, 2);
		m->released.usec = U64V(v, 3);
		break;
	case MG_MSG_PING:
	case MG_MSG_PONG:
		m->ping.cookie = U64V(v, 1);
		break;
	case MG_MSG_BYE:
		m->bye.reason = U32V(v, 1);
		break;
	case MG_MSG_WELCOME:
		m->welcome.client_id = U64V(v, 1);
		m->welcome.budget = U64V(v, 2);
		m->welcome.report_interval_ms = U32V(v, 3);
		sval(m->welcome.service, MG_NAME_MAX, v, 8, false);
		break;
	case MG_MSG_DIRECTIVE:
		fill_directive(&m->directive, v, 1);
		break;
	case MG_MSG_ERROR:
		m->error.code = U32V(v, 1);
		sval(m->error.text, MG_TEXT_MAX, v, 2, false);
		break;
	case MG_MSG_BOARD:
		/* slot < slots: 0 of 1, the top of the range, or a pattern */
		m->board.slots = v == V_ZERO ? 1 : U32V(v, 2);
		m->board.slot = v == V_MAX ? UINT32_MAX - 1 : U32V(v, 1);
		break;
	case MG_MSG_STATUS:
	case MG_MSG_RELOAD:
		break;
	case MG_MSG_CLIENTS:
		sval(m->clients.service, MG_NAME_MAX, v, 1, false);
		break;
	case MG_MSG_RELEASE:
		m->release.bytes = U64V(v, 1);
		sval(m->release.service, MG_NAME_MAX, v, 2, true);
		break;
	case MG_MSG_SET_BUDGET:
		m->set_budget.budget = v == V_ZERO ? 1 : U64V(v, 1);
		sval(m->set_budget.service, MG_NAME_MAX, v, 2, true);
		break;
	case MG_MSG_STATUS_DAEMON:
		m->status_daemon.services = U32V(v, 1);
		m->status_daemon.clients = U32V(v, 2);
		m->status_daemon.mem_total = U64V(v, 3);
		m->status_daemon.mem_available = U64V(v, 4);
		m->status_daemon.host_some_avg10 = U32V(v, 5);
		m->status_daemon.host_full_avg10 = U32V(v, 6);
		m->status_daemon.tick_ms = U32V(v, 7);
		sval(m->status_daemon.version, MG_NAME_MAX, v, 8, false);
		break;
	case MG_MSG_STATUS_SERVICE: {
		static const uint8_t level[] = { 0, MG_LEVEL_EMERGENCY, MG_LEVEL_EMERGENCY };
		static const uint8_t enforce[] = { 0, MG_ENFORCE_KILL, MG_ENFORCE_HIGH };
		static const uint8_t escal[] = { 0, MG_ESCALATION_KILLED, MG_ESCALATION_KILLED };
		static const uint8_t psi[] = { 0, MG_PSI_POLLING, MG_PSI_ABSENT };
		static const uint16_t throttle[] = { 0, MG_THROTTLE_MAX, 0x0304 };
		struct mg_status_service *s = &m->status_service;

		s->level = level[v];
		s->enforce = enforce[v];
		s->escalation = escal[v];
		s->psi_mode = psi[v];
		s->gc_percent = U16V(v, 1);
		s->throttle = throttle[v];
		s->clients = U32V(v, 2);
		s->utilization = U32V(v, 3);
		s->some_avg10 = U32V(v, 4);
		s->full_avg10 = U32V(v, 5);
		s->budget = U64V(v, 6);
		s->working_set = U64V(v, 7);
		s->released_total = U64V(v, 8);
		sval(s->name, MG_NAME_MAX, v, 9, false);
		sval(s->cgroup, MG_PATH_MAX, v, 10, false);
		break;
	}
	case MG_MSG_CLIENT_INFO: {
		static const uint8_t level[] = { 0, MG_LEVEL_EMERGENCY, MG_LEVEL_WARN };
		struct mg_client_info *c = &m->client_info;

		c->client_id = U64V(v, 1);
		c->pid = U32V(v, 2);
		c->uid = U32V(v, 3);
		c->heap_sys = U64V(v, 4);
		c->heap_inuse = U64V(v, 5);
		c->heap_released = U64V(v, 6);
		c->last_directive_seq = U32V(v, 7);
		c->last_level = level[v];
		c->asked = U32V(v, 8);
		c->answered = U32V(v, 9);
		c->asked_bytes = U64V(v, 10);
		c->released_bytes = U64V(v, 11);
		c->response_us = U32V(v, 0);
		sval(c->service, MG_NAME_MAX, v, 12, false);
		sval(c->process, MG_NAME_MAX, v, 13, false);
		break;
	}
	case MG_MSG_RESULT:
		m->result.code = U32V(v, 1);
		sval(m->result.text, MG_TEXT_MAX, v, 2, false);
		break;
	default:
		fail_msg("no sample for type 0x%04x", type);
	}
}

/* Encode `m` into `buf` (MG_MSG_MAX bytes); returns the datagram's length. */
static size_t encode_ok(const struct mg_msg *m, uint8_t *buf)
{
	int n = proto_msg_encode(m, buf, MG_MSG_MAX);

	assert_true(n >= MG_HEADER_SIZE);
	return (size_t)n;
}

/*
 * Encode `m`, check the datagram is `body` bytes after the header, decode
 * it into `*d` and check the header; the caller checks the body's fields.
 * The whole decoded struct must also equal `m` (decode zeroes it first), and
 * encoding the decoded message must give the same bytes again.
 */
static void roundtrip(const struct mg_msg *m, struct mg_msg *d, size_t body)
{
	uint8_t buf[MG_MSG_MAX], again[MG_MSG_MAX];
	struct mg_msg want;
	size_t n;

	assert_int_equal(proto_msg_validate(m), 0);
	n = encode_ok(m, buf);
	assert_int_equal(n, MG_HEADER_SIZE + body);
	assert_int_equal(le_get(buf + 4, 4), body);

	assert_decode_ok(buf, n, d);
	assert_int_equal(d->hdr.type, m->hdr.type);
	assert_int_equal(d->hdr.version, MG_PROTO_VERSION);
	assert_int_equal(d->hdr.length, body);
	assert_int_equal(d->hdr.seq, m->hdr.seq);
	assert_int_equal(d->hdr.flags, m->hdr.flags);

	memcpy(&want, m, sizeof(want));
	want.hdr.version = MG_PROTO_VERSION;
	want.hdr.length = (uint32_t)body;
	assert_memory_equal(d, &want, sizeof(want));

	assert_int_equal(proto_msg_encode(d, again, sizeof(again)), (int)n);
	assert_memory_equal(again, buf, n);
}

/* ---- round trips, one test per type --------------------------------------- */

static void check_directive(const struct mg_directive *a, const struct mg_directive *b)
{
	assert_int_equal(a->level, b->level);
	assert_int_equal(a->gc_percent, b->gc_percent);
	assert_int_equal(a->throttle, b->throttle);
	assert_int_equal(a->soft_limit, b->soft_limit);
	assert_int_equal(a->release, b->release);
	assert_int_equal(a->deadline_ms, b->deadline_ms);
}

#define DIRECTIVE_SIZE (1 + 2 + 2 + 8 + 8 + 4)

static void test_roundtrip_hello(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_HELLO, v);
		roundtrip(&m, &d, 4 + 2 + strlen(m.hello.service) + 2 + strlen(m.hello.process));
		assert_int_equal(d.hello.capabilities, m.hello.capabilities);
		assert_string_equal(d.hello.service, m.hello.service);
		assert_string_equal(d.hello.process, m.hello.process);
	}
}

static void test_roundtrip_report(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_REPORT, v);
		roundtrip(&m, &d, 8 * 8 + 2);
		assert_int_equal(d.report.heap_sys, m.report.heap_sys);
		assert_int_equal(d.report.heap_inuse, m.report.heap_inuse);
		assert_int_equal(d.report.heap_idle, m.report.heap_idle);
		assert_int_equal(d.report.heap_released, m.report.heap_released);
		assert_int_equal(d.report.external, m.report.external);
		assert_int_equal(d.report.admitted, m.report.admitted);
		assert_int_equal(d.report.rejected, m.report.rejected);
		assert_int_equal(d.report.released_total, m.report.released_total);
		assert_int_equal(d.report.gc_percent, m.report.gc_percent);
	}
}

static void test_roundtrip_released(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_RELEASED, v);
		roundtrip(&m, &d, 4 + 8 + 8);
		assert_int_equal(d.released.directive_seq, m.released.directive_seq);
		assert_int_equal(d.released.bytes, m.released.bytes);
		assert_int_equal(d.released.usec, m.released.usec);
	}
}

static void test_roundtrip_pong(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_PONG, v);
		roundtrip(&m, &d, 8);
		assert_int_equal(d.ping.cookie, m.ping.cookie);
	}
}

static void test_roundtrip_bye(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_BYE, v);
		roundtrip(&m, &d, 4);
		assert_int_equal(d.bye.reason, m.bye.reason);
	}
}

static void test_roundtrip_welcome(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_WELCOME, v);
		roundtrip(&m, &d, 8 + 8 + 4 + 2 + strlen(m.welcome.service));
		assert_int_equal(d.welcome.client_id, m.welcome.client_id);
		assert_int_equal(d.welcome.budget, m.welcome.budget);
		assert_int_equal(d.welcome.report_interval_ms, m.welcome.report_interval_ms);
		assert_string_equal(d.welcome.service, m.welcome.service);
	}
}

static void test_roundtrip_directive(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_DIRECTIVE, v);
		roundtrip(&m, &d, DIRECTIVE_SIZE);
		check_directive(&d.directive, &m.directive);
	}
}

static void test_roundtrip_ping(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_PING, v);
		roundtrip(&m, &d, 8);
		assert_int_equal(d.ping.cookie, m.ping.cookie);
	}
}

static void test_roundtrip_error(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_ERROR, v);
		roundtrip(&m, &d, 4 + 2 + strlen(m.error.text));
		assert_int_equal(d.error.code, m.error.code);
		assert_string_equal(d.error.text, m.error.text);
	}
}

static void test_roundtrip_board(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_BOARD, v);
		roundtrip(&m, &d, 8);
		assert_int_equal(d.board.slot, m.board.slot);
		assert_int_equal(d.board.slots, m.board.slots);
	}
}

/* ---- board slots --------------------------------------------------------- */

static void test_slot_roundtrip(void **state)
{
	struct mg_board_slot s = { 0 };
	struct mg_directive d, want = {
		.level = MG_LEVEL_CRITICAL, .gc_percent = 25, .throttle = MG_THROTTLE_MAX,
		.soft_limit = UINT64_MAX - 3, .release = 99, .deadline_ms = 7,
	};
	uint32_t seq = 0, lock;
	uint64_t stamp = 0;

	assert_int_equal(proto_slot_read(&s, 77, &d, &seq, &stamp), -ENODATA);
	proto_slot_write(&s, &want, 77, 0xfffffffe, 123456789);
	assert_int_equal(s.lock, 2);
	assert_int_equal(proto_slot_read(&s, 77, &d, &seq, &stamp), 0);
	assert_int_equal(seq, 0xfffffffe);
	assert_int_equal(stamp, 123456789);
	assert_int_equal(d.level, want.level);
	assert_int_equal(d.gc_percent, want.gc_percent);
	assert_int_equal(d.throttle, want.throttle);
	assert_int_equal(d.soft_limit, want.soft_limit);
	/* A slot carries no release demand. */
	assert_int_equal(d.release, 0);
	assert_int_equal(d.deadline_ms, 0);
	assert_int_equal(proto_slot_read(&s, 77, &d, NULL, NULL), 0);
	assert_int_equal(s.owner, 77);
	/* Another client's slot is none of ours. */
	assert_int_equal(proto_slot_read(&s, 78, &d, NULL, NULL), -ENODATA);
	assert_int_equal(proto_slot_read(&s, 0, &d, NULL, NULL), -ENODATA);

	/* The reserved bytes stay zero; the lock moves by two per write. */
	want.level = MG_LEVEL_NORMAL;
	proto_slot_write(&s, &want, 77, 1, 0);
	assert_int_equal(s.lock, 4);
	for (size_t i = 0; i < sizeof(s.reserved); i++)
		assert_int_equal(s.reserved[i], 0);

	/* A write under way (odd lock) is never read. */
	lock = s.lock;
	s.lock = lock + 1;
	assert_int_equal(proto_slot_read(&s, 77, &d, &seq, NULL), -EAGAIN);
	s.lock = lock;
	assert_int_equal(proto_slot_read(&s, 77, &d, &seq, NULL), 0);
	assert_int_equal(seq, 1);
}

/* Out-of-range values in shared memory are refused like a DIRECTIVE's. */
static void test_slot_invalid(void **state)
{
	struct mg_board_slot s = { 0 };
	struct mg_directive d = { .level = MG_LEVEL_WARN };

	proto_slot_write(&s, &d, 77, 5, 0);
	s.level = MG_LEVEL_EMERGENCY + 1;
	assert_int_equal(proto_slot_read(&s, 77, &d, NULL, NULL), -EBADMSG);
	s.level = MG_LEVEL_EMERGENCY;
	s.throttle = MG_THROTTLE_MAX + 1;
	assert_int_equal(proto_slot_read(&s, 77, &d, NULL, NULL), -EBADMSG);
	s.throttle = MG_THROTTLE_MAX;
	assert_int_equal(proto_slot_read(&s, 77, &d, NULL, NULL), 0);
}

struct slot_race {
	struct mg_board_slot s;
	atomic_bool stop;
};

/* Every field derives from seq, so a torn read would show. */
static struct mg_directive race_directive(uint32_t seq)
{
	return (struct mg_directive){
		.level = (uint8_t)(seq % 4), .gc_percent = (uint16_t)seq,
		.throttle = (uint16_t)(seq % 1001), .soft_limit = (uint64_t)seq * 4099,
	};
}

static void *slot_writer(void *p)
{
	struct slot_race *r = p;

	for (uint32_t seq = 2; !atomic_load(&r->stop); seq++) {
		struct mg_directive d = race_directive(seq ? seq : 1);

		proto_slot_write(&r->s, &d, 77, seq ? seq : 1, (uint64_t)(seq ? seq : 1) << 20);
		/* A breath between writes, as the daemon's are: a reader on
		 * another CPU must find some, or every try meets a write. */
		for (volatile int k = 0; k < 256; k++)
			;
	}
	return NULL;
}

/* Reads racing a writer on another thread are whole or retried, never
 * torn. */
static void test_slot_race(void **state)
{
	struct slot_race r = { .stop = false };
	struct mg_directive d = race_directive(1);
	pthread_t t;
	unsigned whole = 0;

	proto_slot_write(&r.s, &d, 77, 1, 1 << 20);
	assert_int_equal(pthread_create(&t, NULL, slot_writer, &r), 0);
	for (int i = 0; i < 1000000 && whole < 20000; i++) {
		uint32_t seq;
		uint64_t stamp;
		int e = proto_slot_read(&r.s, 77, &d, &seq, &stamp);

		if (e == -EAGAIN)
			continue;
		assert_int_equal(e, 0);
		assert_int_equal(d.level, seq % 4);
		assert_int_equal(d.gc_percent, (uint16_t)seq);
		assert_int_equal(d.throttle, seq % 1001);
		assert_int_equal(d.soft_limit, (uint64_t)seq * 4099);
		assert_int_equal(stamp, (uint64_t)seq << 20);
		whole++;
	}
	atomic_store(&r.stop, true);
	pthread_join(t, NULL);
	assert_true(whole > 0);
}

static void test_roundtrip_status(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_STATUS, v);
		roundtrip(&m, &d, 0);
	}
}

static void test_roundtrip_clients(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_CLIENTS, v);
		roundtrip(&m, &d, 2 + strlen(m.clients.service));
		assert_string_equal(d.clients.service, m.clients.service);
	}
}

static void test_roundtrip_release(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_RELEASE, v);
		roundtrip(&m, &d, 8 + 2 + strlen(m.release.service));
		assert_int_equal(d.release.bytes, m.release.bytes);
		assert_string_equal(d.release.service, m.release.service);
	}
}

static void test_roundtrip_reload(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_RELOAD, v);
		roundtrip(&m, &d, 0);
	}
}

static void test_roundtrip_set_budget(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_SET_BUDGET, v);
		roundtrip(&m, &d, 8 + 2 + strlen(m.set_budget.service));
		assert_int_equal(d.set_budget.budget, m.set_budget.budget);
		assert_string_equal(d.set_budget.service, m.set_budget.service);
	}
}

static void test_roundtrip_status_daemon(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		const struct mg_status_daemon *a, *b;
		struct mg_msg m, d;

		fill(&m, MG_MSG_STATUS_DAEMON, v);
		roundtrip(&m, &d, 4 + 4 + 8 + 8 + 4 + 4 + 4 + 2 + strlen(m.status_daemon.version));
		a = &d.status_daemon;
		b = &m.status_daemon;
		assert_int_equal(a->services, b->services);
		assert_int_equal(a->clients, b->clients);
		assert_int_equal(a->mem_total, b->mem_total);
		assert_int_equal(a->mem_available, b->mem_available);
		assert_int_equal(a->host_some_avg10, b->host_some_avg10);
		assert_int_equal(a->host_full_avg10, b->host_full_avg10);
		assert_int_equal(a->tick_ms, b->tick_ms);
		assert_string_equal(a->version, b->version);
	}
}

static void test_roundtrip_status_service(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		const struct mg_status_service *a, *b;
		struct mg_msg m, d;

		fill(&m, MG_MSG_STATUS_SERVICE, v);
		roundtrip(&m, &d,
			  4 * 1 + 2 * 2 + 4 * 4 + 3 * 8 + 2 + strlen(m.status_service.name) +
				  2 + strlen(m.status_service.cgroup));
		a = &d.status_service;
		b = &m.status_service;
		assert_int_equal(a->level, b->level);
		assert_int_equal(a->enforce, b->enforce);
		assert_int_equal(a->escalation, b->escalation);
		assert_int_equal(a->psi_mode, b->psi_mode);
		assert_int_equal(a->gc_percent, b->gc_percent);
		assert_int_equal(a->throttle, b->throttle);
		assert_int_equal(a->clients, b->clients);
		assert_int_equal(a->utilization, b->utilization);
		assert_int_equal(a->some_avg10, b->some_avg10);
		assert_int_equal(a->full_avg10, b->full_avg10);
		assert_int_equal(a->budget, b->budget);
		assert_int_equal(a->working_set, b->working_set);
		assert_int_equal(a->released_total, b->released_total);
		assert_string_equal(a->name, b->name);
		assert_string_equal(a->cgroup, b->cgroup);
	}
}

static void test_roundtrip_client_info(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		const struct mg_client_info *a, *b;
		struct mg_msg m, d;

		fill(&m, MG_MSG_CLIENT_INFO, v);
		roundtrip(&m, &d,
			  8 + 4 + 4 + 8 + 8 + 8 + 4 + 1 + 4 + 4 + 8 + 8 + 4 + 2 +
				  strlen(m.client_info.service) + 2 +
				  strlen(m.client_info.process));
		a = &d.client_info;
		b = &m.client_info;
		assert_int_equal(a->client_id, b->client_id);
		assert_int_equal(a->pid, b->pid);
		assert_int_equal(a->uid, b->uid);
		assert_int_equal(a->heap_sys, b->heap_sys);
		assert_int_equal(a->heap_inuse, b->heap_inuse);
		assert_int_equal(a->heap_released, b->heap_released);
		assert_int_equal(a->last_directive_seq, b->last_directive_seq);
		assert_int_equal(a->last_level, b->last_level);
		assert_int_equal(a->asked, b->asked);
		assert_int_equal(a->answered, b->answered);
		assert_int_equal(a->asked_bytes, b->asked_bytes);
		assert_int_equal(a->released_bytes, b->released_bytes);
		assert_int_equal(a->response_us, b->response_us);
		assert_string_equal(a->service, b->service);
		assert_string_equal(a->process, b->process);
	}
}

static void test_roundtrip_result(void **state)
{
	for (int v = 0; v < N_VARIANTS; v++) {
		struct mg_msg m, d;

		fill(&m, MG_MSG_RESULT, v);
		roundtrip(&m, &d, 4 + 2 + strlen(m.result.text));
		assert_int_equal(d.result.code, m.result.code);
		assert_string_equal(d.result.text, m.result.text);
	}
}

/* ---- golden encodings: the layout, byte for byte --------------------------- */

/* Encode `m`, compare with `want`, and decode `want` back into `*ret`. */
static void check_golden(const struct mg_msg *m, const uint8_t *want, size_t len,
			 struct mg_msg *ret)
{
	uint8_t buf[MG_MSG_MAX];

	assert_int_equal(proto_msg_encode(m, buf, sizeof(buf)), (int)len);
	assert_memory_equal(buf, want, len);
	assert_decode_ok(want, len, ret);
	assert_int_equal(ret->hdr.type, m->hdr.type);
	assert_int_equal(ret->hdr.version, MG_PROTO_VERSION);
	assert_int_equal(ret->hdr.length, len - MG_HEADER_SIZE);
	assert_int_equal(ret->hdr.seq, m->hdr.seq);
	assert_int_equal(ret->hdr.flags, m->hdr.flags);
}

/* The HELLO of docs/protocol.md's worked example. */
static void test_golden_hello(void **state)
{
	static const uint8_t want[] = {
		0x01, 0x00,                         /* type HELLO */
		0x01, 0x00,                         /* version 1 */
		0x15, 0x00, 0x00, 0x00,             /* length 21 */
		0x01, 0x00, 0x00, 0x00,             /* seq 1 */
		0x00, 0x00, 0x00, 0x00,             /* flags */
		0x0b, 0x00, 0x00, 0x00,             /* capabilities GC_HOOK|RELEASE_HOOK|HEAP */
		0x03, 0x00, 'w', 'e', 'b',          /* service */
		0x0a, 0x00, 'a', 'p', 'i', '-', 's', 'e', 'r', 'v', 'e', 'r', /* process */
	};
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } }, d;

	m.hello.capabilities = MG_CAP_GC_HOOK | MG_CAP_RELEASE_HOOK | MG_CAP_HEAP;
	strcpy(m.hello.service, "web");
	strcpy(m.hello.process, "api-server");
	check_golden(&m, want, sizeof(want), &d);
	assert_int_equal(d.hello.capabilities, 0x0b);
	assert_string_equal(d.hello.service, "web");
	assert_string_equal(d.hello.process, "api-server");
}

static void test_golden_directive(void **state)
{
	static const uint8_t want[] = {
		0x02, 0x01,                                     /* type DIRECTIVE */
		0x01, 0x00,                                     /* version 1 */
		0x19, 0x00, 0x00, 0x00,                         /* length 25 */
		0x07, 0x00, 0x00, 0x00,                         /* seq 7 */
		0x00, 0x00, 0x00, 0x00,                         /* flags */
		0x02,                                           /* level CRITICAL */
		0x32, 0x00,                                     /* gc_percent 50 */
		0xfa, 0x00,                                     /* throttle 250 permille */
		0x00, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00, 0x00, /* soft_limit 5 GiB */
		0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, /* release 256 MiB */
		0x88, 0x13, 0x00, 0x00,                         /* deadline_ms 5000 */
	};
	struct mg_msg m = { .hdr = { .type = MG_MSG_DIRECTIVE, .seq = 7 } }, d;

	m.directive = (struct mg_directive){
		.level = MG_LEVEL_CRITICAL,
		.gc_percent = 50,
		.throttle = 250,
		.soft_limit = UINT64_C(5) << 30,
		.release = UINT64_C(256) << 20,
		.deadline_ms = 5000,
	};
	check_golden(&m, want, sizeof(want), &d);
	check_directive(&d.directive, &m.directive);
}

/* Pins the header's seq and flags offsets, and WELCOME's layout: fixed
 * fields, then its one string last, so that it grows at its end. */
static void test_golden_welcome(void **state)
{
	static const uint8_t want[] = {
		0x01, 0x01,                                     /* type WELCOME */
		0x01, 0x00,                                     /* version 1 */
		0x19, 0x00, 0x00, 0x00,                         /* length 25 */
		0x0a, 0x0b, 0x0c, 0x0d,                         /* seq 0x0d0c0b0a */
		0x11, 0x22, 0x33, 0x44,                         /* flags 0x44332211 */
		0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* client_id 42 */
		0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, /* budget 2 GiB */
		0xe8, 0x03, 0x00, 0x00,                         /* report_interval_ms 1000 */
		0x03, 0x00, 'w', 'e', 'b',                      /* service */
	};
	struct mg_msg m = {
		.hdr = { .type = MG_MSG_WELCOME, .seq = 0x0d0c0b0a, .flags = 0x44332211 },
	};
	struct mg_msg d;

	m.welcome.client_id = 42;
	m.welcome.budget = UINT64_C(2) << 30;
	m.welcome.report_interval_ms = 1000;
	strcpy(m.welcome.service, "web");
	check_golden(&m, want, sizeof(want), &d);
	assert_int_equal(d.welcome.client_id, 42);
	assert_int_equal(d.welcome.budget, UINT64_C(2) << 30);
	assert_int_equal(d.welcome.report_interval_ms, 1000);
	assert_string_equal(d.welcome.service, "web");
	(void)state;
}

/*
 * The layout of 0.1.0 put a directive between report_interval_ms and the
 * service, so growing the directive moved the string.  Such a WELCOME is
 * not misread today: its level and gc_percent bytes, read as the string's
 * length, ask for more than a name may hold, and the datagram is
 * malformed.  A WELCOME of today's layout that a later version grew by a
 * field after the service decodes to the same message (test_longer_body
 * does this for every type).
 */
static void test_golden_welcome_old_layout(void **state)
{
	static const uint8_t old[] = {
		0x01, 0x01, 0x01, 0x00, 0x32, 0x00, 0x00, 0x00, /* WELCOME, v1, length 50 */
		0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x00,
		0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* client_id 42 */
		0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, /* budget 2 GiB */
		0xe8, 0x03, 0x00, 0x00,                         /* report_interval_ms 1000 */
		0x01, 0x64, 0x00, 0x0a, 0x00,                   /* level, gc_percent, throttle */
		0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x00, /* soft_limit */
		0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, /* release */
		0xd0, 0x07, 0x00, 0x00,                         /* deadline_ms */
		0x03, 0x00, 'w', 'e', 'b',                      /* service */
	};
	static const uint8_t grown[] = {
		0x01, 0x01, 0x01, 0x00, 0x21, 0x00, 0x00, 0x00, /* WELCOME, v1, length 33 */
		0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x00, 0x00,
		0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* client_id 42 */
		0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, /* budget 2 GiB */
		0xe8, 0x03, 0x00, 0x00,                         /* report_interval_ms 1000 */
		0x03, 0x00, 'w', 'e', 'b',                      /* service */
		0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* a later version's u64 */
	};
	struct mg_msg d = { 0 };

	assert_int_equal(proto_msg_decode(old, sizeof(old), &d), -EBADMSG);
	assert_int_equal(proto_msg_decode(grown, sizeof(grown), &d), 0);
	assert_int_equal(d.welcome.client_id, 42);
	assert_int_equal(d.welcome.report_interval_ms, 1000);
	assert_string_equal(d.welcome.service, "web");
	(void)state;
}

/* A message without a body is its header alone. */
static void test_golden_reload(void **state)
{
	static const uint8_t want[] = {
		0x04, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
		0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
	};
	struct mg_msg m = { .hdr = { .type = MG_MSG_RELOAD, .seq = UINT32_MAX } }, d;

	check_golden(&m, want, sizeof(want), &d);
}

/* ---- truncation and header length --------------------------------------- */

static void test_truncated(void **state)
{
	for (size_t t = 0; t < N_TYPES; t++) {
		for (int v = 0; v < N_VARIANTS; v++) {
			uint8_t buf[MG_MSG_MAX];
			struct mg_msg m;
			size_t n;

			fill(&m, all_types[t], v);
			n = encode_ok(&m, buf);
			for (size_t len = 0; len < n; len++) {
				_cleanup_free_ uint8_t *p = NULL;

				/* header length left as encoded: disagrees with len */
				assert_decode_fails(buf, len, -EBADMSG);
				if (len < MG_HEADER_SIZE)
					continue;
				/* header length patched: the body itself is short */
				p = dup_exact(buf, len);
				le_put(p + 4, len - MG_HEADER_SIZE, 4);
				assert_decode_fails(p, len, -EBADMSG);
			}
		}
	}
}

static void test_header_length_mismatch(void **state)
{
	/* header lengths relative to the true body length, and absolute ones */
	static const int64_t deltas[] = { 1, 2, 8, -1, 0x10000, 0x1000000 };
	static const uint32_t absolute[] = { 0, MG_MSG_MAX, UINT32_C(0x80000000), UINT32_MAX };
	const size_t n_lengths = ARRAY_SIZE(deltas) + ARRAY_SIZE(absolute);

	for (size_t t = 0; t < N_TYPES; t++) {
		uint8_t buf[MG_MSG_MAX + 8];
		struct mg_header h;
		struct mg_msg m;
		size_t n, body;

		fill(&m, all_types[t], V_PATTERN);
		n = encode_ok(&m, buf);
		body = n - MG_HEADER_SIZE;
		assert_int_equal(proto_header_decode(buf, n, &h), 0);

		for (size_t i = 0; i < n_lengths; i++) {
			uint32_t l = i < ARRAY_SIZE(deltas) ? (uint32_t)((int64_t)body + deltas[i]) :
							      absolute[i - ARRAY_SIZE(deltas)];

			if (l == body)
				continue; /* 0 or body - 1 when the body is empty */
			le_put(buf + 4, l, 4);
			assert_decode_fails(buf, n, -EBADMSG);
			memset(&h, 0xa5, sizeof(h));
			assert_int_equal(proto_header_decode(buf, n, &h), -EBADMSG);
		}

		/* buffer longer than the header says: extra bytes not counted */
		le_put(buf + 4, body, 4);
		memset(buf + n, 0, 8);
		for (size_t extra = 1; extra <= 8; extra++) {
			assert_decode_fails(buf, n + extra, -EBADMSG);
			assert_int_equal(proto_header_decode(buf, n + extra, &h), -EBADMSG);
		}
	}
}

static void test_header_decode(void **state)
{
	static const uint8_t hdr[] = {
		0x34, 0x12, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00,
		0x78, 0x56, 0x34, 0x12, 0xf0, 0xde, 0xbc, 0x9a,
		'x', 'y', 'z',
	};
	struct mg_header h, before;

	/* neither version nor type is the header decoder's business */
	assert_int_equal(proto_header_decode(hdr, sizeof(hdr), &h), 0);
	assert_int_equal(h.type, 0x1234);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.length, 3);
	assert_int_equal(h.seq, 0x12345678);
	assert_int_equal(h.flags, 0x9abcdef0);

	for (size_t len = 0; len < sizeof(hdr); len++) {
		_cleanup_free_ uint8_t *p = dup_exact(hdr, len);

		memset(&h, 0xa5, sizeof(h));
		before = h;
		assert_int_equal(proto_header_decode(p, len, &h), -EBADMSG);
		assert_memory_equal(&h, &before, sizeof(h));
	}
}

/* ---- version and type ------------------------------------------------------ */

static void test_wrong_version(void **state)
{
	static const uint16_t versions[] = { 0, MG_PROTO_VERSION + 1, 0x0100, 0xffff };

	for (size_t t = 0; t < N_TYPES; t++) {
		uint8_t buf[MG_MSG_MAX];
		struct mg_msg m;
		size_t n;

		fill(&m, all_types[t], V_PATTERN);
		n = encode_ok(&m, buf);
		for (size_t i = 0; i < ARRAY_SIZE(versions); i++) {
			le_put(buf + 2, versions[i], 2);
			assert_decode_fails(buf, n, -EPROTONOSUPPORT);
			/* a bad length is found before the version */
			assert_decode_fails(buf, n - 1, -EBADMSG);
		}
	}
}

static void test_unknown_type(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(unknown_types); i++) {
		uint8_t buf[MG_HEADER_SIZE + 4] = { 0 };
		struct mg_msg m = { .hdr = { .type = unknown_types[i] } };

		le_put(buf + 0, unknown_types[i], 2);
		le_put(buf + 2, MG_PROTO_VERSION, 2);
		le_put(buf + 4, 4, 4);
		assert_decode_fails(buf, sizeof(buf), -EOPNOTSUPP);
		le_put(buf + 4, 0, 4);
		assert_decode_fails(buf, MG_HEADER_SIZE, -EOPNOTSUPP);
		/* the version is checked before the type */
		le_put(buf + 2, MG_PROTO_VERSION + 1, 2);
		assert_decode_fails(buf, MG_HEADER_SIZE, -EPROTONOSUPPORT);

		assert_int_equal(proto_msg_encode(&m, buf, sizeof(buf)), -EINVAL);
		assert_int_equal(proto_msg_validate(&m), -EINVAL);
	}
}

/* ---- strings -------------------------------------------------------------- */

/* A hand-built datagram, written without proto.c. */
struct wire {
	uint8_t b[2 * MG_MSG_MAX];
	size_t n;
};

static void w_int(struct wire *w, uint64_t v, size_t bytes)
{
	assert_true(w->n + bytes <= sizeof(w->b));
	le_put(w->b + w->n, v, bytes);
	w->n += bytes;
}

static void w_bytes(struct wire *w, const void *s, size_t n)
{
	assert_true(w->n + n <= sizeof(w->b));
	memcpy(w->b + w->n, s, n);
	w->n += n;
}

/* A string: u16 byte count, then the bytes. */
static void w_str(struct wire *w, const void *s, size_t n)
{
	w_int(w, n, 2);
	w_bytes(w, s, n);
}

static void w_begin(struct wire *w, uint16_t type)
{
	w->n = 0;
	w_int(w, type, 2);
	w_int(w, MG_PROTO_VERSION, 2);
	w_int(w, 0, 4); /* set by w_end() */
	w_int(w, 1, 4);
	w_int(w, 0, 4);
}

/* Set the header's length to the bytes written after it. */
static void w_end(struct wire *w)
{
	le_put(w->b + 4, w->n - MG_HEADER_SIZE, 4);
}

static void w_hello(struct wire *w, const void *svc, size_t svc_len, const void *proc,
		    size_t proc_len)
{
	w_begin(w, MG_MSG_HELLO);
	w_int(w, MG_CAP_ALL, 4);
	w_str(w, svc, svc_len);
	w_str(w, proc, proc_len);
	w_end(w);
}

static void w_status_service(struct wire *w, const void *name, size_t name_len,
			     const void *cgroup, size_t cgroup_len)
{
	w_begin(w, MG_MSG_STATUS_SERVICE);
	w_int(w, MG_LEVEL_WARN, 1);
	w_int(w, MG_ENFORCE_HIGH, 1);
	w_int(w, MG_ESCALATION_NONE, 1);
	w_int(w, MG_PSI_TRIGGER, 1);
	w_int(w, 80, 2);
	w_int(w, 0, 2);
	for (int i = 0; i < 4; i++)
		w_int(w, 1, 4);
	for (int i = 0; i < 3; i++)
		w_int(w, 4096, 8);
	w_str(w, name, name_len);
	w_str(w, cgroup, cgroup_len);
	w_end(w);
}

static void test_string_past_end(void **state)
{
	struct wire w;
	struct mg_msg d;

	w_hello(&w, "web", 3, "api", 3);
	assert_decode_ok(w.b, w.n, &d);

	/* the last string's count runs one byte, and far, past the end */
	for (uint32_t n = 4; n <= 0xffff; n = n < 16 ? n + 1 : n * 2 + 1) {
		le_put(w.b + w.n - 3 - 2, n, 2);
		assert_decode_fails(w.b, w.n, -EBADMSG);
	}
	/* the first string's count swallows the second string */
	w_hello(&w, "web", 3, "api", 3);
	le_put(w.b + MG_HEADER_SIZE + 4, 3 + 2 + 3 + 1, 2);
	assert_decode_fails(w.b, w.n, -EBADMSG);
	/* or takes it exactly, leaving no room for the second count */
	le_put(w.b + MG_HEADER_SIZE + 4, 3 + 2 + 3, 2);
	assert_decode_fails(w.b, w.n, -EBADMSG);
	/* or leaves a single byte for the second count */
	le_put(w.b + MG_HEADER_SIZE + 4, 3 + 2 + 3 - 1, 2);
	assert_decode_fails(w.b, w.n, -EBADMSG);
}

static void test_string_too_long(void **state)
{
	static char big[MG_PATH_MAX + 2];
	/* as long as one datagram allows, far beyond any field's maximum */
	static char huge[MG_MSG_MAX - MG_HEADER_SIZE - 4 - 2];
	struct wire w;
	struct mg_msg d;

	memset(big, 'a', sizeof(big));
	memset(huge, 'a', sizeof(huge));

	/* names: MG_NAME_MAX bytes pass, one more does not */
	w_hello(&w, big, MG_NAME_MAX, big, MG_NAME_MAX);
	assert_decode_ok(w.b, w.n, &d);
	assert_int_equal(strlen(d.hello.service), MG_NAME_MAX);
	w_hello(&w, big, MG_NAME_MAX + 1, "p", 1);
	assert_decode_fails(w.b, w.n, -EBADMSG);
	w_hello(&w, "s", 1, big, MG_NAME_MAX + 1);
	assert_decode_fails(w.b, w.n, -EBADMSG);

	/* texts: MG_TEXT_MAX */
	w_begin(&w, MG_MSG_ERROR);
	w_int(&w, MG_ERR_PROTOCOL, 4);
	w_str(&w, big, MG_TEXT_MAX);
	w_end(&w);
	assert_decode_ok(w.b, w.n, &d);
	assert_int_equal(strlen(d.error.text), MG_TEXT_MAX);
	w_begin(&w, MG_MSG_RESULT);
	w_int(&w, MG_ERR_OK, 4);
	w_str(&w, big, MG_TEXT_MAX + 1);
	w_end(&w);
	assert_decode_fails(w.b, w.n, -EBADMSG);

	/* paths: MG_PATH_MAX */
	w_status_service(&w, "web", 3, big, MG_PATH_MAX);
	assert_decode_ok(w.b, w.n, &d);
	assert_int_equal(strlen(d.status_service.cgroup), MG_PATH_MAX);
	w_status_service(&w, "web", 3, big, MG_PATH_MAX + 1);
	assert_decode_fails(w.b, w.n, -EBADMSG);
	w_status_service(&w, big, MG_NAME_MAX + 1, "x", 1);
	assert_decode_fails(w.b, w.n, -EBADMSG);

	/* far longer than any field, still inside one datagram */
	w_begin(&w, MG_MSG_RESULT);
	w_int(&w, MG_ERR_OK, 4);
	w_str(&w, huge, sizeof(huge));
	w_end(&w);
	assert_int_equal(w.n, MG_MSG_MAX);
	assert_decode_fails(w.b, w.n, -EBADMSG);
	w_hello(&w, huge, sizeof(huge) - 4, "", 0);
	assert_decode_fails(w.b, w.n, -EBADMSG);
}

static void test_string_embedded_nul(void **state)
{
	static const char with_nul[][4] = { "\0bc", "a\0c", "ab\0" };
	struct wire w;

	for (size_t i = 0; i < 3; i++) {
		w_hello(&w, with_nul[i], 3, "p", 1);
		assert_decode_fails(w.b, w.n, -EBADMSG);
		w_hello(&w, "s", 1, with_nul[i], 3);
		assert_decode_fails(w.b, w.n, -EBADMSG);

		w_begin(&w, MG_MSG_ERROR);
		w_int(&w, MG_ERR_INTERNAL, 4);
		w_str(&w, with_nul[i], 3);
		w_end(&w);
		assert_decode_fails(w.b, w.n, -EBADMSG);

		w_status_service(&w, "web", 3, with_nul[i], 3);
		assert_decode_fails(w.b, w.n, -EBADMSG);
	}
	/* a NUL is not a terminator either */
	w_hello(&w, "\0", 1, "\0", 1);
	assert_decode_fails(w.b, w.n, -EBADMSG);
}

static void test_string_empty(void **state)
{
	struct wire w;
	struct mg_msg d;

	/* decode fills a struct of garbage, to see the strings are terminated */
	w_hello(&w, "", 0, "", 0);
	memset(&d, 0xa5, sizeof(d));
	assert_int_equal(decode_exact(w.b, w.n, &d), 0);
	assert_int_equal(d.hello.capabilities, MG_CAP_ALL);
	assert_string_equal(d.hello.service, "");
	assert_string_equal(d.hello.process, "");

	w_begin(&w, MG_MSG_ERROR);
	w_int(&w, MG_ERR_BUSY, 4);
	w_str(&w, "", 0);
	w_end(&w);
	memset(&d, 0xa5, sizeof(d));
	assert_int_equal(decode_exact(w.b, w.n, &d), 0);
	assert_int_equal(d.error.code, MG_ERR_BUSY);
	assert_string_equal(d.error.text, "");

	w_begin(&w, MG_MSG_CLIENTS);
	w_str(&w, "", 0);
	w_end(&w);
	memset(&d, 0xa5, sizeof(d));
	assert_int_equal(decode_exact(w.b, w.n, &d), 0);
	assert_string_equal(d.clients.service, "");

	w_status_service(&w, "", 0, "", 0);
	memset(&d, 0xa5, sizeof(d));
	assert_int_equal(decode_exact(w.b, w.n, &d), 0);
	assert_string_equal(d.status_service.name, "");
	assert_string_equal(d.status_service.cgroup, "");
}

/* The hand-built encoder and proto.c agree, so the tests above test the
 * decoder on the real format. */
static void test_wire_builder_agrees(void **state)
{
	uint8_t buf[MG_MSG_MAX];
	struct mg_msg m = { .hdr = { .type = MG_MSG_HELLO, .seq = 1 } };
	struct wire w;

	m.hello.capabilities = MG_CAP_ALL;
	strcpy(m.hello.service, "web");
	strcpy(m.hello.process, "worker");
	w_hello(&w, "web", 3, "worker", 6);
	assert_int_equal(proto_msg_encode(&m, buf, sizeof(buf)), (int)w.n);
	assert_memory_equal(buf, w.b, w.n);
}

static void w_directive(struct wire *w, const struct mg_directive *d)
{
	w_int(w, d->level, 1);
	w_int(w, d->gc_percent, 2);
	w_int(w, d->throttle, 2);
	w_int(w, d->soft_limit, 8);
	w_int(w, d->release, 8);
	w_int(w, d->deadline_ms, 4);
}

/*
 * The body of `m` written field by field in the order and widths of
 * docs/protocol.md, without proto.c: comparing it with proto_msg_encode()
 * pins the layout of every message, including fields of equal width that a
 * round trip alone could not tell apart.
 */
static void w_body(struct wire *w, const struct mg_msg *m)
{
	switch (m->hdr.type) {
	case MG_MSG_HELLO:
		w_int(w, m->hello.capabilities, 4);
		w_str(w, m->hello.service, strlen(m->hello.service));
		w_str(w, m->hello.process, strlen(m->hello.process));
		break;
	case MG_MSG_REPORT:
		w_int(w, m->report.heap_sys, 8);
		w_int(w, m->report.heap_inuse, 8);
		w_int(w, m->report.heap_idle, 8);
		w_int(w, m->report.heap_released, 8);
		w_int(w, m->report.external, 8);
		w_int(w, m->report.admitted, 8);
		w_int(w, m->report.rejected, 8);
		w_int(w, m->report.released_total, 8);
		w_int(w, m->report.gc_percent, 2);
		break;
	case MG_MSG_RELEASED:
		w_int(w, m->released.directive_seq, 4);
		w_int(w, m->released.bytes, 8);
		w_int(w, m->released.usec, 8);
		break;
	case MG_MSG_PONG:
	case MG_MSG_PING:
		w_int(w, m->ping.cookie, 8);
		break;
	case MG_MSG_BYE:
		w_int(w, m->bye.reason, 4);
		break;
	case MG_MSG_WELCOME:
		w_int(w, m->welcome.client_id, 8);
		w_int(w, m->welcome.budget, 8);
		w_int(w, m->welcome.report_interval_ms, 4);
		w_str(w, m->welcome.service, strlen(m->welcome.service));
		break;
	case MG_MSG_DIRECTIVE:
		w_directive(w, &m->directive);
		break;
	case MG_MSG_ERROR:
		w_int(w, m->error.code, 4);
		w_str(w, m->error.text, strlen(m->error.text));
		break;
	case MG_MSG_BOARD:
		w_int(w, m->board.slot, 4);
		w_int(w, m->board.slots, 4);
		break;
	case MG_MSG_STATUS:
	case MG_MSG_RELOAD:
		break;
	case MG_MSG_CLIENTS:
		w_str(w, m->clients.service, strlen(m->clients.service));
		break;
	case MG_MSG_RELEASE:
		w_int(w, m->release.bytes, 8);
		w_str(w, m->release.service, strlen(m->release.service));
		break;
	case MG_MSG_SET_BUDGET:
		w_int(w, m->set_budget.budget, 8);
		w_str(w, m->set_budget.service, strlen(m->set_budget.service));
		break;
	case MG_MSG_STATUS_DAEMON: {
		const struct mg_status_daemon *d = &m->status_daemon;

		w_int(w, d->services, 4);
		w_int(w, d->clients, 4);
		w_int(w, d->mem_total, 8);
		w_int(w, d->mem_available, 8);
		w_int(w, d->host_some_avg10, 4);
		w_int(w, d->host_full_avg10, 4);
		w_int(w, d->tick_ms, 4);
		w_str(w, d->version, strlen(d->version));
		break;
	}
	case MG_MSG_STATUS_SERVICE: {
		const struct mg_status_service *s = &m->status_service;

		w_int(w, s->level, 1);
		w_int(w, s->enforce, 1);
		w_int(w, s->escalation, 1);
		w_int(w, s->psi_mode, 1);
		w_int(w, s->gc_percent, 2);
		w_int(w, s->throttle, 2);
		w_int(w, s->clients, 4);
		w_int(w, s->utilization, 4);
		w_int(w, s->some_avg10, 4);
		w_int(w, s->full_avg10, 4);
		w_int(w, s->budget, 8);
		w_int(w, s->working_set, 8);
		w_int(w, s->released_total, 8);
		w_str(w, s->name, strlen(s->name));
		w_str(w, s->cgroup, strlen(s->cgroup));
		break;
	}
	case MG_MSG_CLIENT_INFO: {
		const struct mg_client_info *c = &m->client_info;

		w_int(w, c->client_id, 8);
		w_int(w, c->pid, 4);
		w_int(w, c->uid, 4);
		w_int(w, c->heap_sys, 8);
		w_int(w, c->heap_inuse, 8);
		w_int(w, c->heap_released, 8);
		w_int(w, c->last_directive_seq, 4);
		w_int(w, c->last_level, 1);
		w_int(w, c->asked, 4);
		w_int(w, c->answered, 4);
		w_int(w, c->asked_bytes, 8);
		w_int(w, c->released_bytes, 8);
		w_int(w, c->response_us, 4);
		w_str(w, c->service, strlen(c->service));
		w_str(w, c->process, strlen(c->process));
		break;
	}
	case MG_MSG_RESULT:
		w_int(w, m->result.code, 4);
		w_str(w, m->result.text, strlen(m->result.text));
		break;
	default:
		fail_msg("no layout for type 0x%04x", m->hdr.type);
	}
}

static void test_layout_all_types(void **state)
{
	for (size_t t = 0; t < N_TYPES; t++) {
		for (int v = 0; v < N_VARIANTS; v++) {
			uint8_t buf[MG_MSG_MAX];
			struct mg_msg m;
			struct wire w;
			size_t n;

			fill(&m, all_types[t], v);
			w.n = 0;
			w_int(&w, m.hdr.type, 2);
			w_int(&w, MG_PROTO_VERSION, 2);
			w_int(&w, 0, 4);
			w_int(&w, m.hdr.seq, 4);
			w_int(&w, m.hdr.flags, 4);
			w_body(&w, &m);
			w_end(&w);
			n = encode_ok(&m, buf);
			assert_int_equal(n, w.n);
			assert_memory_equal(buf, w.b, n);
		}
	}
}

/* ---- forward compatibility ----------------------------------------------- */

static void test_longer_body(void **state)
{
	static const size_t extras[] = { 1, 2, 3, 7, 8, 64, 1000 };

	for (size_t t = 0; t < N_TYPES; t++) {
		for (int v = 0; v < N_VARIANTS; v++) {
			uint8_t buf[2 * MG_MSG_MAX];
			struct mg_msg m, want, d;
			size_t n;

			fill(&m, all_types[t], v);
			n = encode_ok(&m, buf);
			assert_decode_ok(buf, n, &want);

			for (size_t i = 0; i <= ARRAY_SIZE(extras); i++) {
				/* the last round fills the datagram to MG_MSG_MAX */
				size_t extra = i < ARRAY_SIZE(extras) ?
						       extras[i] :
						       MG_MSG_MAX - n;

				if (extra == 0)
					continue;
				/* NULs and high bytes: nothing in the tail is looked at */
				for (size_t j = 0; j < extra; j++)
					buf[n + j] = j % 2 ? 0xff : 0x00;
				le_put(buf + 4, n - MG_HEADER_SIZE + extra, 4);
				assert_decode_ok(buf, n + extra, &d);
				assert_int_equal(d.hdr.length, n - MG_HEADER_SIZE + extra);
				d.hdr.length = want.hdr.length;
				assert_memory_equal(&d, &want, sizeof(d));
			}
		}
	}
}

/* Unknown header flag bits are carried, not refused. */
static void test_flags_ignored(void **state)
{
	for (size_t t = 0; t < N_TYPES; t++) {
		uint8_t buf[MG_MSG_MAX];
		struct mg_msg m, d;
		size_t n;

		fill(&m, all_types[t], V_ZERO);
		n = encode_ok(&m, buf);
		for (unsigned bit = 0; bit < 32; bit++) {
			le_put(buf + 12, UINT32_C(1) << bit, 4);
			assert_decode_ok(buf, n, &d);
			assert_int_equal(d.hdr.flags, UINT32_C(1) << bit);
		}
	}
}

/* ---- encoding into short buffers ----------------------------------------- */

static void test_encode_nobufs(void **state)
{
	for (size_t t = 0; t < N_TYPES; t++) {
		for (int v = 0; v < N_VARIANTS; v++) {
			uint8_t buf[MG_MSG_MAX + 64];
			struct mg_msg m;
			size_t n;

			fill(&m, all_types[t], v);
			n = encode_ok(&m, buf);
			for (size_t size = 0; size < n; size++) {
				/* nothing is written past `size` */
				memset(buf, 0xa5, sizeof(buf));
				assert_int_equal(proto_msg_encode(&m, buf, size), -ENOBUFS);
				for (size_t i = size; i < sizeof(buf); i++)
					assert_int_equal(buf[i], 0xa5);
			}
			memset(buf, 0xa5, sizeof(buf));
			assert_int_equal(proto_msg_encode(&m, buf, n), (int)n);
			for (size_t i = n; i < sizeof(buf); i++)
				assert_int_equal(buf[i], 0xa5);
		}
	}
}

/* ---- invalid values ----------------------------------------------------------- */

static void assert_encode_einval(const struct mg_msg *m)
{
	uint8_t buf[MG_MSG_MAX];

	assert_int_equal(proto_msg_validate(m), -EINVAL);
	assert_int_equal(proto_msg_encode(m, buf, sizeof(buf)), -EINVAL);
}

static void test_encode_invalid(void **state)
{
	struct mg_msg m;

	/* levels */
	fill(&m, MG_MSG_DIRECTIVE, V_PATTERN);
	m.directive.level = MG_LEVEL_EMERGENCY + 1;
	assert_encode_einval(&m);
	m.directive.level = UINT8_MAX;
	assert_encode_einval(&m);
	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	m.status_service.level = MG_LEVEL_EMERGENCY + 1;
	assert_encode_einval(&m);
	fill(&m, MG_MSG_CLIENT_INFO, V_PATTERN);
	m.client_info.last_level = MG_LEVEL_EMERGENCY + 1;
	assert_encode_einval(&m);

	/* throttle */
	fill(&m, MG_MSG_DIRECTIVE, V_PATTERN);
	m.directive.throttle = MG_THROTTLE_MAX + 1;
	assert_encode_einval(&m);
	m.directive.throttle = UINT16_MAX;
	assert_encode_einval(&m);
	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	m.status_service.throttle = MG_THROTTLE_MAX + 1;
	assert_encode_einval(&m);

	/* the other enums of STATUS_SERVICE */
	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	m.status_service.enforce = MG_ENFORCE_KILL + 1;
	assert_encode_einval(&m);
	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	m.status_service.escalation = MG_ESCALATION_KILLED + 1;
	assert_encode_einval(&m);
	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	m.status_service.psi_mode = MG_PSI_POLLING + 1;
	assert_encode_einval(&m);

	/* required values */
	fill(&m, MG_MSG_SET_BUDGET, V_PATTERN);
	m.set_budget.budget = 0;
	assert_encode_einval(&m);
	fill(&m, MG_MSG_SET_BUDGET, V_PATTERN);
	m.set_budget.service[0] = 0;
	assert_encode_einval(&m);
	fill(&m, MG_MSG_RELEASE, V_PATTERN);
	m.release.service[0] = 0;
	assert_encode_einval(&m);

	/* strings not terminated inside their field */
	fill(&m, MG_MSG_HELLO, V_PATTERN);
	memset(m.hello.service, 'a', sizeof(m.hello.service));
	assert_encode_einval(&m);
	fill(&m, MG_MSG_HELLO, V_PATTERN);
	memset(m.hello.process, 'a', sizeof(m.hello.process));
	assert_encode_einval(&m);
	fill(&m, MG_MSG_ERROR, V_PATTERN);
	memset(m.error.text, 'a', sizeof(m.error.text));
	assert_encode_einval(&m);
	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	memset(m.status_service.cgroup, 'a', sizeof(m.status_service.cgroup));
	assert_encode_einval(&m);
}

/* Every name field of every message refuses every bad byte in any place. */
struct name_field {
	uint16_t type;
	size_t offset; /* of the char array in struct mg_msg */
};

#define NAME_FIELD(t, member) { MG_MSG_##t, offsetof(struct mg_msg, member) }

static const struct name_field name_fields[] = {
	NAME_FIELD(HELLO, hello.service),
	NAME_FIELD(HELLO, hello.process),
	NAME_FIELD(WELCOME, welcome.service),
	NAME_FIELD(CLIENTS, clients.service),
	NAME_FIELD(RELEASE, release.service),
	NAME_FIELD(SET_BUDGET, set_budget.service),
	NAME_FIELD(STATUS_SERVICE, status_service.name),
	NAME_FIELD(CLIENT_INFO, client_info.service),
	NAME_FIELD(CLIENT_INFO, client_info.process),
};

static void test_name_bad_bytes(void **state)
{
	static const char *const shapes[] = { "?", "?bc", "a?c", "ab?" };

	for (size_t f = 0; f < ARRAY_SIZE(name_fields); f++) {
		for (size_t b = 0; b < sizeof(bad_name_bytes); b++) {
			for (size_t s = 0; s < 4; s++) {
				uint8_t buf[MG_MSG_MAX], *q;
				struct mg_msg m;
				char *name, *bad;
				size_t n;

				/* encode: refused */
				fill(&m, name_fields[f].type, V_PATTERN);
				name = (char *)&m + name_fields[f].offset;
				strcpy(name, shapes[s]);
				bad = strchr(name, '?');
				*bad = (char)bad_name_bytes[b];
				assert_encode_einval(&m);

				/* decode: encode with '?' and patch the byte in */
				*bad = '?';
				n = encode_ok(&m, buf);
				q = memchr(buf + MG_HEADER_SIZE, '?', n - MG_HEADER_SIZE);
				assert_non_null(q);
				*q = bad_name_bytes[b];
				assert_decode_fails(buf, n, -EBADMSG);
			}
		}
	}
	/* printable ASCII is fine throughout, space and tilde included */
	for (size_t f = 0; f < ARRAY_SIZE(name_fields); f++) {
		struct mg_msg m;
		uint8_t buf[MG_MSG_MAX];

		fill(&m, name_fields[f].type, V_PATTERN);
		strcpy((char *)&m + name_fields[f].offset, " !~}");
		assert_int_equal(proto_msg_validate(&m), 0);
		assert_true(proto_msg_encode(&m, buf, sizeof(buf)) > 0);
	}
}

/* Encode a valid message, patch `bytes` bytes at body offset `off` to `v`. */
static void assert_patched_badmsg(uint16_t type, size_t off, size_t bytes, uint64_t v)
{
	uint8_t buf[MG_MSG_MAX];
	struct mg_msg m;
	size_t n;

	fill(&m, type, V_PATTERN);
	n = encode_ok(&m, buf);
	assert_true(MG_HEADER_SIZE + off + bytes <= n);
	le_put(buf + MG_HEADER_SIZE + off, v, bytes);
	assert_decode_fails(buf, n, -EBADMSG);
}

/* Same, but the patched value is valid: the offset is right. */
static void assert_patched_ok(uint16_t type, size_t off, size_t bytes, uint64_t v)
{
	uint8_t buf[MG_MSG_MAX];
	struct mg_msg m;
	size_t n;

	fill(&m, type, V_PATTERN);
	n = encode_ok(&m, buf);
	le_put(buf + MG_HEADER_SIZE + off, v, bytes);
	assert_decode_ok(buf, n, &m);
}

/* A slot at or past the board's end, or a board of no slots, is refused
 * both ways. */
static void test_board_invalid(void **state)
{
	struct mg_msg m;
	uint8_t buf[MG_MSG_MAX];

	fill(&m, MG_MSG_BOARD, V_ZERO);
	m.board.slot = 1;
	assert_int_equal(proto_msg_encode(&m, buf, sizeof(buf)), -EINVAL);
	m.board.slots = 0;
	m.board.slot = 0;
	assert_int_equal(proto_msg_encode(&m, buf, sizeof(buf)), -EINVAL);
	assert_patched_ok(MG_MSG_BOARD, 0, 4, 0);
	assert_patched_badmsg(MG_MSG_BOARD, 0, 4, UINT32_MAX);
	assert_patched_badmsg(MG_MSG_BOARD, 4, 4, 0);
}

static void test_decode_invalid(void **state)
{
	struct mg_msg d;
	struct wire w;

	/* DIRECTIVE: level at 0, throttle at 3 */
	assert_patched_ok(MG_MSG_DIRECTIVE, 0, 1, MG_LEVEL_EMERGENCY);
	assert_patched_badmsg(MG_MSG_DIRECTIVE, 0, 1, MG_LEVEL_EMERGENCY + 1);
	assert_patched_badmsg(MG_MSG_DIRECTIVE, 0, 1, UINT8_MAX);
	assert_patched_ok(MG_MSG_DIRECTIVE, 3, 2, MG_THROTTLE_MAX);
	assert_patched_badmsg(MG_MSG_DIRECTIVE, 3, 2, MG_THROTTLE_MAX + 1);
	assert_patched_badmsg(MG_MSG_DIRECTIVE, 3, 2, UINT16_MAX);

	/* STATUS_SERVICE: level 0, enforce 1, escalation 2, psi_mode 3, throttle 6 */
	assert_patched_ok(MG_MSG_STATUS_SERVICE, 0, 1, MG_LEVEL_EMERGENCY);
	assert_patched_badmsg(MG_MSG_STATUS_SERVICE, 0, 1, MG_LEVEL_EMERGENCY + 1);
	assert_patched_ok(MG_MSG_STATUS_SERVICE, 1, 1, MG_ENFORCE_KILL);
	assert_patched_badmsg(MG_MSG_STATUS_SERVICE, 1, 1, MG_ENFORCE_KILL + 1);
	assert_patched_ok(MG_MSG_STATUS_SERVICE, 2, 1, MG_ESCALATION_KILLED);
	assert_patched_badmsg(MG_MSG_STATUS_SERVICE, 2, 1, MG_ESCALATION_KILLED + 1);
	assert_patched_ok(MG_MSG_STATUS_SERVICE, 3, 1, MG_PSI_POLLING);
	assert_patched_badmsg(MG_MSG_STATUS_SERVICE, 3, 1, MG_PSI_POLLING + 1);
	assert_patched_ok(MG_MSG_STATUS_SERVICE, 6, 2, MG_THROTTLE_MAX);
	assert_patched_badmsg(MG_MSG_STATUS_SERVICE, 6, 2, MG_THROTTLE_MAX + 1);

	/* CLIENT_INFO: last_level at 44 */
	assert_patched_ok(MG_MSG_CLIENT_INFO, 44, 1, MG_LEVEL_EMERGENCY);
	assert_patched_badmsg(MG_MSG_CLIENT_INFO, 44, 1, MG_LEVEL_EMERGENCY + 1);

	/* SET_BUDGET: budget at 0 must not be 0 */
	assert_patched_ok(MG_MSG_SET_BUDGET, 0, 8, 1);
	assert_patched_badmsg(MG_MSG_SET_BUDGET, 0, 8, 0);

	/* services that must be named */
	w_begin(&w, MG_MSG_SET_BUDGET);
	w_int(&w, 4096, 8);
	w_str(&w, "", 0);
	w_end(&w);
	assert_decode_fails(w.b, w.n, -EBADMSG);
	w_begin(&w, MG_MSG_RELEASE);
	w_int(&w, 4096, 8);
	w_str(&w, "", 0);
	w_end(&w);
	assert_decode_fails(w.b, w.n, -EBADMSG);
	w_begin(&w, MG_MSG_RELEASE);
	w_int(&w, 0, 8); /* 0 bytes = everything releasable: valid */
	w_str(&w, "x", 1);
	w_end(&w);
	assert_decode_ok(w.b, w.n, &d);
	assert_int_equal(d.release.bytes, 0);
	assert_string_equal(d.release.service, "x");
}

/*
 * Regression: STATUS_SERVICE.name and CLIENT_INFO.service/.process are
 * service and process names, but validate did not hold them to the name
 * rules (printable ASCII) that HELLO's copies of the same names obey, so
 * control characters could reach memguardctl's terminal.
 */
static void test_admin_answer_names(void **state)
{
	uint8_t buf[MG_MSG_MAX];
	struct mg_msg m;
	size_t n;

	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	strcpy(m.status_service.name, "web\x1b[2J");
	assert_encode_einval(&m);
	fill(&m, MG_MSG_CLIENT_INFO, V_PATTERN);
	strcpy(m.client_info.service, "web\n");
	assert_encode_einval(&m);
	fill(&m, MG_MSG_CLIENT_INFO, V_PATTERN);
	strcpy(m.client_info.process, "api\r");
	assert_encode_einval(&m);

	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	strcpy(m.status_service.name, "web.");
	n = encode_ok(&m, buf);
	buf[n - strlen(m.status_service.cgroup) - 2 - 1] = '\n';
	assert_decode_fails(buf, n, -EBADMSG);

	/* a cgroup path is not a name: any byte but NUL */
	fill(&m, MG_MSG_STATUS_SERVICE, V_PATTERN);
	strcpy(m.status_service.cgroup, "system.slice/caf\xc3\xa9.service");
	assert_int_equal(proto_msg_validate(&m), 0);
}

/* Codes and reasons outside the enums are carried, for newer peers. */
static void test_open_enums(void **state)
{
	uint8_t buf[MG_MSG_MAX];
	struct mg_msg m, d;

	fill(&m, MG_MSG_ERROR, V_PATTERN);
	m.error.code = MG_ERR_CONFIG + 1;
	assert_decode_ok(buf, encode_ok(&m, buf), &d);
	assert_int_equal(d.error.code, MG_ERR_CONFIG + 1);
	fill(&m, MG_MSG_BYE, V_PATTERN);
	m.bye.reason = MG_BYE_SHUTDOWN + 1;
	assert_decode_ok(buf, encode_ok(&m, buf), &d);
	assert_int_equal(d.bye.reason, MG_BYE_SHUTDOWN + 1);
	fill(&m, MG_MSG_HELLO, V_PATTERN);
	m.hello.capabilities = ~MG_CAP_ALL;
	assert_decode_ok(buf, encode_ok(&m, buf), &d);
	assert_int_equal(d.hello.capabilities, ~MG_CAP_ALL);
	/* texts are not names: control characters pass */
	fill(&m, MG_MSG_RESULT, V_PATTERN);
	strcpy(m.result.text, "line one\nline two\t\x7f\xff");
	assert_decode_ok(buf, encode_ok(&m, buf), &d);
	assert_string_equal(d.result.text, m.result.text);
}

/* ---- names ---------------------------------------------------------------- */

static void test_type_names(void **state)
{
	static const struct {
		uint16_t type;
		const char *name;
		enum mg_sender sender;
	} table[] = {
		{ MG_MSG_HELLO, "HELLO", MG_SENDER_CLIENT },
		{ MG_MSG_REPORT, "REPORT", MG_SENDER_CLIENT },
		{ MG_MSG_RELEASED, "RELEASED", MG_SENDER_CLIENT },
		{ MG_MSG_PONG, "PONG", MG_SENDER_CLIENT },
		{ MG_MSG_BYE, "BYE", MG_SENDER_ANY },
		{ MG_MSG_WELCOME, "WELCOME", MG_SENDER_DAEMON },
		{ MG_MSG_DIRECTIVE, "DIRECTIVE", MG_SENDER_DAEMON },
		{ MG_MSG_PING, "PING", MG_SENDER_DAEMON },
		{ MG_MSG_ERROR, "ERROR", MG_SENDER_DAEMON },
		{ MG_MSG_BOARD, "BOARD", MG_SENDER_DAEMON },
		{ MG_MSG_STATUS, "STATUS", MG_SENDER_ADMIN },
		{ MG_MSG_CLIENTS, "CLIENTS", MG_SENDER_ADMIN },
		{ MG_MSG_RELEASE, "RELEASE", MG_SENDER_ADMIN },
		{ MG_MSG_RELOAD, "RELOAD", MG_SENDER_ADMIN },
		{ MG_MSG_SET_BUDGET, "SET_BUDGET", MG_SENDER_ADMIN },
		{ MG_MSG_STATUS_DAEMON, "STATUS_DAEMON", MG_SENDER_DAEMON },
		{ MG_MSG_STATUS_SERVICE, "STATUS_SERVICE", MG_SENDER_DAEMON },
		{ MG_MSG_CLIENT_INFO, "CLIENT_INFO", MG_SENDER_DAEMON },
		{ MG_MSG_RESULT, "RESULT", MG_SENDER_DAEMON },
	};

	assert_int_equal(ARRAY_SIZE(table), N_TYPES);
	for (size_t i = 0; i < ARRAY_SIZE(table); i++) {
		assert_int_equal(table[i].type, all_types[i]);
		assert_string_equal(proto_type_name(table[i].type), table[i].name);
		assert_int_equal(proto_type_sender(table[i].type), table[i].sender);
	}
	for (size_t i = 0; i < ARRAY_SIZE(unknown_types); i++) {
		assert_null(proto_type_name(unknown_types[i]));
		assert_int_equal(proto_type_sender(unknown_types[i]), MG_SENDER_NONE);
	}
}

static void test_level_names(void **state)
{
	assert_string_equal(proto_level_name(MG_LEVEL_NORMAL), "NORMAL");
	assert_string_equal(proto_level_name(MG_LEVEL_WARN), "WARN");
	assert_string_equal(proto_level_name(MG_LEVEL_CRITICAL), "CRITICAL");
	assert_string_equal(proto_level_name(MG_LEVEL_EMERGENCY), "EMERGENCY");
	assert_null(proto_level_name(MG_LEVEL_EMERGENCY + 1));
	assert_null(proto_level_name(255));
	assert_null(proto_level_name(UINT32_MAX));
}

static void test_err_names(void **state)
{
	static const char *const want[] = {
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

	for (unsigned i = 0; i < ARRAY_SIZE(want); i++)
		assert_string_equal(proto_err_name(i), want[i]);
	assert_null(proto_err_name(MG_ERR_CONFIG + 1));
	assert_null(proto_err_name(UINT32_MAX));
}

/* ---- sizes -------------------------------------------------------------------- */

static void test_largest_fits(void **state)
{
	size_t largest = 0;
	uint16_t largest_type = 0;

	for (size_t t = 0; t < N_TYPES; t++) {
		uint8_t buf[MG_MSG_MAX];
		struct mg_msg m;
		size_t n;

		fill(&m, all_types[t], V_MAX);
		n = encode_ok(&m, buf);
		if (n > largest) {
			largest = n;
			largest_type = all_types[t];
		}
	}
	/* STATUS_SERVICE: 48 bytes of integers, a full name and a full path */
	assert_int_equal(largest_type, MG_MSG_STATUS_SERVICE);
	assert_int_equal(largest, MG_HEADER_SIZE + 48 + 2 + MG_NAME_MAX + 2 + MG_PATH_MAX);
	assert_true(largest <= MG_MSG_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_hello),
		cmocka_unit_test(test_roundtrip_report),
		cmocka_unit_test(test_roundtrip_released),
		cmocka_unit_test(test_roundtrip_pong),
		cmocka_unit_test(test_roundtrip_bye),
		cmocka_unit_test(test_roundtrip_welcome),
		cmocka_unit_test(test_roundtrip_directive),
		cmocka_unit_test(test_roundtrip_ping),
		cmocka_unit_test(test_roundtrip_error),
		cmocka_unit_test(test_roundtrip_status),
		cmocka_unit_test(test_roundtrip_clients),
		cmocka_unit_test(test_roundtrip_release),
		cmocka_unit_test(test_roundtrip_reload),
		cmocka_unit_test(test_roundtrip_set_budget),
		cmocka_unit_test(test_roundtrip_status_daemon),
		cmocka_unit_test(test_roundtrip_status_service),
		cmocka_unit_test(test_roundtrip_client_info),
		cmocka_unit_test(test_roundtrip_board),
		cmocka_unit_test(test_board_invalid),
		cmocka_unit_test(test_slot_roundtrip),
		cmocka_unit_test(test_slot_invalid),
		cmocka_unit_test(test_slot_race),
		cmocka_unit_test(test_roundtrip_result),
		cmocka_unit_test(test_golden_hello),
		cmocka_unit_test(test_golden_directive),
		cmocka_unit_test(test_golden_welcome),
		cmocka_unit_test(test_golden_welcome_old_layout),
		cmocka_unit_test(test_golden_reload),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_header_length_mismatch),
		cmocka_unit_test(test_header_decode),
		cmocka_unit_test(test_wrong_version),
		cmocka_unit_test(test_unknown_type),
		cmocka_unit_test(test_string_past_end),
		cmocka_unit_test(test_string_too_long),
		cmocka_unit_test(test_string_embedded_nul),
		cmocka_unit_test(test_string_empty),
		cmocka_unit_test(test_wire_builder_agrees),
		cmocka_unit_test(test_layout_all_types),
		cmocka_unit_test(test_longer_body),
		cmocka_unit_test(test_flags_ignored),
		cmocka_unit_test(test_encode_nobufs),
		cmocka_unit_test(test_encode_invalid),
		cmocka_unit_test(test_name_bad_bytes),
		cmocka_unit_test(test_decode_invalid),
		cmocka_unit_test(test_admin_answer_names),
		cmocka_unit_test(test_open_enums),
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_level_names),
		cmocka_unit_test(test_err_names),
		cmocka_unit_test(test_largest_fits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

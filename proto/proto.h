/* SPDX-License-Identifier: MIT */
/*
 * memguard wire protocol: message types, their decoded form, and the
 * functions that turn them into bytes and back.  Nothing here does I/O.
 *
 * Every message is one SOCK_SEQPACKET datagram: a 16-byte header
 * {u16 type, u16 version, u32 length, u32 seq, u32 flags} followed by
 * `length` bytes of body.  Integers are little-endian and encoded field by
 * field; strings are a u16 byte count followed by that many bytes, without
 * a NUL.  docs/protocol.md is the byte-exact specification.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_PROTO_VERSION 1             /* header.version of this protocol */
#define MG_HEADER_SIZE 16              /* bytes */
#define MG_MSG_MAX 4096                /* bytes, whole datagram, header included */
#define MG_NAME_MAX 255                /* bytes, service and process names */
#define MG_PATH_MAX 1024               /* bytes, cgroup paths */
#define MG_TEXT_MAX 1024               /* bytes, error and result texts */

/* Message types.  0x00xx: client → daemon, 0x01xx: daemon → client,
 * 0x02xx: admin requests, 0x03xx: admin answers. */
enum mg_msg_type {
	MG_MSG_HELLO = 0x0001,
	MG_MSG_REPORT = 0x0002,
	MG_MSG_RELEASED = 0x0003,
	MG_MSG_PONG = 0x0004,
	MG_MSG_BYE = 0x0005,             /* either direction */

	MG_MSG_WELCOME = 0x0101,
	MG_MSG_DIRECTIVE = 0x0102,
	MG_MSG_PING = 0x0103,
	MG_MSG_ERROR = 0x0104,
	MG_MSG_BOARD = 0x0105,           /* with two descriptors (SCM_RIGHTS) */

	MG_MSG_STATUS = 0x0201,
	MG_MSG_CLIENTS = 0x0202,
	MG_MSG_RELEASE = 0x0203,
	MG_MSG_RELOAD = 0x0204,
	MG_MSG_SET_BUDGET = 0x0205,

	MG_MSG_STATUS_DAEMON = 0x0301,
	MG_MSG_STATUS_SERVICE = 0x0302,
	MG_MSG_CLIENT_INFO = 0x0303,
	MG_MSG_RESULT = 0x0304,
};

/* HELLO capability bits: what the client can do when directed. */
#define MG_CAP_GC_HOOK (UINT32_C(1) << 0)      /* sets a GC target */
#define MG_CAP_RELEASE_HOOK (UINT32_C(1) << 1) /* drops application caches */
#define MG_CAP_ADMIT (UINT32_C(1) << 2)        /* sheds work through mg_admit() */
#define MG_CAP_HEAP (UINT32_C(1) << 3)         /* allocates from the memguard heap */
#define MG_CAP_ALL (MG_CAP_GC_HOOK | MG_CAP_RELEASE_HOOK | MG_CAP_ADMIT | MG_CAP_HEAP)
/* How the client takes its directives, not what it does: it can take a
 * directive board (BOARD, docs/protocol.md §5.4).  Not in MG_CAP_ALL. */
#define MG_CAP_BOARD (UINT32_C(1) << 4)

/* enum mg_level (MG_LEVEL_NORMAL … MG_LEVEL_EMERGENCY) is the public API's,
 * in the installed header; the wire carries the same values (proto.c
 * asserts the range it accepts). */
#include "client/memguard/client.h"

enum mg_enforce {
	MG_ENFORCE_NOTIFY = 0,
	MG_ENFORCE_HIGH = 1,
	MG_ENFORCE_KILL = 2,
};

/* Escalation in force on a service (STATUS_SERVICE.escalation). */
enum mg_escalation {
	MG_ESCALATION_NONE = 0,
	MG_ESCALATION_HIGH = 1,          /* memory.high written by the daemon */
	MG_ESCALATION_KILLED = 2,        /* the cgroup was killed */
};

/* How the daemon learns a service's pressure (STATUS_SERVICE.psi_mode). */
enum mg_psi_mode {
	MG_PSI_ABSENT = 0,               /* cgroup not present now */
	MG_PSI_TRIGGER = 1,              /* PSI trigger with the configured window */
	MG_PSI_TRIGGER_ROUNDED = 2,      /* PSI trigger, window rounded to 2 s */
	MG_PSI_POLLING = 3,              /* averages read on every tick */
};

/* ERROR and RESULT codes. */
enum mg_err {
	MG_ERR_OK = 0,
	MG_ERR_PROTOCOL = 1,             /* malformed or unexpected message */
	MG_ERR_VERSION = 2,              /* protocol version not supported */
	MG_ERR_SERVICE = 3,              /* named service does not match the peer's cgroup */
	MG_ERR_PERMISSION = 4,           /* admin request from a non-admin peer */
	MG_ERR_NO_SERVICE = 5,           /* no such service */
	MG_ERR_INVALID = 6,              /* a value out of range */
	MG_ERR_BUSY = 7,                 /* too many clients or requests */
	MG_ERR_INTERNAL = 8,             /* the daemon failed; see its log */
	MG_ERR_CONFIG = 9,               /* RELOAD: the new config is broken */
};

#define MG_GC_DEFAULT 0                 /* gc_percent: the application's own default */
#define MG_THROTTLE_MAX 1000            /* throttle is in permille */

/* BYE reasons. */
enum mg_bye_reason {
	MG_BYE_NORMAL = 0,
	MG_BYE_SHUTDOWN = 1,             /* daemon stopping; reconnect later */
};

struct mg_header {
	uint16_t type;
	uint16_t version;
	uint32_t length;                 /* body bytes after the header */
	uint32_t seq;
	uint32_t flags;                  /* MG_FLAG_*; receivers ignore unknown bits */
};

/* REPORT: the client acts on its local limit (heap past its soft limit,
 * libmemguard-client(3)); the daemon samples the service at once. */
#define MG_FLAG_LOCAL_LIMIT 0x1

/* What the daemon asks a client to do: the body of DIRECTIVE. */
struct mg_directive {
	uint8_t level;                   /* enum mg_level */
	uint16_t gc_percent;             /* MG_GC_DEFAULT or 1..65535 */
	uint16_t throttle;               /* permille of new work to reject, 0..1000 */
	uint64_t soft_limit;             /* bytes the process should stay under; 0 = none */
	uint64_t release;                /* bytes to release now; 0 = none */
	uint32_t deadline_ms;            /* for `release`, relative; 0 = none */
};

struct mg_hello {
	uint32_t capabilities;           /* MG_CAP_* */
	char service[MG_NAME_MAX + 1];   /* "" = let the daemon map the peer's cgroup */
	char process[MG_NAME_MAX + 1];
};

struct mg_report {
	uint64_t heap_sys;               /* bytes mapped by the client's heap */
	uint64_t heap_inuse;             /* bytes in live allocations */
	uint64_t heap_idle;              /* free but still resident */
	uint64_t heap_released;          /* free and given back to the kernel */
	uint64_t external;               /* bytes the application counts itself (caches) */
	uint64_t admitted;               /* mg_admit() calls that admitted, total */
	uint64_t rejected;               /* mg_admit() calls that rejected, total */
	uint64_t released_total;         /* bytes released on demand, total */
	uint16_t gc_percent;             /* GC target in force */
};

struct mg_released {
	uint32_t directive_seq;          /* header.seq of the DIRECTIVE answered */
	uint64_t bytes;
	uint64_t usec;                   /* time the release took */
};

struct mg_ping {
	uint64_t cookie;                 /* PONG echoes it */
};

struct mg_bye {
	uint32_t reason;                 /* enum mg_bye_reason */
};

/* The answer to HELLO.  The directive in force follows in a DIRECTIVE of
 * its own, so that WELCOME and DIRECTIVE each grow at their end. */
struct mg_welcome {
	uint64_t client_id;
	uint64_t budget;                 /* bytes; 0 = none known */
	uint32_t report_interval_ms;
	char service[MG_NAME_MAX + 1];
};

/*
 * BOARD: the client's slot on its service's directive board.  Two
 * descriptors come with it (SCM_RIGHTS, in this order): the board, a
 * read-only, sealed memfd of `slots` × MG_BOARD_SLOT_SIZE bytes, and the
 * board's wake-up, the read end of a pipe the daemon writes a byte to
 * after it changed slots.  docs/protocol.md §5.4.
 */
struct mg_board {
	uint32_t slot;                   /* index of the client's slot, < slots */
	uint32_t slots;                  /* slots on the board, ≥ 1 */
};

struct mg_error {
	uint32_t code;                   /* enum mg_err */
	char text[MG_TEXT_MAX + 1];
};

struct mg_clients_req {
	char service[MG_NAME_MAX + 1];   /* "" = all services */
};

struct mg_release_req {
	uint64_t bytes;                  /* 0 = everything releasable */
	char service[MG_NAME_MAX + 1];
};

struct mg_set_budget {
	uint64_t budget;                 /* bytes, > 0 */
	char service[MG_NAME_MAX + 1];
};

struct mg_status_daemon {
	uint32_t services;
	uint32_t clients;
	uint64_t mem_total;              /* bytes */
	uint64_t mem_available;          /* bytes */
	uint32_t host_some_avg10;        /* PSI avg10 in hundredths of a percent */
	uint32_t host_full_avg10;
	uint32_t tick_ms;
	char version[MG_NAME_MAX + 1];
};

struct mg_status_service {
	uint8_t level;                   /* enum mg_level */
	uint8_t enforce;                 /* enum mg_enforce */
	uint8_t escalation;              /* enum mg_escalation */
	uint8_t psi_mode;                /* enum mg_psi_mode */
	uint16_t gc_percent;
	uint16_t throttle;               /* permille */
	uint32_t clients;
	uint32_t utilization;            /* working set / budget, hundredths of a percent */
	uint32_t some_avg10;             /* hundredths of a percent */
	uint32_t full_avg10;
	uint64_t budget;                 /* bytes */
	uint64_t working_set;            /* bytes */
	uint64_t released_total;         /* bytes released by its clients, total */
	char name[MG_NAME_MAX + 1];
	char cgroup[MG_PATH_MAX + 1];
};

struct mg_client_info {
	uint64_t client_id;
	uint32_t pid;
	uint32_t uid;
	uint64_t heap_sys;
	uint64_t heap_inuse;
	uint64_t heap_released;
	uint32_t last_directive_seq;
	uint8_t last_level;
	uint32_t asked;                  /* release demands sent */
	uint32_t answered;               /* RELEASED answers received */
	uint64_t asked_bytes;
	uint64_t released_bytes;
	uint32_t response_us;            /* mean time to answer a demand */
	char service[MG_NAME_MAX + 1];
	char process[MG_NAME_MAX + 1];
};

struct mg_result {
	uint32_t code;                   /* enum mg_err; MG_ERR_OK on success */
	char text[MG_TEXT_MAX + 1];
};

/* A decoded message.  `hdr.type` selects the member of the union; types
 * without a body (PONG aside) use none. */
struct mg_msg {
	struct mg_header hdr;
	union {
		struct mg_hello hello;
		struct mg_report report;
		struct mg_released released;
		struct mg_ping ping;         /* PING and PONG */
		struct mg_bye bye;
		struct mg_welcome welcome;
		struct mg_directive directive;
		struct mg_error error;
		struct mg_board board;
		struct mg_clients_req clients;
		struct mg_release_req release;
		struct mg_set_budget set_budget;
		struct mg_status_daemon status_daemon;
		struct mg_status_service status_service;
		struct mg_client_info client_info;
		struct mg_result result;
	};
};

/*
 * One slot of a directive board (docs/protocol.md §5.4): the state of the
 * directive in force for one client (a release demand comes as a
 * DIRECTIVE), and the client it is for.  Shared memory between the
 * daemon, which writes it, and the client, which only reads it; native
 * byte order, since both run on one host.  `lock` is a sequence lock: odd
 * while the daemon writes.
 */
#define MG_BOARD_SLOT_SIZE 64           /* bytes */
struct mg_board_slot {
	uint32_t lock;                   /* odd while being written */
	uint32_t seq;                    /* the directive's daemon seq, as a DIRECTIVE's */
	uint8_t level;                   /* enum mg_level */
	uint8_t reserved0;
	uint16_t gc_percent;
	uint16_t throttle;               /* permille */
	uint16_t reserved1;
	uint64_t soft_limit;             /* bytes; 0 = none */
	uint64_t stamp_ns;               /* CLOCK_REALTIME when written (diagnosis) */
	uint64_t owner;                  /* the client_id (WELCOME) it is for; 0 = none */
	uint8_t reserved[24];            /* zero */
};
_Static_assert(sizeof(struct mg_board_slot) == MG_BOARD_SLOT_SIZE, "a board slot is 64 bytes");
/* Another process reads the slot: its 64-bit fields must be read and
 * written by plain instructions, not through a lock of libatomic's. */
_Static_assert(__atomic_always_lock_free(8, 0), "64-bit atomics without locks");

/*
 * Write `d` (its release and deadline are not part of a slot) into `s`
 * for client `owner` with `seq` and `stamp_ns`.  The daemon is the slot's
 * only writer.
 */
void proto_slot_write(struct mg_board_slot *s, const struct mg_directive *d, uint64_t owner,
		      uint32_t seq, uint64_t stamp_ns);

/*
 * Read `s` consistently: a copy taken while no write was under way.
 * Returns 0 with the directive in `*ret` (release 0), its seq in
 * `*ret_seq` and the stamp in `*ret_stamp_ns` (either may be NULL);
 * -ENODATA for a slot that holds nothing (seq 0) or is not `owner`'s (a
 * slot given to another client); -EAGAIN when every try met a write under
 * way; -EBADMSG when a value is out of range (level, throttle), as for a
 * DIRECTIVE.
 */
int proto_slot_read(const struct mg_board_slot *s, uint64_t owner, struct mg_directive *ret,
		    uint32_t *ret_seq, uint64_t *ret_stamp_ns);

/* Who may send a message type. */
enum mg_sender {
	MG_SENDER_NONE = 0,              /* unknown type */
	MG_SENDER_CLIENT = 1,
	MG_SENDER_DAEMON = 2,
	MG_SENDER_ANY = 3,               /* BYE */
	MG_SENDER_ADMIN = 4,
};

/* The name of a message type ("HELLO"), or NULL for an unknown type. */
const char *proto_type_name(uint16_t type);

/* Which side sends `type`; MG_SENDER_NONE when the type is unknown. */
enum mg_sender proto_type_sender(uint16_t type);

/* Name of a level ("NORMAL"…), or NULL when out of range. */
const char *proto_level_name(unsigned level);

/* Whether `s` may travel as a name on the wire: printable ASCII only,
 * 0x20..0x7e (docs/protocol.md §3.2); the empty string is. */
bool proto_name_ok(const char *s);

/* Copy `src` into `dst` (`size` ≥ 1 bytes, NUL-terminated, cut to fit),
 * each byte that proto_name_ok() refuses written as `replacement`. */
void proto_name_copy(char *dst, size_t size, const char *src, char replacement);

/* Name of an enforce mode as memguard.conf spells it ("notify", "high",
 * "kill"), or NULL when out of range. */
const char *proto_enforce_name(unsigned enforce);

/* Name of an enum mg_err code ("protocol error"…), or NULL when unknown. */
const char *proto_err_name(unsigned code);

/*
 * Check the values of a decoded or to-be-encoded message: enums in range,
 * throttle ≤ 1000, strings NUL-terminated within their field and free of
 * control characters where names are expected.  Returns 0 or -EINVAL.
 */
int proto_msg_validate(const struct mg_msg *m);

/*
 * Encode `m` (its hdr.type, hdr.seq and hdr.flags; version and length are
 * filled in) into `buf`.  Returns the number of bytes written, -EINVAL when
 * the message does not validate, or -ENOBUFS when `size` is too small.
 */
int proto_msg_encode(const struct mg_msg *m, void *buf, size_t size);

/*
 * Decode the header of a datagram.  Returns 0, or -EBADMSG when `len` is
 * shorter than a header or the header's length does not equal the bytes
 * after it.  The version is not checked here.
 */
int proto_header_decode(const void *buf, size_t len, struct mg_header *ret);

/*
 * The header's seq of a datagram of `len` bytes, read even when the rest
 * of the header or the body is malformed (so that an ERROR can name what
 * it refuses); 0 when `len` is shorter than a header.
 */
uint32_t proto_peek_seq(const void *buf, size_t len);

/*
 * Decode one datagram of `len` bytes into `*ret`.  Returns 0 on success;
 * -EBADMSG when the datagram is truncated, its length field disagrees with
 * `len`, a string runs past the end or holds a NUL, or a value is out of
 * range; -EPROTONOSUPPORT for another protocol version; -EOPNOTSUPP for an
 * unknown type.  A body longer than this version knows is accepted and the
 * extra bytes ignored.  `*ret` is written only on success.
 */
int proto_msg_decode(const void *buf, size_t len, struct mg_msg *ret);

/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for proto/: decode arbitrary datagrams.  Whatever
 * decodes must validate, encode again to the same bytes (only the header's
 * length may shrink, when the input carried a body longer than this version
 * knows), and decode again to the same message.  Any disagreement abort()s,
 * so the fuzzer reports it as a crash.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t buf[MG_MSG_MAX];
	struct mg_header h;
	struct mg_msg a, b;
	int hr, r, n;

	/* Zeroed so memcmp() below compares padding that decode never wrote. */
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));

	hr = proto_header_decode(data, size, &h);
	r = proto_msg_decode(data, size, &a);
	if (r < 0) {
		/* The message decoder refuses at least what the header decoder does. */
		if (hr == 0 && r != -EBADMSG && r != -EPROTONOSUPPORT && r != -EOPNOTSUPP)
			abort();
		if (hr < 0 && r != hr)
			abort();
		return 0;
	}
	if (hr < 0 || memcmp(&h, &a.hdr, sizeof(h)) != 0)
		abort();
	if (!proto_type_name(a.hdr.type) || proto_type_sender(a.hdr.type) == MG_SENDER_NONE)
		abort();
	if (proto_msg_validate(&a) != 0)
		abort();

	n = proto_msg_encode(&a, buf, sizeof(buf));
	if (n < MG_HEADER_SIZE || (size_t)n > size)
		abort();
	/* Type, version, seq, flags and every known field come back byte for
	 * byte; the length field differs only if the input had extra bytes. */
	if (memcmp(buf, data, 4) != 0 || memcmp(buf + 8, data + 8, (size_t)n - 8) != 0)
		abort();
	if (proto_msg_encode(&a, buf, (size_t)n - 1) != -ENOBUFS)
		abort();
	if (proto_msg_encode(&a, buf, sizeof(buf)) != n)
		abort();

	if (proto_msg_decode(buf, (size_t)n, &b) != 0)
		abort();
	if (b.hdr.length != (uint32_t)n - MG_HEADER_SIZE)
		abort();
	b.hdr.length = a.hdr.length;
	if (memcmp(&a, &b, sizeof(a)) != 0)
		abort();
	return 0;
}

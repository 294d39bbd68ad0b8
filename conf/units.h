/* SPDX-License-Identifier: MIT */
/*
 * The value parsers of memguard.conf, shared with memguardctl (which
 * links them alone, without inih): conf/units.c.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/*
 * Each returns 0 and writes `*ret`, or -EINVAL for bad syntax or unit,
 * -ERANGE when out of range.
 *
 * conf_parse_size: "4096", "512K", "1.5G", "2T", "64MiB" (binary units
 * K M G T P E, case-insensitive, optional "B"/"iB"); a fraction needs a
 * unit and is truncated to whole bytes; at most 9 decimals; more than
 * 2^64 - 1 bytes is -ERANGE.
 * conf_parse_duration: "250ms", "5s", "1.5s", "2m" (units ms, s, sec, m,
 * min, h); the unit is required; truncated to whole ms; more than
 * UINT32_MAX ms is -ERANGE.
 * conf_parse_percent: "80", "80%", "12.5%" → bp (8000, 1250); at most two
 * decimals, 0..100 %.
 * None accepts a sign or leading or trailing blanks; blanks between the
 * number and its unit are allowed ("2 G").
 * conf_parse_log_level: "emerg", "alert", "crit", "err" or "error",
 * "warning" or "warn", "notice", "info", "debug" (case-insensitive), or
 * "0".."7" → the syslog priority; -EINVAL for anything else.
 */
int conf_parse_size(const char *s, uint64_t *ret);
int conf_parse_duration(const char *s, uint32_t *ret_ms);
int conf_parse_percent(const char *s, uint32_t *ret_bp);
int conf_parse_log_level(const char *s, int *ret);

/* An integer with an optional sign, nothing else: 0, -EINVAL, or -ERANGE
 * when it does not fit 64 bits. */
int conf_parse_int64(const char *s, int64_t *ret);

/* True when `s` is a bare number ("5", "1.5"), as a duration that lacks
 * its unit is. */
bool conf_is_number(const char *s);

/* SPDX-License-Identifier: MIT */
/*
 * The value parsers of conf/units.h: sizes, durations, percentages,
 * integers and log levels as memguard.conf and memguardctl write them.
 * No inih here, so memguardctl links them without the config parser.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "conf/units.h"
#include "proto/macro.h"

static bool streq(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/*
 * A decimal number: digits, optionally '.' and more digits.  The integer
 * part saturates (*ret_overflow is set); the fraction keeps its first
 * `max_frac` digits (more is -EINVAL) as an integer over 10^*ret_frac_digits.
 * Returns 0 and advances *s, or -EINVAL when there is no number.
 */
static int parse_decimal(const char **s, unsigned max_frac, uint64_t *ret_int, bool *ret_overflow,
			 uint64_t *ret_frac, unsigned *ret_frac_digits)
{
	const char *p = *s;
	uint64_t v = 0, frac = 0;
	unsigned n_frac = 0;
	bool overflow = false;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
			overflow = true;
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		for (; isdigit((unsigned char)*p); p++) {
			if (n_frac == max_frac)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(*p - '0');
			n_frac++;
		}
	}

	*s = p;
	*ret_int = v;
	*ret_overflow = overflow;
	*ret_frac = frac;
	*ret_frac_digits = n_frac;
	return 0;
}

/* Skip the blanks between a number and its unit; NULL when no unit follows. */
static const char *skip_blanks(const char *s)
{
	const char *p = s;

	while (*p == ' ' || *p == '\t')
		p++;
	return p != s && *p == '\0' ? NULL : p;
}

static uint64_t pow10_u64(unsigned n)
{
	uint64_t r = 1;

	while (n--)
		r *= 10;
	return r;
}

/* floor(frac / 10^digits × mult) without overflow, for digits ≤ 9. */
static uint64_t scale_fraction(uint64_t frac, unsigned digits, uint64_t mult)
{
	uint64_t d = pow10_u64(digits);

	/* mult = a·d + b, so frac·mult/d = a·frac + b·frac/d; b·frac < d² ≤ 10^18 */
	return mult / d * frac + mult % d * frac / d;
}

int conf_parse_size(const char *s, uint64_t *ret)
{
	static const char units[] = "KMGTPE";
	uint64_t v, frac, mult = 1, r;
	unsigned n_frac;
	bool overflow;
	const char *u;

	if (!s || parse_decimal(&s, 9, &v, &overflow, &frac, &n_frac) < 0)
		return -EINVAL;
	s = skip_blanks(s);
	if (!s)
		return -EINVAL;
	if (*s) {
		u = strchr(units, toupper((unsigned char)*s));
		if (u) {
			mult = UINT64_C(1) << (10 * (u - units + 1));
			s++;
			if (*s == 'i' || *s == 'I') {
				s++;
				if (*s != 'b' && *s != 'B')
					return -EINVAL;
			}
		}
		if (*s == 'b' || *s == 'B')
			s++;
		if (*s)
			return -EINVAL;
	}
	/* Bytes are whole: a fraction needs a unit to scale it. */
	if (n_frac > 0 && mult == 1)
		return -EINVAL;
	if (overflow || __builtin_mul_overflow(v, mult, &r) ||
	    __builtin_add_overflow(r, scale_fraction(frac, n_frac, mult), &r))
		return -ERANGE;

	*ret = r;
	return 0;
}

int conf_parse_duration(const char *s, uint32_t *ret_ms)
{
	static const struct {
		const char *suffix;
		uint64_t ms;
	} units[] = {
		{ "ms", 1 },  { "s", 1000 },	 { "sec", 1000 },
		{ "m", 60000 }, { "min", 60000 }, { "h", 3600000 },
	};
	uint64_t v, frac, mult = 0, r;
	unsigned n_frac;
	bool overflow;

	if (!s || parse_decimal(&s, 9, &v, &overflow, &frac, &n_frac) < 0)
		return -EINVAL;
	s = skip_blanks(s);
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < ARRAY_SIZE(units); i++)
		if (streq(s, units[i].suffix))
			mult = units[i].ms;
	if (mult == 0)
		return -EINVAL;
	if (overflow || __builtin_mul_overflow(v, mult, &r) ||
	    __builtin_add_overflow(r, scale_fraction(frac, n_frac, mult), &r) || r > UINT32_MAX)
		return -ERANGE;

	*ret_ms = (uint32_t)r;
	return 0;
}

int conf_parse_percent(const char *s, uint32_t *ret_bp)
{
	uint64_t v, frac, bp;
	unsigned n_frac;
	bool overflow;

	if (!s || parse_decimal(&s, 2, &v, &overflow, &frac, &n_frac) < 0)
		return -EINVAL;
	s = skip_blanks(s);
	if (!s)
		return -EINVAL;
	if (*s == '%')
		s++;
	if (*s)
		return -EINVAL;
	if (overflow || v > 100)
		return -ERANGE;
	bp = v * 100 + frac * pow10_u64(2 - n_frac);
	if (bp > 10000)
		return -ERANGE;

	*ret_bp = (uint32_t)bp;
	return 0;
}

int conf_parse_int64(const char *s, int64_t *ret)
{
	bool neg = false, overflow;
	uint64_t v, frac;
	unsigned n_frac;

	if (*s == '+' || *s == '-')
		neg = *s++ == '-';
	if (parse_decimal(&s, 0, &v, &overflow, &frac, &n_frac) < 0 || *s)
		return -EINVAL;
	if (overflow || v > (uint64_t)INT64_MAX)
		return -ERANGE;

	*ret = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

static const char *const log_levels[] = {
	"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
};

int conf_parse_log_level(const char *s, int *ret)
{
	static const struct {
		const char *name;
		int level;
	} aliases[] = { { "error", 3 }, { "warn", 4 } };
	int64_t v;

	if (!s)
		return -EINVAL;
	if (conf_parse_int64(s, &v) == 0) {
		if (v < 0 || v >= (int64_t)ARRAY_SIZE(log_levels) || s[0] == '+' || s[0] == '-')
			return -EINVAL;
		*ret = (int)v;
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(log_levels); i++)
		if (strcasecmp(s, log_levels[i]) == 0) {
			*ret = (int)i;
			return 0;
		}
	for (size_t i = 0; i < ARRAY_SIZE(aliases); i++)
		if (strcasecmp(s, aliases[i].name) == 0) {
			*ret = aliases[i].level;
			return 0;
		}
	return -EINVAL;
}

bool conf_is_number(const char *value)
{
	uint64_t v, frac;
	unsigned n;
	bool overflow;

	return parse_decimal(&value, 9, &v, &overflow, &frac, &n) == 0 && *value == '\0';
}

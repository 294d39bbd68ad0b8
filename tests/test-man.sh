#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The man pages: rendered by groff and by man without a single warning,
# nothing left for sed to substitute, and each page names what it
# documents, as the code has it:
#   memguardd(8)            every option of 'memguardd --help', every ACTION=
#                           of the daemon's structured log lines
#   memguard.conf(5)        every key of conf/conf.c's tables
#   memguardctl(1)          every command and option of 'memguardctl --help'
#                           (when it is built), the exit statuses 0 to 4
#   libmemguard-client(3)   every function of memguard/client.h; its
#                           example program compiles against that header
#
# Run from the top build directory (as 'make check' does); $srcdir is the
# source tree's top (make check sets it).
set -euo pipefail

srcdir=${srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
builddir=$PWD
pages=(docs/memguardd.8 docs/memguard.conf.5 docs/memguardctl.1 docs/libmemguard-client.3)

command -v groff >/dev/null ||
	{ echo "SKIP: groff not installed (Debian package 'groff-base')"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }

for p in "${pages[@]}"; do
	[ -f "$builddir/$p" ] || { fail "$p was not built (make $p)"; continue; }
	# All warnings, tables too; -z: no output but the diagnostics.
	out=$(groff -ww -z -t -man "$builddir/$p" 2>&1) || fail "groff failed on $p"
	[ -z "$out" ] && echo "ok   groff -ww -z -t -man $p" || fail "groff on $p: $out"
	if command -v man >/dev/null; then
		# 80 columns, unless the install paths substituted into the page
		# (a 'make distcheck' prefix, say) are longer than a line can be.
		width=$(grep -o '/[^ ]*' "$builddir/$p" | awk '{ if (length > m) m = length } END { print m + 0 }')
		width=$(( width + 20 > 80 ? width + 20 : 80 ))
		out=$(LC_ALL=C.UTF-8 MANWIDTH=$width man --warnings -E UTF-8 -l "$builddir/$p" 2>&1 >/dev/null) ||
			fail "man failed on $p"
		[ -z "$out" ] && echo "ok   man --warnings -E UTF-8 -l $p" || fail "man on $p: $out"
	fi
	if grep -n '@[a-zA-Z_]*@' "$builddir/$p"; then fail "unsubstituted @VARIABLE@ in $p"; fi
	# The text a reader sees, for the checks below: plain ASCII, no
	# hyphenation, wide lines, no overstriking.
	groff -t -man -Tascii -rLL=200n -rHY=0 -P-cbou "$builddir/$p" \
		>"$tmp/$(basename "$p").txt" 2>/dev/null
done

# needs PAGE WHAT WORD...: each WORD appears in PAGE's rendered text.
needs() {
	local page=$1 what=$2 word missing=()
	shift 2
	for word; do
		grep -qF -- "$word" "$tmp/$page.txt" || missing+=("$word")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		fail "$page does not document $what: ${missing[*]}"
	else
		echo "ok   $page documents its $# $what"
	fi
}

# memguardd(8): the options of --help (tests-only ones included).
daemon=$builddir/daemon/memguardd
if [ -x "$daemon" ]; then
	mapfile -t opts < <("$daemon" --help | grep -oE -- '(^|[ ,])--?[a-zA-Z][a-zA-Z0-9-]*' |
			     grep -oE -- '--?[a-zA-Z][a-zA-Z0-9-]*' | sort -u)
	[ ${#opts[@]} -ge 8 ] || fail "memguardd --help lists only ${#opts[@]} options"
	needs memguardd.8 "options of memguardd --help" "${opts[@]}"
else
	fail "$daemon was not built"
fi
needs memguardd.8 "signals" SIGTERM SIGINT SIGHUP
mapfile -t actions < <(grep -A3 'log_service(' "$srcdir"/daemon/*.c |
			grep -oE '"[a-z-]+",$' | tr -d '",' | sort -u)
[ ${#actions[@]} -ge 5 ] || fail "found only ${#actions[@]} ACTION= values in daemon/*.c"
needs memguardd.8 "structured log fields" SERVICE= LEVEL= UTILIZATION= ACTION=
needs memguardd.8 "ACTION= values" "${actions[@]}"

# memguard.conf(5): every key of [daemon] and of a service, as "key = ".
mapfile -t keys < <(grep -oE '\[[DS]KEY_[A-Z_]+\] = \{ "[a-z_]+"' "$srcdir/conf/conf.c" |
		     grep -oE '"[a-z_]+"' | tr -d '"' | sort -u)
[ ${#keys[@]} -ge 15 ] || fail "found only ${#keys[@]} keys in conf/conf.c"
needs memguard.conf.5 "configuration keys" "${keys[@]/%/ = }"

# memguardctl(1): the commands and options of --help, when it is built.
ctl=$builddir/client/memguardctl
if [ -x "$ctl" ]; then
	help=$("$ctl" --help)
	mapfile -t opts < <(grep -oE -- '(^|[ ,\[])--?[a-zA-Z][a-zA-Z0-9-]*' <<<"$help" |
			     grep -oE -- '--?[a-zA-Z][a-zA-Z0-9-]*' | sort -u)
	mapfile -t cmds < <(sed -n '/^Commands:/,/^$/p' <<<"$help" |
			     grep -oE '^  [a-z][a-z-]+' | tr -d ' ')
	[ ${#cmds[@]} -ge 6 ] || fail "memguardctl --help lists only ${#cmds[@]} commands"
	needs memguardctl.1 "options of memguardctl --help" "${opts[@]}"
	needs memguardctl.1 "commands of memguardctl --help" "${cmds[@]}"
else
	echo "note $ctl is not built: its --help is not compared"
fi
for i in 0 1 2 3 4; do
	sed -n '/^EXIT STATUS/,/^[A-Z]/p' "$tmp/memguardctl.1.txt" | grep -qE "^ +$i  " ||
		fail "memguardctl.1 does not document exit status $i"
done

# libmemguard-client(3): every function the header declares.
mapfile -t funcs < <(grep -oE '\bmg_[a-z_]+\(' "$srcdir/client/memguard/client.h" |
		      tr -d '(' | sort -u)
[ ${#funcs[@]} -ge 20 ] || fail "found only ${#funcs[@]} functions in client.h"
needs libmemguard-client.3 "functions of memguard/client.h" "${funcs[@]/%/()}"
# Its example, compiled against the header of this tree.
sed -n '/^\.\\" BEGIN EXAMPLE/,/^\.\\" END EXAMPLE/p' "$builddir/docs/libmemguard-client.3" |
	sed '1d;$d' | sed -e 's/\\-/-/g' -e 's/\\e/\\/g' -e "s/\\\\(aq/'/g" >"$tmp/example.c"
if [ ! -s "$tmp/example.c" ]; then
	fail "libmemguard-client.3 has no example program"
elif out=$(${CC:-cc} -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Werror -fsyntax-only \
	       -I"$srcdir/client" "$tmp/example.c" 2>&1); then
	echo "ok   the example of libmemguard-client.3 compiles ($(wc -l <"$tmp/example.c") lines)"
else
	echo "$out"
	fail "the example of libmemguard-client.3 does not compile"
fi

exit "$failed"

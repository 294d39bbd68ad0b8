#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The systemd units as 'make install' puts them: installed into a scratch
# DESTDIR with the daemon and the man pages, where the install directories
# say; the sysusers.d and tmpfiles.d entries parsed by the real tools;
# 'systemd-analyze verify' clean (the ExecStart binary and the man pages
# of Documentation= are looked up in the DESTDIR); and the exposure of
# 'systemd-analyze security --offline' at most MG_EXPOSURE_MAX (2.5).
#
# Run from the top build directory (as 'make check' does).
set -euo pipefail

max=${MG_EXPOSURE_MAX:-2.5}
make=${MAKE:-make}
builddir=$PWD

command -v systemd-analyze >/dev/null ||
	{ echo "SKIP: systemd-analyze not installed (Debian package 'systemd')"; exit 77; }
[ -f "$builddir/Makefile" ] || { echo "SKIP: run from the top build directory"; exit 77; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
failed=0
fail() { echo "FAIL: $*"; failed=1; }

# A make of its own, not a job of the one running the tests.
submake() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "$make" -s --no-print-directory -C "$builddir" "$@"; }

eval "$(submake print-ops-dirs)"
if ! submake install-ops DESTDIR="$root" >"$tmp/install.log" 2>&1; then
	cat "$tmp/install.log"
	echo "FAIL: make install-ops DESTDIR=$root"
	exit 1
fi

unitdir=$root$systemdsystemunitdir
for f in "$unitdir/memguardd.service" "$unitdir/memguardd.socket" \
	 "$root$sysusersdir/memguard.conf" "$root$tmpfilesdir/memguard.conf" \
	 "$root$sbindir/memguardd" "$root$mandir/man8/memguardd.8" \
	 "$root$mandir/man5/memguard.conf.5" "$root$mandir/man1/memguardctl.1" \
	 "$root$mandir/man3/libmemguard-client.3"; do
	if [ -e "$f" ]; then echo "ok   installed ${f#"$root"}"; else fail "not installed: ${f#"$root"}"; fi
done
[ "$failed" = 0 ] || exit 1

# The generated unit starts the daemon of this install, and nothing is
# left for sed to replace.
exec_start=$(sed -n 's/^ExecStart=//p' "$unitdir/memguardd.service")
[ "$exec_start" = "$sbindir/memguardd" ] ||
	fail "ExecStart=$exec_start, expected $sbindir/memguardd"
if grep -n '@[a-zA-Z_]*@' "$unitdir/memguardd.service"; then
	fail "unsubstituted @VARIABLE@ in memguardd.service"
fi
# The socket is where the daemon and the clients look by default.
grep -qx 'ListenSequentialPacket=/run/memguard/memguardd.sock' "$unitdir/memguardd.socket" ||
	fail "memguardd.socket does not listen on /run/memguard/memguardd.sock"

# sysusers.d and tmpfiles.d entries, read by the tools that apply them.
if command -v systemd-sysusers >/dev/null; then
	out=$(systemd-sysusers --root="$tmp/sysroot" --dry-run "$root$sysusersdir/memguard.conf" 2>&1) ||
		fail "systemd-sysusers rejects memguard.conf: $out"
	if grep -qi -e warn -e invalid -e fail <<<"$out"; then fail "systemd-sysusers: $out"; fi
	grep -q "memguard" <<<"$out" || fail "systemd-sysusers would not create the group: $out"
	echo "ok   sysusers.d: ${out//$'\n'/; }"
fi
if command -v systemd-tmpfiles >/dev/null; then
	mkdir -p "$tmp/tmproot"
	rc=0
	out=$(systemd-tmpfiles --root="$tmp/tmproot" --create "$root$tmpfilesdir/memguard.conf" 2>&1) ||
		rc=$?
	# Not root: the directory is made, only giving it to root is refused.
	if [ "$(id -u)" != 0 ] && [ "$rc" = 73 ] &&
	   ! grep -qv 'fchownat.*Operation not permitted' <<<"$out"; then
		rc=0 out=
	fi
	[ "$rc" = 0 ] || fail "systemd-tmpfiles rejects memguard.conf (status $rc): $out"
	[ -z "$out" ] || fail "systemd-tmpfiles: $out"
	mode=$(stat -c %a "$tmp/tmproot/run/memguard" 2>/dev/null || echo missing)
	[ "$mode" = 755 ] || fail "systemd-tmpfiles made /run/memguard with mode $mode, not 755"
	echo "ok   tmpfiles.d: /run/memguard $mode"
fi

# systemd-analyze verify on the installed files.  It checks that
# ExecStart= is executable on the host's file system and runs
# 'man PAGE' for Documentation=: give it a copy whose ExecStart points
# into the DESTDIR, and the DESTDIR's man pages.  Everything else is the
# installed unit, unchanged.
mkdir -p "$tmp/verify"
sed "s|^ExecStart=$sbindir/|ExecStart=$root$sbindir/|" "$unitdir/memguardd.service" \
	>"$tmp/verify/memguardd.service"
cp "$unitdir/memguardd.socket" "$tmp/verify/"
if ! out=$(cd "$tmp/verify" && MANPATH="$root$mandir" \
	   systemd-analyze verify ./memguardd.service ./memguardd.socket 2>&1) || [ -n "$out" ]; then
	echo "$out"
	fail "systemd-analyze verify"
else
	echo "ok   systemd-analyze verify memguardd.service memguardd.socket"
fi

# The exposure as systemd rates it, of the installed unit.
out=$(cd "$unitdir" && systemd-analyze security --offline=true ./memguardd.service 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for memguardd.service: \([0-9.]*\).*/\1/p' <<<"$out")
if [ -z "$score" ]; then
	echo "$out"
	fail "no exposure level from systemd-analyze security"
else
	# Each line that costs something, then the figure.
	grep '✗' <<<"$out" | sed 's/  */ /g' || true
	echo "exposure: $score (at most $max)"
	awk -v s="$score" -v m="$max" 'BEGIN { exit !(s <= m) }' ||
		fail "exposure $score is above $max"
fi

exit "$failed"

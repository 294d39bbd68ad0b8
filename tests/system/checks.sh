# SPDX-License-Identifier: MIT
# tests/system/checks.sh: the checks of memguard on a real systemd, sourced
# by tests/system/run (on the host, commands run in the container by ct)
# and by tests/vm/inside (in the VM, ct runs them there directly).
#
# The caller defines ct CMD [ARG]... (run CMD on the system under test,
# bounded by $ct_timeout seconds), fatal MESSAGE (stop with a failure), say
# TEXT (a "# TEXT" comment line), and
# the counters ntest, nfail and last_rc (0).  Results are TAP lines on
# standard output: 'ok N - what' or 'not ok N - what' and the output that
# failed it.  Sourcing it starts the Python evaluator py() talks to.

# py CODE [ARG]...: what 'python3 -S -c CODE ARG...' would do, its output
# and its status, run in one Python process that lives as long as this
# shell: a python3 started for each of the hundreds of checks cost 0.45 s
# each under the VM's TCG (json's import alone, whose regular expressions
# compile in Python, 0.25 s of it).  CODE fails by sys.exit(MESSAGE) or an
# exception; each runs in a fresh namespace.  Requests and answers are
# NUL-separated fields: the count, CODE and the ARGs; the status and the
# output.
mg_py_server='
import io, sys, traceback
buf = b""
def field():
    global buf
    while b"\0" not in buf:
        more = sys.stdin.buffer.read1(65536)
        if not more:
            sys.exit(0)
        buf += more
    f, _, buf = buf.partition(b"\0")
    return f.decode()
out = sys.stdout
while True:
    n = int(field())
    code, *args = [field() for _ in range(n)]
    sys.argv = ["-c"] + args
    sys.stdout = got = io.StringIO()
    rc = 0
    try:
        exec(code, {"__name__": "__main__"})
    except SystemExit as e:
        if isinstance(e.code, int):
            rc = e.code
        elif e.code is not None:
            rc = 1
            print(e.code)
    except BaseException:
        rc = 1
        print(traceback.format_exc(), end="")
    sys.stdout = out
    out.buffer.write(b"%d\0%s\0" % (rc, got.getvalue().encode()))
    out.flush()
'
coproc MG_PY { exec python3 -S -u -c "$mg_py_server"; }
py() {
	local rc out
	if [ -z "${MG_PY_PID:-}" ] || ! kill -0 "$MG_PY_PID" 2>/dev/null; then
		echo "the Python evaluator of checks.sh is gone"
		return 1
	fi
	printf '%s\0' "$#" "$@" >&"${MG_PY[1]}"
	IFS= read -r -d '' rc <&"${MG_PY[0]}" && IFS= read -r -d '' out <&"${MG_PY[0]}" ||
		{ echo "no answer from the Python evaluator of checks.sh"; return 1; }
	printf '%s' "$out"
	return "$rc"
}

# check WHAT CMD [ARG]...: one numbered result; CMD's output when it fails.
# Returns 0 either way (the script goes on); $last_rc is CMD's status.
check() {
	local what=$1 out
	shift
	last_rc=0
	out=$("$@" 2>&1) || last_rc=$?
	ntest=$((ntest + 1))
	if [ "$last_rc" = 0 ]; then
		echo "ok $ntest - $what"
		return 0
	fi
	if [ -n "${known_issue:-}" ]; then
		# TAP's known failure: printed, not counted as failed.
		echo "not ok $ntest - $what # TODO $known_issue"
		[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/#   /'
		return 0
	fi
	echo "not ok $ntest - $what"
	[ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/#   /'
	nfail=$((nfail + 1))
}

# known WHY check ...: a check that fails now and then for a reason an open
# issue tracks (WHY names it).  Its result is printed as any other; a
# failure is marked '# TODO WHY' (TAP's known failure) and does not fail
# the run.  For nothing but such a check.
known() {
	local known_issue=$1
	shift
	"$@"
}

# needed check ...: stop at a failed check that the following ones need.
needed() {
	"$@"
	[ "$last_rc" = 0 ] || fatal "the checks after this one depend on it"
}

# expect WANT CMD [ARG]...: CMD prints exactly WANT (whatever its exit
# status: 'systemctl is-active' says "inactive" with status 3).
expect() {
	local want=$1 out rc=0
	shift
	out=$("$@" 2>&1) || rc=$?
	[ "$out" = "$want" ] && return 0
	printf "expected '%s', got '%s' (status %s) from: %s\n" "$want" "$out" "$rc" "$*"
	return 1
}

# poll SECONDS CMD [ARG]...: retry CMD every half second until it succeeds.
poll() {
	local seconds=$1 deadline=$(($(date +%s) + $1)) out
	shift
	while :; do
		out=$("$@" 2>&1) && return 0
		if [ "$(date +%s)" -ge "$deadline" ]; then
			printf '%s\n(still failing after %s s)\n' "$out" "$seconds"
			return 1
		fi
		sleep 0.5
	done
}

# props UNIT PROP...: the values, on one line.
props() {
	local unit=$1 p v out=
	shift
	for p; do
		v=$(prop "$unit" "$p") || return 1
		out+="${out:+ }$v"
	done
	echo "$out"
}

# set_budget OLD NEW: edit cache-demo's budget in /etc/memguard.conf.
set_budget() {
	ct grep -qx "budget = $1" /etc/memguard.conf || { echo "no 'budget = $1' line"; return 1; }
	ct sed -i "s/^budget = $1\$/budget = $2/" /etc/memguard.conf
}

# restarted OLDPID: memguardd is active again as another process, restarted once.
restarted() {
	local state active main n
	state=$(props memguardd ActiveState MainPID NRestarts) || return 1
	read -r active main n <<<"$state"
	[ "$active" = active ] && [ "$main" != 0 ] && [ "$main" != "$1" ] && [ "$n" = 1 ] && return 0
	echo "ActiveState MainPID NRestarts: $state (MainPID was $1)"
	return 1
}

# status_is PYEXPR: memguardctl status --json in the container, and PYEXPR
# true of it, with d = the whole answer and s = the service named $svc
# (default cache-demo), None when there is none.
status_is() {
	local json
	json=$(ct memguardctl status --json 2>&1) || { echo "$json"; return 1; }
	py '
import json, sys
d = json.loads(sys.argv[2])
s = next((v for v in d["services"] if v["name"] == sys.argv[3]), None)
if not eval(sys.argv[1]):
    sys.exit("not true: %s\nof: %s" % (sys.argv[1], sys.argv[2]))
' "$1" "$json" "${svc:-cache-demo}"
}

# client_is PYEXPR: a client of memguardctl clients --json (c) for which
# PYEXPR is true.
client_is() {
	local json
	json=$(ct memguardctl clients --json 2>&1) || { echo "$json"; return 1; }
	py '
import json, sys
if not any(eval(sys.argv[1]) for c in json.loads(sys.argv[2])["clients"]):
    sys.exit("no client with %s in: %s" % (sys.argv[1], sys.argv[2]))
' "$1" "$json"
}

# mark: journal_has and no_errors look only at what is logged from here on.
mark=
mark() {
	mark=$(ct journalctl -q -n 1 -o cat --show-cursor 2>/dev/null | sed -n 's/^-- cursor: //p')
	[ -n "$mark" ] || fatal "no cursor from journalctl --show-cursor"
}

# journal_has PYEXPR: an entry of 'journalctl -u memguardd -o json' since
# the mark for which PYEXPR is true (e = the entry).
journal_has() {
	local out
	out=$(ct journalctl -u memguardd -o json --no-pager --after-cursor="$mark" 2>&1) || { echo "$out"; return 1; }
	py '
import json, sys
last = []
for line in sys.argv[2].splitlines():
    e = json.loads(line)
    if eval(sys.argv[1]):
        sys.exit(0)
    last = (last + [str(e.get("MESSAGE"))])[-5:]
sys.exit("no journal entry of memguardd.service with: %s\nlast messages:\n%s"
         % (sys.argv[1], "\n".join(last)))
' "$1" "$out"
}

# A unit's stop was clean: it exited by itself with status 0.
stopped_clean() {
	expect "inactive" ct systemctl is-active "$1" &&
		expect "success" prop "$1" Result &&
		expect "0" prop "$1" ExecMainStatus
}

prop() { ct systemctl show -P "$2" "$1"; }

# mg_system_checks: memguardd the way its users run it, with the installed
# units and the cache-demo service (mg_install_tree): enable and start,
# socket activation, a client's registration and budget, the journal's
# structured fields, reload (good and broken files), restart after SIGKILL,
# clean stops.  Ends with memguardd, its socket and cache-demo stopped.
mg_system_checks() {
	local pid json
	check "sysusers made group memguard at boot" ct getent group memguard
	check "systemctl enable memguardd (and, by Also=, memguardd.socket)" \
		ct systemctl enable memguardd
	check "memguardd.service and memguardd.socket are enabled" \
		expect $'enabled\nenabled' ct systemctl is-enabled memguardd.service memguardd.socket
	needed check "systemctl start memguardd" ct systemctl start memguardd
	check "memguardd.service and memguardd.socket are active" \
		expect $'active\nactive' ct systemctl is-active memguardd.service memguardd.socket
	check "the socket is /run/memguard/memguardd.sock, mode 660, group memguard" \
		expect "srw-rw---- root memguard" ct stat -c '%A %U %G' /run/memguard/memguardd.sock
	needed check "memguardctl status: cache-demo from /etc/memguard.conf, budget 256M, no client" \
		status_is 's["budget_bytes"] == 256 << 20 and s["clients"] == 0 and s["cgroup"] == "system.slice/cache-demo.service"'

	# Socket activation: the daemon stopped, the socket left listening.
	check "systemctl stop memguardd" ct systemctl stop memguardd.service
	check "memguardd.service is inactive, memguardd.socket still listening" \
		expect $'inactive\nactive' ct systemctl is-active memguardd.service memguardd.socket
	check "memguardctl status starts memguardd through memguardd.socket" \
		status_is 'd["daemon"]["services"] == 1'
	check "memguardd.service is active again (socket activation)" \
		poll 10 expect active ct systemctl is-active memguardd.service

	# A service that links libmemguard-client.
	needed check "systemctl start cache-demo" ct systemctl start cache-demo
	needed check "cache-demo registers: memguardctl status shows 1 client, budget 256M" \
		poll 20 status_is 's["clients"] == 1 and s["budget_bytes"] == 256 << 20'
	check "systemctl status shows the daemon's status line (StatusText)" \
		poll 10 expect "1 services, 1 clients; worst: cache-demo NORMAL" prop memguardd StatusText
	check "memguardctl clients: cache-service of cache-demo, as its dynamic user (not root)" \
		client_is 'c["service"] == "cache-demo" and c["process"] == "cache-service" and c["uid"] != 0'
	check "the client logged its registration and budget (journalctl -u cache-demo)" \
		poll 5 ct sh -c "journalctl -u cache-demo --no-pager | grep \"service 'cache-demo' (budget 268435456 bytes)\""
	json=$(ct memguardctl status --json 2>/dev/null || true)
	say "cache-demo as memguardd sees it: $(py '
import json, sys
s = [v for v in json.loads(sys.argv[1])["services"] if v["name"] == "cache-demo"][0]
print("working set %d bytes, psi_mode %s, level %s" % (s["working_set_bytes"], s["psi_mode"], s["level"]))
' "$json" 2>&1)"

	# The journal's structured fields.
	check "memguardctl release cache-demo" ct memguardctl release cache-demo
	check "journal: SERVICE=cache-demo LEVEL= UTILIZATION= ACTION=release" \
		poll 10 journal_has 'e.get("SERVICE") == "cache-demo" and e.get("ACTION") == "release" and e.get("LEVEL") in ("NORMAL", "WARN", "CRITICAL", "EMERGENCY") and float(e.get("UTILIZATION", "x")) >= 0'
	check "journal: the registration (ACTION=register, SERVICE=cache-demo)" \
		poll 10 journal_has 'e.get("SERVICE") == "cache-demo" and e.get("ACTION") == "register" and "cache-service" in e.get("MESSAGE", "")'
	check "journal: the client takes its directives on the service's board (memfd and pipe under the unit's sandbox)" \
		poll 10 journal_has 'e.get("SERVICE") == "cache-demo" and e.get("ACTION") == "register" and "cache-service" in e.get("MESSAGE", "") and "on the service\x27s board" in e.get("MESSAGE", "")'
	check "journal: the client answered (ACTION=released, SERVICE=cache-demo)" \
		poll 10 journal_has 'e.get("SERVICE") == "cache-demo" and e.get("ACTION") == "released" and "released" in e.get("MESSAGE", "")'

	# Reload: a changed budget applies, a broken file is refused.
	pid=$(prop memguardd MainPID)
	check "/etc/memguard.conf: budget of cache-demo 256M -> 128M" set_budget 256M 128M
	mark
	check "systemctl reload memguardd" ct systemctl reload memguardd
	check "journal: reloaded" poll 10 journal_has '"Reloaded /etc/memguard.conf: 1 services" in e.get("MESSAGE", "")'
	check "the new budget applies (128M), same client" \
		poll 10 status_is 's["budget_bytes"] == 128 << 20 and s["clients"] == 1'
	check "reload kept the daemon (same MainPID)" expect "$pid" prop memguardd MainPID
	check "/etc/memguard.conf: a broken budget" set_budget 128M lots
	mark
	check "systemctl reload memguardd (broken file)" ct systemctl reload memguardd
	check "journal: the broken file is refused with its /etc/memguard.conf:LINE" \
		poll 10 journal_has '"/etc/memguard.conf:" in e.get("MESSAGE", "") and "lots" in e.get("MESSAGE", "")'
	check "the running configuration stays (128M), the daemon too" \
		status_is 's["budget_bytes"] == 128 << 20 and s["clients"] == 1'
	check "memguardd is active, same MainPID" expect "active $pid" props memguardd ActiveState MainPID
	check "/etc/memguard.conf mended" set_budget lots 128M
	mark
	check "systemctl reload memguardd (mended file)" ct systemctl reload memguardd
	check "journal: reloaded" poll 10 journal_has '"Reloaded /etc/memguard.conf: 1 services" in e.get("MESSAGE", "")'

	# Restart after a crash.
	check "systemctl kill -s KILL memguardd" ct systemctl kill -s KILL --kill-who=main memguardd
	check "systemd restarts it (new MainPID, NRestarts=1)" poll 15 restarted "$pid"
	check "cache-demo registers again with the restarted daemon, budget 128M" \
		poll 20 status_is 's["clients"] == 1 and s["budget_bytes"] == 128 << 20'

	# Stop: clean, and the service goes on without the daemon.
	check "systemctl stop memguardd.socket memguardd" \
		ct systemctl stop memguardd.socket memguardd.service
	check "memguardd stopped cleanly (Result=success, status 0)" stopped_clean memguardd.service
	check "memguardd.socket is inactive" expect inactive ct systemctl is-active memguardd.socket
	check "the socket file is removed (RemoveOnStop=)" ct test ! -e /run/memguard/memguardd.sock
	check "journal: memguardd logged no error since the mended reload" \
		expect "" ct journalctl --after-cursor="$mark" SYSLOG_IDENTIFIER=memguardd -p err --no-pager -q
	sleep 2
	check "cache-demo keeps running without memguardd" expect active ct systemctl is-active cache-demo
	check "systemctl stop cache-demo" ct systemctl stop cache-demo
	check "cache-demo stopped cleanly (Result=success, status 0)" stopped_clean cache-demo.service
}

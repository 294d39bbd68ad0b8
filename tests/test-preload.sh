#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Real programs on libmemguard-malloc.so: python3 with threads, lua5.4 and
# sqlite3, each doing real allocation-heavy work, and programs that fork
# while threads of theirs allocate: fork() without exec (the children
# allocate, start threads, fork again), fork() + exec, vfork(), posix_spawn(),
# bash pipelines and subshells, python's os.fork() and subprocess.  Their
# output under LD_PRELOAD must be exactly their output without it, within a
# time limit (a hang fails), and the heap they ran on must be ours (python
# asks it for its statistics).  With memguardd at hand (MEMGUARDD, a socket
# of its own on this machine's cgroups, no configured service: each
# client's cgroup is one), each also runs with the preload library
# registering it (MEMGUARD_SOCKET, at once: MEMGUARD_REGISTER_DELAY_MS=0),
# and a child that forks without exec must register as a client of its
# own.  Then what a program may assume of libc alone (tests/preload-invisible:
# the process ends with its last thread, fds from 3, errno kept), and that
# short-lived processes never register.
set -euo pipefail

lib=${MG_PRELOAD_LIB:-$PWD/client/.libs/libmemguard-malloc.so}
[ -e "$lib" ] || { echo "SKIP: $lib not built"; exit 77; }
# (ldd's output read whole: 'grep -q' closing the pipe early would make
# ldd fail under pipefail, and the check with it.)
deps=$(ldd "$lib" 2>/dev/null || true)
if grep -q 'libasan' <<<"$deps"; then
	# ASan replaces malloc itself and insists on being first; a preloaded
	# malloc cannot run under it.  The allocator is covered by test-alloc.
	echo "SKIP: sanitizer build: ASan and an LD_PRELOADed malloc do not mix"
	exit 77
fi

limit=${MG_PRELOAD_TIMEOUT:-120}        # seconds one program may take
daemon_exe=${MEMGUARDD:-$PWD/daemon/memguardd}
ctl=${MEMGUARDCTL:-$(dirname "$daemon_exe")/../client/memguardctl}
forker=${MG_PRELOAD_FORK:-$PWD/tests/preload-fork}
invisible=${MG_PRELOAD_INVISIBLE:-$PWD/tests/preload-invisible}

tmp=$(mktemp -d)
daemon_pid=
cleanup() {
	if [ -n "$daemon_pid" ]; then
		kill "$daemon_pid" 2>/dev/null || true
		wait "$daemon_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
ran=0
failed=0
sock=                                   # memguardd's, when it runs

# run OUT CMD...: CMD with its output in OUT, bounded by $limit; its status
# (124 or 137 when it had to be stopped).
run() {
	local out=$1; shift
	timeout -k 5 "$limit" "$@" >"$out" 2>&1
}

# compare NAME CMD...: run with and without the library (and with it
# registering the program, when memguardd runs), diff the output.
compare() {
	local name=$1 rc=0 mode; shift
	run "$tmp/$name.plain" "$@" || rc=$?
	if [ "$rc" != 0 ]; then
		echo "FAIL $name: fails even without the library (status $rc):"
		tail -n 20 "$tmp/$name.plain"
		failed=1; return
	fi
	for mode in preload register; do
		[ "$mode" = register ] && [ -z "$sock" ] && continue
		rc=0
		if [ "$mode" = register ]; then
			# Registered from the start, so that even short
			# programs fork and exit as clients.
			run "$tmp/$name.$mode" env LD_PRELOAD="$lib" MEMGUARD_SOCKET="$sock" \
				MEMGUARD_REGISTER_DELAY_MS=0 "$@" || rc=$?
		else
			run "$tmp/$name.$mode" env LD_PRELOAD="$lib" "$@" || rc=$?
		fi
		case $rc in
		0) ;;
		124|137)
			echo "FAIL $name: hangs under LD_PRELOAD ($mode): stopped after ${limit}s"
			tail -n 20 "$tmp/$name.$mode"; failed=1; return ;;
		*)
			echo "FAIL $name: fails under LD_PRELOAD ($mode, status $rc):"
			tail -n 20 "$tmp/$name.$mode"; failed=1; return ;;
		esac
		if ! diff -u "$tmp/$name.plain" "$tmp/$name.$mode"; then
			echo "FAIL $name: output differs under LD_PRELOAD ($mode)"
			failed=1; return
		fi
	done
	echo "ok   $name ($(wc -l <"$tmp/$name.plain") lines identical${sock:+, also registered})"
	ran=$((ran + 1))
}

# The pids memguardd lists as clients, one a line.
client_pids() {
	"$ctl" --socket "$sock" --timeout 2 clients 2>/dev/null | awk 'NR > 1 { print $1 }'
}

# memguardd on its own socket, no service configured: each client's own
# cgroup is a service.  $sock stays empty when it cannot serve us.
start_daemon() {
	if [ ! -x "$daemon_exe" ] || [ ! -x "$ctl" ]; then
		echo "note: no memguardd or memguardctl built: programs do not register"
		return
	fi
	: >"$tmp/memguard.conf"
	# (debug: the log shows each connection, which the check that
	# short-lived processes do not register counts)
	"$daemon_exe" --config "$tmp/memguard.conf" --socket "$tmp/memguardd.sock" \
		--log-level debug 2>"$tmp/memguardd.log" &
	daemon_pid=$!
	for _ in $(seq 100); do
		[ -S "$tmp/memguardd.sock" ] && break
		sleep 0.05
	done
	sock=$tmp/memguardd.sock
	# Can a process of ours register at all (a cgroup the daemon can
	# watch)?  A program that sleeps a little tells, once its delay has
	# passed.  (The list read whole, as ldd's above.)
	env LD_PRELOAD="$lib" MEMGUARD_SOCKET="$sock" MEMGUARD_REGISTER_DELAY_MS=500 sleep 8 &
	local probe=$! pids=
	for _ in $(seq 100); do
		pids=$(client_pids)
		grep -qx "$probe" <<<"$pids" && break
		sleep 0.05
	done
	if ! grep -qx "$probe" <<<"$pids"; then
		echo "note: memguardd does not register processes here; see its log:"
		tail -n 5 "$tmp/memguardd.log"
		sock=
	fi
	kill "$probe" 2>/dev/null || true
	wait "$probe" 2>/dev/null || true
}
start_daemon

python=""
for p in /usr/bin/python3 "$(command -v python3 || true)"; do
	[ -n "$p" ] && [ -x "$p" ] && { python=$p; break; }
done

if [ -n "$python" ]; then
	cat >"$tmp/work.py" <<'PY'
import hashlib, json, threading, random, re, zlib, collections

def work(seed, out):
    rnd = random.Random(seed)
    d = {}
    for i in range(40000):
        k = "k%d-%s" % (rnd.randrange(5000), "x" * rnd.randrange(40))
        d[k] = [rnd.random() for _ in range(rnd.randrange(8))]
        if i % 3 == 0 and d:
            d.pop(next(iter(d)))
    blob = json.dumps(d, sort_keys=True).encode()
    words = collections.Counter(re.findall(rb"k\d+", blob))
    big = [rnd.randbytes(rnd.randrange(1, 2000000)) for _ in range(20)]
    out[seed] = (len(d), hashlib.sha256(blob).hexdigest()[:16],
                 len(zlib.compress(blob)), words.most_common(3),
                 sum(len(b) for b in big))

out = {}
threads = [threading.Thread(target=work, args=(s, out)) for s in range(8)]
for t in threads: t.start()
for t in threads: t.join()
for s in sorted(out): print(s, out[s])
PY
	compare python3-threads "$python" "$tmp/work.py"
	# Proof that the heap under python is ours: it answers for itself.
	LD_PRELOAD=$lib "$python" - <<'PY' || { echo "FAIL python3: mg_heap_stats"; failed=1; }
import ctypes
class S(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in
                ("sys", "inuse", "idle", "released", "metadata")] + [("frag", ctypes.c_double)]
s = S()
ctypes.CDLL(None).mg_heap_stats(ctypes.byref(s))
x = [bytearray(1000) for _ in range(10000)]
t = S()
ctypes.CDLL(None).mg_heap_stats(ctypes.byref(t))
assert s.inuse > 0 and t.inuse >= s.inuse + 10000 * 1000, (s.inuse, t.inuse)
assert t.sys == t.inuse + t.idle + t.released
print("ok   python3 runs on the memguard heap: in use %d KiB, sys %d KiB" % (t.inuse >> 10, t.sys >> 10))
PY
else
	echo "skip python3: not installed"
fi

if command -v lua5.4 >/dev/null 2>&1; then
	cat >"$tmp/work.lua" <<'LUA'
local t, acc = {}, 0
for i = 1, 200000 do
	t[i] = string.rep(string.char(65 + i % 26), i % 97) .. tostring(i)
	if i % 5 == 0 then t[i - 3] = nil end
end
collectgarbage()
local parts = {}
for i = 1, 200000, 7 do if t[i] then parts[#parts + 1] = t[i]:sub(1, 5) end end
local s = table.concat(parts, ",")
for w in s:gmatch("[A-Z]+") do acc = (acc * 31 + #w) % 1000000007 end
local m = {}
for i = 1, 50000 do m[("key" .. i % 1000)] = (m[("key" .. i % 1000)] or 0) + i end
local keys = {}
for k in pairs(m) do keys[#keys + 1] = k end
table.sort(keys)
print(#s, acc, #keys, keys[1], m[keys[1]], keys[#keys], m[keys[#keys]])
print(collectgarbage("count") > 0)
LUA
	compare lua5.4 lua5.4 "$tmp/work.lua"
else
	echo "skip lua5.4: not installed"
fi

if command -v sqlite3 >/dev/null 2>&1; then
	cat >"$tmp/work.sql" <<'SQL'
PRAGMA cache_size = -20000;
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INT, name TEXT, payload BLOB);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 60000)
INSERT INTO t SELECT x, x % 97, 'name-' || (x * 7919 % 60000), zeroblob(x % 700) FROM c;
CREATE INDEX t_name ON t(name);
SELECT grp, count(*), sum(length(payload)), min(name), max(name) FROM t
	GROUP BY grp ORDER BY grp LIMIT 10;
SELECT count(*) FROM t a JOIN t b ON a.name = b.name WHERE a.grp < 5;
UPDATE t SET payload = zeroblob(900 + id % 13) WHERE id % 3 = 0;
DELETE FROM t WHERE id % 5 = 0;
VACUUM;
SELECT count(*), sum(length(payload)) FROM t;
SELECT group_concat(name, ';') FROM (SELECT name FROM t ORDER BY name LIMIT 20);
SQL
	compare sqlite3 sqlite3 -init /dev/null -batch :memory: ".read $tmp/work.sql"
else
	echo "skip sqlite3: not installed"
fi

# ---- fork(), exec and spawn while threads allocate ---------------------

if [ -x "$forker" ]; then
	compare fork-c "$forker" 80
else
	echo "skip fork-c: $forker not built"
fi

cat >"$tmp/work.sh" <<'SH'
set -eu
jobs=$1
s=""
for i in $(seq 1 300); do s="$s$i,"; done
echo "$s" | tr , '\n' | sort -n | tail -n 3 | md5sum
( t=""; for j in $(seq 1 100); do t="$t$(printf %05d "$j")"; done; echo "subshell ${#t}" )
x=$(for k in $(seq 500); do echo "$k"; done | wc -l)
echo "pipeline $x"
for n in 1 2 3 4 5 6; do
	( y=""; for m in $(seq 800); do y="$y$m"; done; echo "job $n ${#y}" ) >"$jobs.$n" &
done
wait
cat "$jobs".*
SH
compare bash-fork bash "$tmp/work.sh" "$tmp/jobs"

if [ -n "$python" ]; then
	cat >"$tmp/fork.py" <<'PY'
import hashlib, os, random, subprocess, threading

stop = threading.Event()

def churn(seed):
    rnd = random.Random(seed)
    keep = []
    while not stop.wait(0.0005):        # (the GIL: leave the forks a share)
        for _ in range(50):
            keep.append(bytes(rnd.randrange(1, 5000)))
        if len(keep) > 400:
            del keep[:200]

threads = [threading.Thread(target=churn, args=(i,)) for i in range(3)]
for t in threads: t.start()
out = []
for i in range(30):                     # fork() without exec
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        d = {k: str(k * 7919) * (k % 40) for k in range(5000 + i)}
        os.write(w, hashlib.sha256("".join(d.values()).encode()).hexdigest()[:16].encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    out.append(("fork", i, data.decode(), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
for i in range(15):                     # fork() + exec
    p = subprocess.run(["/bin/sh", "-c", "echo %d | tr 0-9 a-j" % (i * 7919)],
                       capture_output=True, text=True, check=True)
    out.append(("subprocess", i, p.stdout.strip()))
for i in range(15):                     # posix_spawn()
    r, w = os.pipe()
    pid = os.posix_spawn("/bin/echo", ["echo", "spawned", str(i)], dict(os.environ),
                         file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r)])
    os.close(w)
    data = os.read(r, 100)
    os.close(r)
    out.append(("spawn", data.decode().strip(), os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])))
stop.set()
for t in threads: t.join()
for x in out: print(x)
PY
	compare python3-fork "$python" "$tmp/fork.py"
fi

# A child that forks and never execs, in a program that never calls the
# client library: it must come back as a client of its own (the
# allocator's slow path stands in for the library call it never makes).
if [ -n "$sock" ] && [ -n "$python" ]; then
	cat >"$tmp/forkreg.py" <<'PY'
import os, sys, time
done = sys.argv[1]
pid = os.fork()
if pid == 0:
    keep = [bytes(3000 + i % 500) for i in range(20000)]
    start = time.monotonic()
    while not os.path.exists(done) and time.monotonic() - start < 60:
        time.sleep(0.02)
    os._exit(0 if len(keep) == 20000 else 1)
print(os.getpid(), pid, flush=True)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
PY
	# (A short delay: the child's comes again from its fork.)
	timeout -k 5 "$limit" env LD_PRELOAD="$lib" MEMGUARD_SOCKET="$sock" \
		MEMGUARD_REGISTER_DELAY_MS=500 \
		"$python" "$tmp/forkreg.py" "$tmp/forkreg.done" >"$tmp/forkreg.out" 2>&1 &
	job=$!
	for _ in $(seq 100); do
		[ -s "$tmp/forkreg.out" ] && break
		sleep 0.05
	done
	read -r parent child <"$tmp/forkreg.out" || true
	t0=$(date +%s%N)
	registered=
	for _ in $(seq 100); do
		pids=$(client_pids)
		if grep -qx "${child:-none}" <<<"$pids" && grep -qx "$parent" <<<"$pids"; then
			registered=$((($(date +%s%N) - t0) / 1000000))
			break
		fi
		sleep 0.05
	done
	touch "$tmp/forkreg.done"
	rc=0
	wait "$job" || rc=$?
	if [ -z "$registered" ]; then
		echo "FAIL fork-register: the forked child ${child:-?} of ${parent:-?} is not" \
			"among memguardd's clients after 5 s:"
		client_pids | sed 's/^/  /'
		cat "$tmp/forkreg.out"
		failed=1
	elif [ "$rc" != 0 ]; then
		echo "FAIL fork-register: the program failed (status $rc)"
		cat "$tmp/forkreg.out"
		failed=1
	else
		echo "ok   fork-register: a child that never execs registered as client" \
			"$child (its parent $parent) within ${registered} ms of our first look"
		ran=$((ran + 1))
	fi
else
	echo "skip fork-register: needs python3 and a memguardd that registers us"
fi

# ---- what a program may assume of libc alone -----------------------------

if [ -x "$invisible" ]; then
	compare invisible-lone "$invisible" lone
	compare invisible-fds "$invisible" fds
	compare invisible-errno "$invisible" errno
else
	echo "skip invisible: $invisible not built"
fi

if [ -x "$invisible" ] && [ -n "$sock" ]; then
	# The default delay: the library's thread is still waiting in the
	# children when their program ends.
	rc=0
	run "$tmp/lone-delay" env LD_PRELOAD="$lib" MEMGUARD_SOCKET="$sock" "$invisible" lone ||
		rc=$?
	if [ "$rc" = 0 ]; then
		echo "ok   invisible-lone with the default delay"
		ran=$((ran + 1))
	else
		echo "FAIL invisible-lone with the default delay (status $rc):"
		cat "$tmp/lone-delay"; failed=1
	fi
	# Once the library has connected, its descriptors are all above the
	# program's.
	rc=0
	run "$tmp/fds-registered" env LD_PRELOAD="$lib" MEMGUARD_SOCKET="$sock" \
		"$invisible" fds REGISTERED || rc=$?
	if [ "$rc" = 0 ]; then
		sed 's/^ok   /ok   registered: /' "$tmp/fds-registered"
		ran=$((ran + 1))
	else
		echo "FAIL invisible-fds once registered (status $rc):"
		cat "$tmp/fds-registered"; failed=1
	fi

	# Short-lived processes (a shell script's, a make's) never register:
	# none of them connects to the daemon, whose log shows each
	# connection.  (The default delay: these end within milliseconds,
	# and a busy machine must not make one of them live past it.)
	sleep 1.5                       # (the processes above have said BYE)
	before=$(grep -c ' connected (pid ' "$tmp/memguardd.log" || true)
	short=(env LD_PRELOAD="$lib" MEMGUARD_SOCKET="$sock")
	for i in $(seq 20); do
		"${short[@]}" /bin/true
		"${short[@]}" sh -c 'ls / >/dev/null; echo $$ >/dev/null'
		"${short[@]}" bash -c '(true) | cat >/dev/null'
	done
	sleep 1.5                       # (a late connection would show by now)
	after=$(grep -c ' connected (pid ' "$tmp/memguardd.log" || true)
	if [ "$after" = "$before" ]; then
		echo "ok   short-lived: 60 processes under the preload, none connected"
		ran=$((ran + 1))
	else
		echo "FAIL short-lived: $((after - before)) of 60 short-lived processes connected:"
		tail -n 5 "$tmp/memguardd.log"; failed=1
	fi

	# memguardctl is an admin tool (its ELF note says so): under the
	# preload, with the socket in MEMGUARD_SOCKET as an admin's shell has
	# it, it must never become a client, even with no delay.
	env LD_PRELOAD="$lib" MEMGUARD_SOCKET="$sock" MEMGUARD_REGISTER_DELAY_MS=0 \
		"$ctl" status --watch=0.2 >/dev/null 2>&1 </dev/null &
	ctl_pid=$!
	ctl_seen=
	for _ in $(seq 20); do
		sleep 0.1
		grep -qx "$ctl_pid" <<<"$(client_pids)" && ctl_seen=1 && break
	done
	kill "$ctl_pid" 2>/dev/null || true
	wait "$ctl_pid" 2>/dev/null || true
	if [ -z "$ctl_seen" ]; then
		echo "ok   memguardctl under the preload, MEMGUARD_SOCKET set: not a client"
		ran=$((ran + 1))
	else
		echo "FAIL memguardctl under the preload registered as a client (pid $ctl_pid)"
		failed=1
	fi
fi

[ "$failed" = 0 ] || exit 1
if [ "$ran" = 0 ]; then
	echo "SKIP: none of python3, lua5.4, sqlite3, bash, tests/preload-fork could run"
	exit 77
fi
echo "$ran passed, 0 failed"

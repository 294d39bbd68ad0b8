#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Real programs on libmemguard-malloc.so: python3 with threads, lua5.4 and
# sqlite3, each doing real allocation-heavy work.  Their output under
# LD_PRELOAD must be exactly their output without it, and the heap they
# ran on must be ours (python asks it for its statistics).
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

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ran=0
failed=0

# compare NAME CMD...: run with and without the library, diff the output.
compare() {
	local name=$1; shift
	if ! "$@" >"$tmp/$name.plain" 2>&1; then
		echo "FAIL $name: fails even without the library:"; cat "$tmp/$name.plain"
		failed=1; return
	fi
	if ! LD_PRELOAD=$lib "$@" >"$tmp/$name.mg" 2>&1; then
		echo "FAIL $name: fails under LD_PRELOAD:"; tail -n 20 "$tmp/$name.mg"
		failed=1; return
	fi
	if ! diff -u "$tmp/$name.plain" "$tmp/$name.mg"; then
		echo "FAIL $name: output differs under LD_PRELOAD"
		failed=1; return
	fi
	echo "ok   $name ($(wc -l <"$tmp/$name.plain") lines identical)"
	ran=$((ran + 1))
}

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

[ "$failed" = 0 ] || exit 1
if [ "$ran" = 0 ]; then
	echo "SKIP: none of python3, lua5.4, sqlite3 is installed"
	exit 77
fi
echo "$ran passed, 0 failed"

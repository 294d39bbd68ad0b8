# SPDX-License-Identifier: MIT
# tests/system/lib.sh: sourced by tests/system/run and tests/vm/run.
# The Debian root both of them boot, made once by debootstrap and cached as a
# pristine tarball, and the mirror it comes from; the tree installed into it
# as a distribution package would be (mg_install_tree).
#
# Variables it sets: mg_suite, mg_include, mg_mirror; mg_debian_root sets
# mg_root_tar (the cached tarball), mg_why (why it could not be made) and,
# while debootstrap runs, mg_bootstrap (its directory, for the caller's
# cleanup to remove when interrupted: mg_remove_bootstrap).
#
# Environment: MG_SYSTEM_MIRROR overrides the mirror, which is otherwise
# the first Debian archive in this host's own apt sources (deb822 files in
# /etc/apt/sources.list.d/, then /etc/apt/sources.list), so that no mirror
# is written in the tree.

mg_suite=bookworm
# udev: the VM's console and disks need it (nspawn skips it, /sys being
# read-only there); kmod: modprobe for systemd's modprobe@ units; python3: the
# tests read memguardctl's JSON with it, and the outcome experiment is Python.
mg_include=systemd,systemd-sysv,dbus,libinih1,libcgroup2,procps,udev,kmod,python3

# The first URI of a 'deb' source whose suites hold $mg_suite (not its
# -security or -updates), from this host's apt configuration.
mg_host_mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		# deb822: paragraphs of "Field: value" lines.
		awk -v suite="$mg_suite" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uri != "")
					{ print uri; found = 1; exit }
				types = suites = uri = ""
			}
			/^[ \t]*$/ { flush(); next }
			/^#/ { next }
			tolower($1) == "types:" { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
			tolower($1) == "suites:" { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
			tolower($1) == "uris:" { uri = $2 }
			END { if (!found) flush() }' "$f"
	done | head -n 1 | grep . && return 0
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		# deb [options] URI SUITE COMPONENT...
		awk -v suite="$mg_suite" '
			$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == suite) { print $i; exit } }' "$f"
	done | head -n 1 | grep .
}

mg_mirror=${MG_SYSTEM_MIRROR:-$(mg_host_mirror || true)}
mg_mirror=${mg_mirror%/}

# mg_debian_root CACHEDIR: $mg_root_tar, the cached root for this suite,
# package list and mirror (the key is a hash of them), made under a lock and
# renamed into place so that concurrent runs do not race.
mg_debian_root() {
	local cachedir=$1 key rc=0
	if [ -z "$mg_mirror" ]; then
		mg_why="no Debian mirror for $mg_suite in this host's apt sources; set MG_SYSTEM_MIRROR"
		return 1
	fi
	key=$(printf '%s\n' 1 minbase "$mg_suite" "$mg_include" "$mg_mirror" | sha256sum | cut -c1-12)
	mg_root_tar=$cachedir/$mg_suite-$key.tar
	[ -s "$mg_root_tar" ] && return 0
	mkdir -p "$cachedir"
	exec 9>"$mg_root_tar.lock"
	flock 9
	if [ ! -s "$mg_root_tar" ]; then
		printf '# debootstrap %s (%s) from %s: a few minutes, once\n' \
			"$mg_suite" "$mg_include" "$mg_mirror"
		mg_bootstrap=$(mktemp -d "$cachedir/bootstrap.XXXXXX")
		# --foreground: Ctrl-C reaches debootstrap.
		if timeout --foreground -k 10 1200 debootstrap --variant=minbase \
			--include="$mg_include" "$mg_suite" "$mg_bootstrap/root" "$mg_mirror" \
			>"$cachedir/debootstrap.log" 2>&1 </dev/null; then
			rm -f "$mg_bootstrap"/root/var/cache/apt/archives/*.deb
			# debootstrap may leave its target's /proc and /sys mounted.
			tar --one-file-system -C "$mg_bootstrap/root" -cf "$mg_bootstrap/root.tar" . &&
				mv "$mg_bootstrap/root.tar" "$mg_root_tar" || rc=2
		else
			rc=$?
			tail -n 15 "$cachedir/debootstrap.log" | sed 's/^/#   /'
		fi
		mg_remove_bootstrap
	fi
	exec 9>&-
	[ "$rc" = 0 ] && return 0
	mg_why="debootstrap $mg_suite from $mg_mirror failed (log: $cachedir/debootstrap.log)"
	return 1
}

# Remove debootstrap's directory, after what it mounted there (/proc, /sys).
mg_remove_bootstrap() {
	local m
	[ -n "${mg_bootstrap:-}" ] && [ -d "$mg_bootstrap" ] || return 0
	while read -r m; do
		umount -l "$m" 2>/dev/null
	done < <(findmnt -rn -o TARGET | awk -v p="$mg_bootstrap/" 'index($0, p) == 1' | sort -r)
	rm -rf --one-file-system "$mg_bootstrap"
	mg_bootstrap=
}

# --- the tree, installed as a distribution package would be ---------------

# systemd's directory VAR (pkg-config systemd), or DEFAULT.
mg_systemd_dir() {
	local d
	d=$(pkg-config --variable="$1" systemd 2>/dev/null || true)
	echo "${d:-$2}"
}

# mg_install_tree SRCDIR PKGBUILD DESTDIR LOGDIR: configure SRCDIR in
# PKGBUILD (once) like a distribution package, build it, 'make install
# DESTDIR=', compile the cache-service example from its installed source
# against the installed library (pkg-config), and add the cache-demo
# service that runs it: a [cache-demo] section of /etc/memguard.conf (budget
# 256M) and cache-demo.service, as a dynamic user in group memguard.
# Under a lock: two runs may share PKGBUILD.  Logs in LOGDIR; on failure
# the end of the log is printed, mg_why says what failed, and it returns 1.
mg_install_tree() {
	local srcdir=$1 pkgbuild=$2 dest=$3 logs=$4 multiarch rc=0
	multiarch=$(cc -print-multiarch 2>/dev/null || true)
	mkdir -p "$pkgbuild" "$logs"
	exec 8>"$pkgbuild.lock"
	flock 8
	mg_install_tree_locked || rc=$?
	exec 8>&-
	return "$rc"
}

# The work of mg_install_tree, with its locals.
mg_install_tree_locked() {
	local example pcdir
	if [ ! -f "$pkgbuild/Makefile" ]; then
		printf '# configure %s (--prefix=/usr --sysconfdir=/etc)\n' "$pkgbuild"
		if ! (cd "$pkgbuild" && "$srcdir/configure" --prefix=/usr --sysconfdir=/etc \
			--localstatedir=/var --libdir="/usr/lib${multiarch:+/$multiarch}" \
			--with-systemdsystemunitdir="$(mg_systemd_dir systemdsystemunitdir /lib/systemd/system)" \
			--with-sysusersdir="$(mg_systemd_dir sysusersdir /usr/lib/sysusers.d)" \
			--with-tmpfilesdir="$(mg_systemd_dir tmpfilesdir /usr/lib/tmpfiles.d)") \
			>"$logs/configure.log" 2>&1; then
			tail -n 20 "$logs/configure.log"
			rm -f "$pkgbuild/Makefile"
			mg_why="configure failed (log: $logs/configure.log)"
			return 1
		fi
	fi
	# A make of its own, not a job of a make that may be running us.
	if ! { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$pkgbuild" -j2 &&
		env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$pkgbuild" install DESTDIR="$dest"; } \
		>"$logs/install.log" 2>&1; then
		tail -n 30 "$logs/install.log"
		mg_why="make or make install DESTDIR=$dest failed (log: $logs/install.log)"
		return 1
	fi
	# The example, built as its source says, against the installed copy.
	example=$dest/usr/share/doc/memguard/examples/cache-service.c
	pcdir=$dest/usr/lib${multiarch:+/$multiarch}/pkgconfig
	mkdir -p "$dest/usr/local/bin"
	# shellcheck disable=SC2046  # pkg-config's words are separate arguments
	if ! cc -O2 -o "$dest/usr/local/bin/cache-service" "$example" \
		$(PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_LIBDIR=$pcdir pkg-config --cflags --libs libmemguard-client) \
		>"$logs/example.log" 2>&1; then
		cat "$logs/example.log"
		mg_why="cannot build $example against the installed libmemguard-client"
		return 1
	fi
	cat >>"$dest/etc/memguard.conf" <<'EOF'

# Added by tests/system: the cache-service example as a service.
[cache-demo]
cgroup = system.slice/cache-demo.service
budget = 256M
EOF
	mkdir -p "$dest/etc/systemd/system"
	cat >"$dest/etc/systemd/system/cache-demo.service" <<'EOF'
# Added by tests/system: the cache-service example as a service whose
# user is in group memguard (the socket's group).
[Unit]
Description=cache-service, the memguard example
Wants=memguardd.socket
After=memguardd.socket

[Service]
ExecStart=/usr/local/bin/cache-service --quiet --rate 2000 --cache-mb 16
DynamicUser=yes
SupplementaryGroups=memguard
EOF
}

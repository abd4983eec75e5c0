#!/bin/bash
# `make install` and `make uninstall` (docs/install.md says what goes where and why):
#
#   tools/install.sh install [PART...]    PART: python bin systemd man conf dkms (default: all)
#   tools/install.sh uninstall            removes what the manifest lists, nothing else
#
# Run from the checkout. Settings from the environment (the Makefile passes its variables):
#   DESTDIR     staging root prepended to every path written (packaging); default none
#   PREFIX      /usr/local
#   SBINDIR     $PREFIX/sbin                  iscsid, iscsiadm (wrapper scripts)
#   LIBDIR      $PREFIX/lib                   $LIBDIR/pyiscsi: a venv with the Python package
#   UNITDIR     $PREFIX/lib/systemd/system    iscsid.service, iscsid.socket, iscsi-login.service
#   MANDIR      $PREFIX/share/man             iscsid.8, iscsiadm.8, iscsid.conf.5
#   DATADIR     $PREFIX/share                 $DATADIR/pyiscsi/install-manifest
#   DOCDIR      $PREFIX/share/doc/pyiscsi     iscsid.conf (the example, always)
#   SYSCONFDIR  /etc                          iscsid.conf, only when there is none
#   DKMSDIR     /usr/src                      pyiscsi-VERSION: kernel sources + dkms.conf
#   PYTHON      python3                       the interpreter the venv is made from
#   PIP_FLAGS   extra `pip install` arguments (offline: --no-index --find-links DIR)
#
# The manifest ($DATADIR/pyiscsi/install-manifest) lists every directory this made (`d PATH`),
# file (`f PATH`) and configuration file with its sha256 (`c SHA256 PATH`), paths without DESTDIR
# (a path is the rest of its line: the venv has file names with spaces). Uninstall removes the
# files, the configuration files that are unchanged, then the directories that are empty.
set -euo pipefail
cd "$(dirname "$0")/.."

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
SBINDIR=${SBINDIR:-$PREFIX/sbin}
LIBDIR=${LIBDIR:-$PREFIX/lib}
UNITDIR=${UNITDIR:-$PREFIX/lib/systemd/system}
MANDIR=${MANDIR:-$PREFIX/share/man}
DATADIR=${DATADIR:-$PREFIX/share}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/pyiscsi}
SYSCONFDIR=${SYSCONFDIR:-/etc}
DKMSDIR=${DKMSDIR:-/usr/src}
PYTHON=${PYTHON:-python3}
PIP_FLAGS=${PIP_FLAGS:-}

MANIFEST=$DATADIR/pyiscsi/install-manifest
VENV=$LIBDIR/pyiscsi
ALL_PARTS="python bin systemd man conf dkms"

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "  $*"; }

for v in PREFIX SBINDIR LIBDIR UNITDIR MANDIR DATADIR DOCDIR SYSCONFDIR DKMSDIR; do
	case "${!v}" in /*) ;; *) die "$v must be an absolute path (got '${!v}')" ;; esac
done

version() {
	sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1
}

# ------------------------------------------------------------------------------------- install
record() { echo "$*" >>"$manifest_tmp"; }

# mkdirs DIR: DIR and its missing parents (under DESTDIR), each new one recorded. With DESTDIR,
# only those this machine has not got either: a staged tree is for a machine like this one, and
# uninstalling it there must not take /usr/local/sbin away (a package has its own file list).
mkdirs() {
	local d=$1
	local -a missing=()
	while [ "$d" != / ] && [ ! -d "$DESTDIR$d" ]; do
		missing=("$d" "${missing[@]}")
		d=$(dirname "$d")
	done
	for d in "${missing[@]}"; do
		mkdir -m 0755 "$DESTDIR$d"
		[ -n "$DESTDIR" ] && [ -d "$d" ] || record d "$d"
	done
}

# not_ours PATH: refuse to write over a file this install did not make
not_ours() {
	[ -e "$DESTDIR$1" ] || [ -L "$DESTDIR$1" ] || return 0
	die "$DESTDIR$1 exists and is not from a pyiscsi install (remove it or choose another PREFIX)"
}

# put MODE SRC DEST: install one file
put() {
	not_ours "$3"
	mkdirs "$(dirname "$3")"
	install -m "$1" "$2" "$DESTDIR$3"
	record f "$3"
	say "$3"
}

# put_text MODE DEST: install stdin as DEST
put_text() {
	local tmp
	tmp=$(mktemp)
	cat >"$tmp"
	put "$1" "$tmp" "$2"
	rm -f "$tmp"
}

part_python() {
	# A venv of its own: the dependencies (pyroute2, cryptography, cffi, crc32c) from PyPI at
	# the versions pyproject.toml asks for, whatever the distribution ships; iscsid and iscsiadm
	# run its interpreter isolated (-I: no PYTHONPATH, no user site).
	not_ours "$VENV"
	mkdirs "$VENV"
	"$PYTHON" -m venv "$DESTDIR$VENV" || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
	# pip builds from a copy: nothing (build/, *.egg-info) is written into the checkout; links
	# are followed (pyiscsid/iscsi_if.h is kernel/iscsi_if.h, package data read at run time)
	local stage
	stage=$(mktemp -d)
	tar -c -h --exclude=__pycache__ pyproject.toml bin pyiscsid pyiscsiadm | tar -x -C "$stage"
	# shellcheck disable=SC2086 # PIP_FLAGS is a list of arguments
	if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$DESTDIR$VENV/bin/python" -m pip install -q \
		$PIP_FLAGS "$stage"; then
		rm -rf "$stage"
		die "pip install failed (offline? PIP_FLAGS='--no-index --find-links DIR', docs/install.md)"
	fi
	rm -rf "$stage"
	# pip's own scripts in the venv name the interpreter by its staging path under DESTDIR
	if [ -n "$DESTDIR" ]; then
		grep -rlI --null -F "$DESTDIR$VENV" "$DESTDIR$VENV/bin" "$DESTDIR$VENV/pyvenv.cfg" 2>/dev/null \
			| xargs -0 -r sed -i "s|$DESTDIR$VENV|$VENV|g"
	fi
	(cd "$DESTDIR$VENV" && find . -mindepth 1 \( -type d -printf 'd %P\n' -o -printf 'f %P\n' \)) |
		sed "s|^\(.\) |\1 $VENV/|" >>"$manifest_tmp"
	say "$VENV (venv: $(find "$DESTDIR$VENV" -type f | wc -l) files)"
}

part_bin() {
	local py="#!$VENV/bin/python3 -IB"
	# iscsiadm: bin/iscsiadm itself (tools such as os-brick grep this file for the node
	# settings it names), with the venv's interpreter on its first line
	sed "1s|^#!.*|$py|" bin/iscsiadm | put_text 0755 "$SBINDIR/iscsiadm"
	put_text 0755 "$SBINDIR/iscsid" <<EOF
$py
"""iscsid: pyiscsi's iSCSI initiator daemon (installed by pyiscsi's \`make install\`)."""

import sys

from pyiscsid.daemon import main

if __name__ == "__main__":
    sys.exit(main())
EOF
}

part_systemd() {
	local unit
	for unit in systemd/*; do
		case "$unit" in
		*.in) sed "s|@SBINDIR@|$SBINDIR|g" "$unit" | put_text 0644 "$UNITDIR/$(basename "$unit" .in)" ;;
		*) put 0644 "$unit" "$UNITDIR/$(basename "$unit")" ;;
		esac
	done
}

part_man() {
	local page
	for page in man/*.[0-9]; do
		put 0644 "$page" "$MANDIR/man${page##*.}/$(basename "$page")"
	done
}

part_conf() {
	put 0644 etc/iscsid.conf "$DOCDIR/iscsid.conf"
	local conf=$SYSCONFDIR/iscsid.conf
	if [ -e "$DESTDIR$conf" ] || [ -L "$DESTDIR$conf" ]; then
		say "$conf exists: left as it is (the example: $DOCDIR/iscsid.conf)"
		return
	fi
	mkdirs "$SYSCONFDIR"
	install -m 0644 etc/iscsid.conf "$DESTDIR$conf"
	record c "$(sha256sum <"$DESTDIR$conf" | cut -d' ' -f1)" "$conf"
	say "$conf"
}

part_dkms() {
	local ver src f
	ver=$(version)
	src=$DKMSDIR/pyiscsi-$ver
	not_ours "$src"
	for f in kernel/Kbuild kernel/Makefile kernel/*.c kernel/*.h; do
		put 0644 "$f" "$src/$(basename "$f")"
	done
	echo "$ver" | put_text 0644 "$src/VERSION"
	sed "s|@VERSION@|$ver|g" kernel/dkms.conf.in | put_text 0644 "$src/dkms.conf"
}

# reload_systemd: a running systemd rereads its units when they went where it looks for them
reload_systemd() {
	[ -z "$DESTDIR" ] && [ -d /run/systemd/system ] || return 0
	case "$UNITDIR" in /etc/* | /usr/* | /lib/*) systemctl daemon-reload || true ;; esac
}

do_install() {
	local parts=${*:-$ALL_PARTS} p
	for p in $parts; do
		case " $ALL_PARTS " in *" $p "*) ;; *) die "unknown part '$p' (parts: $ALL_PARTS)" ;; esac
	done
	if [ -e "$DESTDIR$MANIFEST" ]; then
		echo "install: removing the previous install first ($DESTDIR$MANIFEST)"
		do_uninstall
	fi
	mkdir -p "$DESTDIR/"
	manifest_tmp=$(mktemp)
	trap 'rc=$?; [ $rc = 0 ] || rollback; rm -f "$manifest_tmp"; exit $rc' EXIT
	echo "install: pyiscsi $(version) into ${DESTDIR:-/} (PREFIX=$PREFIX)"
	for p in $parts; do
		"part_$p"
	done
	mkdirs "$(dirname "$MANIFEST")"
	{
		echo "# pyiscsi $(version) install manifest (tools/install.sh): d DIR, f FILE, c SHA256 FILE"
		echo "v $(version)"
		cat "$manifest_tmp"
		echo "f $MANIFEST"
	} >"$DESTDIR$MANIFEST"
	say "$MANIFEST"
	[[ " $parts " != *" systemd "* ]] || reload_systemd
	case " $parts " in
	*" dkms "*)
		echo "install: done. Kernel modules: dkms install pyiscsi/$(version) (docs/install.md)" ;;
	*) echo "install: done" ;;
	esac
}

# ----------------------------------------------------------------------------------- uninstall
# remove_listed MANIFEST_COPY: the files, the unchanged configuration files, then the empty
# directories (deepest first); 1 if a directory had to be left. A few processes in all, not one
# per file: the venv has thousands of files, and a fork costs a lot under emulation.
remove_listed() {
	local type path sum left=0
	sed -n 's/^f //p' "$1" | sed "s|^|$DESTDIR|" | tr '\n' '\0' | xargs -0 -r rm -f --
	while read -r type path; do
		[ "$type" = c ] || continue
		read -r sum path <<<"$path"
		if [ -f "$DESTDIR$path" ] && [ "$(sha256sum <"$DESTDIR$path" | cut -d' ' -f1)" = "$sum" ]; then
			rm -f "$DESTDIR$path"
			say "$path"
		elif [ -e "$DESTDIR$path" ]; then
			say "$path was changed since the install: left as it is"
		fi
	done <"$1"
	sed -n 's/^d //p' "$1" | tac | sed "s|^|$DESTDIR|" | tr '\n' '\0' |
		xargs -0 -r rmdir --ignore-fail-on-non-empty --
	while read -r path; do
		if [ -d "$DESTDIR$path" ]; then
			say "$path: not empty, left (it holds files that are not from the install)"
			left=1
		fi
	done < <(sed -n 's/^d //p' "$1")
	return $left
}

# rollback: an install that failed half-way takes back what it made (the venv as a whole: its
# files are listed only once pip is done)
rollback() {
	echo "install: failed; removing what this run installed" >&2
	if grep -qx "d $VENV" "$manifest_tmp"; then rm -rf "${DESTDIR:?}$VENV"; fi
	remove_listed "$manifest_tmp" >/dev/null || true
}

do_uninstall() {
	local m=$DESTDIR$MANIFEST ver copy rc=0
	[ -f "$m" ] || die "no install manifest at $m (nothing installed with this DESTDIR/PREFIX)"
	ver=$(sed -n 's/^v //p' "$m")
	if [ -z "$DESTDIR" ] && [ -n "$ver" ] && command -v dkms >/dev/null &&
		[ -n "$(dkms status "pyiscsi/$ver" 2>/dev/null)" ]; then
		die "DKMS still has pyiscsi/$ver (its modules are built from $DKMSDIR/pyiscsi-$ver): run
    dkms remove pyiscsi/$ver --all
first, then make uninstall again"
	fi
	if [ -z "$DESTDIR" ] && [ -d /etc/systemd/system ]; then
		local enabled
		enabled=$(find /etc/systemd/system -type l -lname "$UNITDIR/*" 2>/dev/null | tr '\n' ' ')
		[ -z "$enabled" ] || echo "uninstall: units still enabled, disable them: $enabled" >&2
	fi
	echo "uninstall: pyiscsi $ver from ${DESTDIR:-/} (manifest $MANIFEST)"
	copy=$(mktemp)
	cp "$m" "$copy"
	remove_listed "$copy" || rc=1
	rm -f "$copy"
	reload_systemd
	if [ "$rc" = 0 ]; then echo "uninstall: done"; else echo "uninstall: done (directories left)"; fi
}

case "${1:-}" in
install) shift; do_install "$@" ;;
uninstall) do_uninstall ;;
*) sed -n '2,5p' "$0" | sed 's/^# *//' >&2; exit 2 ;;
esac

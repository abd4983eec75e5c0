# Guest-side helpers for scripts run by tests/vm/run-vm. Source it: `. tests/vm/lib.sh`.
# They work under `set -euo pipefail` and stop the script (vm_die, exit 1) when a step fails.
# Everything that writes goes to tmpfs (/tmp, /run, the /etc and /var overlays) or to $VM_OUT.
#
#   lio_ramdisk IQN SIZE_MB [Param=value ...] [portal=IP:PORT] [auth=USER:PASS[:MUSER:MPASS]]
#               [initiator=IQN] [serial=S]
#                                   LIO target over configfs, LUN 0 on a ramdisk (default portal
#                                   127.0.0.1:3260, demo mode; auth= adds a CHAP ACL for
#                                   initiator= (default: the name in /etc/iscsi/initiatorname.iscsi));
#                                   serial= sets the unit serial, which gives the LUN VPD pages
#                                   0x80/0x83 (a WWN: naa.6001405 + the serial's hex digits), as
#                                   targetcli does; without it LIO answers no VPD page at all
#   lio_lun IQN LUN SIZE_MB [serial=S]  one more ramdisk LUN in a lio_ramdisk target (its ACLs too)
#   tgt_file IQN SIZE_MB [portal=IP:PORT] [control=N]
#                                   tgtd target, LUN 1 a file on tmpfs; the first call for a control
#                                   port N (default 0) starts `tgtd -f -C N` on portal= (default
#                                   127.0.0.1:3260), later calls add targets to that tgtd
#   tgt_portal IP:PORT [N]          make tgtd N listen on one more portal
#   tgt_chap IQN USER PASS [out] [N]  require CHAP on a tgtd target (out: the target's own account)
#   tgt_down                        SIGKILL every tgtd (they ignore SIGTERM)
#   openiscsi_up [INITIATOR_NAME]   Debian's iscsid + in-kernel iscsi_tcp, empty node database
#   openiscsi_down                  log out everything, stop iscsid, unload the in-kernel modules
#   pyiscsi_kmod_up [DIR]           load our DIR/iscsi_if.ko + DIR/iscsi_tcp.ko (DIR: kernel) and deps
#   pyiscsi_kmod_down               unload them
#   iscsi_disk IQN [TIMEOUT_S]      print /dev/sdX of the first disk of the session to IQN
#   vm_log MSG                      a timestamped line on stdout
#   files_in_ram TARBALL DIR...     each DIR becomes a tmpfs, then TARBALL (paths relative to /,
#                                   the same DIRs' files) is extracted: the same files, read
#                                   without 9p round trips (kernel headers for a module build: 9p
#                                   lookups took 40% of its time under TCG)

VM_INITIATOR_DEFAULT=iqn.2026-11.test:vm-initiator
VM_TGT_DIR=/run/vm-tgt

vm_log() { printf '[%s] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }
vm_die() { echo "vm: $*" >&2; exit 1; }

# wait_port IP PORT [TIMEOUT_S]: until something listens there
wait_port() {
	local i
	for ((i = 0; i < ${3:-10} * 10; i++)); do
		(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
		sleep 0.1
	done
	vm_die "nothing listens on $1:$2"
}

_configfs() {
	modprobe -a configfs target_core_mod iscsi_target_mod || vm_die "cannot load LIO"
	grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config
	mkdir -p /etc/target
}

lio_ramdisk() {
	local iqn=${1:?lio_ramdisk IQN SIZE_MB [...]} size=${2:?lio_ramdisk IQN SIZE_MB [...]}
	shift 2
	local portal=127.0.0.1:3260 auth="" init="" serial="" kv
	local -a params=()
	for kv in "$@"; do
		case "$kv" in
		portal=*) portal=${kv#*=} ;;
		auth=*) auth=${kv#*=} ;;
		initiator=*) init=${kv#*=} ;;
		serial=*) serial=${kv#*=} ;;
		*=*) params+=("$kv") ;;
		*) vm_die "lio_ramdisk: bad argument $kv (want name=value)" ;;
		esac
	done
	local rd tpg=/sys/kernel/config/target/iscsi/$iqn/tpgt_1
	rd=$(_lio_rd "$size" "$serial") || vm_die "lio_ramdisk: no ramdisk for $iqn"
	mkdir -p "$tpg/lun/lun_0" || vm_die "lio_ramdisk: cannot create $iqn"
	ln -s "$rd" "$tpg/lun/lun_0/${rd##*/}"
	mkdir "$tpg/np/$portal" || vm_die "lio_ramdisk: cannot listen on $portal"
	for kv in "${params[@]}"; do
		[ -e "$tpg/param/${kv%%=*}" ] || vm_die "lio_ramdisk: no such parameter ${kv%%=*}"
		echo "${kv#*=}" >"$tpg/param/${kv%%=*}" || vm_die "lio_ramdisk: cannot set $kv"
	done
	echo 0 >"$tpg/attrib/demo_mode_write_protect"
	if [ -z "$auth" ]; then
		echo 0 >"$tpg/attrib/authentication"
		echo 1 >"$tpg/attrib/generate_node_acls"
		echo 1 >"$tpg/attrib/cache_dynamic_acls"
	else
		[ -n "$init" ] || init=$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi 2>/dev/null)
		[ -n "$init" ] || init=$VM_INITIATOR_DEFAULT
		local acl=$tpg/acls/$init user pass muser mpass
		IFS=: read -r user pass muser mpass <<<"$auth"
		mkdir -p "$acl/lun_0"
		ln -s "$tpg/lun/lun_0" "$acl/lun_0/lun_0"
		echo -n "$user" >"$acl/auth/userid"
		echo -n "$pass" >"$acl/auth/password"
		if [ -n "$muser" ]; then
			echo -n "$muser" >"$acl/auth/userid_mutual"
			echo -n "$mpass" >"$acl/auth/password_mutual"
		fi
		echo 0 >"$tpg/attrib/generate_node_acls"
		echo 1 >"$tpg/attrib/authentication"
	fi
	echo 1 >"$tpg/enable"
	wait_port "${portal%:*}" "${portal##*:}"
}

# _lio_rd SIZE_MB SERIAL: a new enabled ramdisk backstore (SERIAL may be empty); prints its path
_lio_rd() {
	_configfs
	local base=/sys/kernel/config/target/core/rd_mcp_0 n=1
	mkdir -p "$base"
	while [ -e "$base/rd$n" ]; do n=$((n + 1)); done
	mkdir "$base/rd$n" && echo "rd_pages=$(($1 * 256))" >"$base/rd$n/control" \
		&& echo 1 >"$base/rd$n/enable" || vm_die "cannot make the ramdisk rd$n"
	# only before the backstore is exported (linked to a LUN)
	[ -z "$2" ] || echo -n "$2" >"$base/rd$n/wwn/vpd_unit_serial" \
		|| vm_die "cannot set the unit serial $2"
	echo "$base/rd$n"
}

lio_lun() {
	local iqn=${1:?lio_lun IQN LUN SIZE_MB [serial=S]} lun=${2:?lio_lun IQN LUN SIZE_MB} \
		size=${3:?lio_lun IQN LUN SIZE_MB} serial="" rd acl
	case "${4:-}" in
	serial=*) serial=${4#serial=} ;;
	"") ;;
	*) vm_die "lio_lun: bad argument $4 (want serial=S)" ;;
	esac
	local tpg=/sys/kernel/config/target/iscsi/$iqn/tpgt_1
	[ -d "$tpg" ] || vm_die "lio_lun: no LIO target $iqn"
	rd=$(_lio_rd "$size" "$serial") || vm_die "lio_lun: no ramdisk for $iqn LUN $lun"
	mkdir "$tpg/lun/lun_$lun" || vm_die "lio_lun: cannot add LUN $lun to $iqn"
	ln -s "$rd" "$tpg/lun/lun_$lun/${rd##*/}"
	for acl in "$tpg"/acls/*/; do
		[ -d "$acl" ] || continue
		mkdir "${acl}lun_$lun" && ln -s "$tpg/lun/lun_$lun" "${acl}lun_$lun/lun_$lun" \
			|| vm_die "lio_lun: cannot map LUN $lun in ${acl}"
	done
}

# Each tgtd has its own control port (tgtadm -C N) and state in $VM_TGT_DIR/N.
tgt_file() {
	local iqn=${1:?tgt_file IQN SIZE_MB} size=${2:?tgt_file IQN SIZE_MB} portal=127.0.0.1:3260
	shift 2
	local kv ctl=0
	for kv in "$@"; do
		case "$kv" in
		portal=*) portal=${kv#*=} ;;
		control=*) ctl=${kv#*=} ;;
		*) vm_die "tgt_file: bad argument $kv" ;;
		esac
	done
	local dir=$VM_TGT_DIR/$ctl
	mkdir -p "$dir"
	if [ ! -s "$dir/pid" ] || ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
		tgtd -f -C "$ctl" --iscsi "portal=$portal" >"$dir/tgtd.log" 2>&1 &
		echo $! >"$dir/pid"
		disown $!
		wait_port "${portal%:*}" "${portal##*:}"
		local i
		for ((i = 0; i < 100; i++)); do
			tgtadm -C "$ctl" --lld iscsi --mode sys --op show >/dev/null 2>&1 && break
			sleep 0.1
		done
	fi
	local tid=$(($(cat "$dir/tids" 2>/dev/null | wc -l) + 1))
	local img=/tmp/tgt-$ctl-$tid.img
	truncate -s "${size}M" "$img"
	_tgtadm "$ctl" --mode target --op new --tid "$tid" --targetname "$iqn"
	_tgtadm "$ctl" --mode logicalunit --op new --tid "$tid" --lun 1 --backing-store "$img"
	_tgtadm "$ctl" --mode target --op bind --tid "$tid" --initiator-address ALL
	echo "$tid $iqn" >>"$dir/tids"
}

_tgtadm() {
	local ctl=$1
	shift
	tgtadm -C "$ctl" --lld iscsi "$@" || vm_die "tgtadm -C $ctl $*: failed"
}

# tgt_portal IP:PORT [CONTROL]
tgt_portal() {
	_tgtadm "${2:-0}" --mode portal --op new --param "portal=${1:?tgt_portal IP:PORT [CONTROL]}"
	wait_port "${1%:*}" "${1##*:}"
}

# tgt_chap IQN USER PASS [out] [CONTROL]
tgt_chap() {
	local ctl=${5:-0} tid
	tid=$(awk -v q="${1:?tgt_chap IQN USER PASS [out] [CONTROL]}" '$2 == q { print $1 }' \
		"$VM_TGT_DIR/$ctl/tids" 2>/dev/null)
	[ -n "$tid" ] || vm_die "tgt_chap: no tgtd target $1"
	_tgtadm "$ctl" --mode account --op new --user "$2" --password "$3"
	local -a out=()
	[ -n "${4:-}" ] && out=(--outgoing)
	_tgtadm "$ctl" --mode account --op bind --tid "$tid" --user "$2" "${out[@]}"
}

# tgt_down: SIGKILL every tgtd started here
tgt_down() {
	local d
	for d in "$VM_TGT_DIR"/*/; do
		[ -s "$d/pid" ] && kill -KILL "$(cat "$d/pid")" 2>/dev/null
		rm -rf "$d"
	done
	return 0
}

openiscsi_up() {
	local name=${1:-$VM_INITIATOR_DEFAULT}
	rm -rf /etc/iscsi/nodes /etc/iscsi/send_targets /etc/iscsi/ifaces /etc/iscsi/static \
		/etc/iscsi/isns /etc/iscsi/fw /var/lib/iscsi/*
	echo "InitiatorName=$name" >/etc/iscsi/initiatorname.iscsi
	# No systemd in the guest: iscsiadm must not try to start iscsid by itself.
	sed -i 's/^iscsid.startup/# iscsid.startup/' /etc/iscsi/iscsid.conf
	mkdir -p /run/lock/iscsi
	modprobe -a sd_mod iscsi_tcp || vm_die "modprobe iscsi_tcp"
	iscsid || vm_die "iscsid did not start"
	local i rc
	for ((i = 0; i < 100; i++)); do
		rc=0
		iscsiadm -m session >/dev/null 2>&1 || rc=$?
		[ "$rc" != 20 ] && return 0
		sleep 0.1
	done
	vm_die "iscsid does not answer"
}

openiscsi_down() {
	iscsiadm -m node -U all >/dev/null 2>&1 || true
	iscsiadm -k 0 >/dev/null 2>&1 || true
	local i
	for ((i = 0; i < 50; i++)); do
		pidof iscsid >/dev/null || break
		sleep 0.1
	done
	if pidof iscsid >/dev/null; then kill -KILL $(pidof iscsid) 2>/dev/null || true; sleep 0.2; fi
	rm -f /run/iscsid.pid
	local m
	for m in iscsi_tcp libiscsi_tcp libiscsi scsi_transport_iscsi; do
		if grep -q "^$m " /proc/modules; then rmmod "$m" || vm_die "rmmod $m failed"; fi
	done
}

iscsi_disk() {
	local iqn=${1:?iscsi_disk IQN [TIMEOUT_S]} i s d
	# no udev in the guest: nothing loads sd_mod when a disk appears
	grep -q '^sd_mod ' /proc/modules || modprobe sd_mod
	for ((i = 0; i < ${2:-20} * 10; i++)); do
		for s in /sys/class/iscsi_session/session*; do
			[ "$(cat "$s/targetname" 2>/dev/null)" = "$iqn" ] || continue
			for d in "$s"/device/target*/*:*:*:*/block/*; do
				[ -e "$d" ] || continue
				d=/dev/$(basename "$d")
				[ -b "$d" ] && { echo "$d"; return 0; }
			done
		done
		sleep 0.1
	done
	vm_die "no disk for a session to $iqn"
}

pyiscsi_kmod_up() {
	local dir=${1:-kernel} m
	grep -qE '^(iscsi_tcp|scsi_transport_iscsi) ' /proc/modules \
		&& vm_die "the in-kernel iscsi modules are loaded: openiscsi_down first"
	for m in $dir/iscsi_if.ko $dir/iscsi_tcp.ko; do
		[ -f "$m" ] || vm_die "$m not built (make -C /lib/modules/$(uname -r)/build M=$PWD/kernel modules)"
	done
	modprobe -a scsi_mod sd_mod libcrc32c || vm_die "modprobe scsi_mod sd_mod libcrc32c"
	modprobe crc32c 2>/dev/null # digests; built in on some kernels
	insmod $dir/iscsi_if.ko || vm_die "insmod $dir/iscsi_if.ko"
	insmod $dir/iscsi_tcp.ko || vm_die "insmod $dir/iscsi_tcp.ko"
}

pyiscsi_kmod_down() {
	local m
	for m in iscsi_tcp iscsi_if; do
		if grep -q "^$m " /proc/modules; then rmmod "$m" || vm_die "rmmod $m failed"; fi
	done
}

files_in_ram() {
	local tar=${1:?files_in_ram TARBALL DIR...} d
	shift
	for d in "$@"; do
		[ -d "$d" ] || vm_die "files_in_ram: no directory $d"
		mount -t tmpfs -o mode=0755 tmpfs "$d" || vm_die "files_in_ram: cannot mount a tmpfs on $d"
	done
	# 1 MiB reads: a few hundred 9p requests for the tarball instead of one per 10 KiB
	dd if="$tar" bs=1M status=none | tar -C / -xf - || vm_die "files_in_ram: cannot extract $tar"
}

#!/bin/bash
# Guest side of a quick A/B run: one fio workload against an LIO ramdisk, the in-kernel initiator
# and our modules built from several directories, alternating in rounds (one boot). For trying a
# data-path change before the full `make bench`:
#   cp -r kernel /work/main/tests/vm/out/k-try && (edit) && make -C /lib/modules/$KVER/build \
#       M=$PWD/tests/vm/out/k-try PYISCSI_VERSION=try modules   (a copy has no ../pyproject.toml)
#   tests/vm/run-vm --timeout 1200 bench/variants.sh randwrite 4k 32 15 kernel tests/vm/out/k-try
# Arguments: RW BS IODEPTH SECONDS SIDE...; prints "side round read_iops write_iops". A SIDE is
# MODULE_DIR[@CONNS][@PARAM=VALUE...]: CONNS sets node.session.iscsi.MaxConnections (one session,
# that many connections; LIO's TPG allows 8), each PARAM=VALUE is written to
# /sys/module/iscsi_tcp/parameters/PARAM after the modules are loaded (a try build's knob).
set -uo pipefail
cd "${VM_WORK:?run me through tests/vm/run-vm}"
. tests/vm/lib.sh
RW=${1:?RW}; BS=${2:?BS}; QD=${3:?IODEPTH}; RT=${4:?SECONDS}; shift 4
DIRS=("$@")
[ ${#DIRS[@]} -gt 0 ] || DIRS=(kernel)
IQN=iqn.2003-01.org.linux-iscsi.vm:variants
INITIATOR=iqn.2026-11.test:variants
ip link set lo up
lio_ramdisk $IQN 256 portal=127.0.0.1:3260 MaxConnections=8

run_fio() { # SIDE ROUND DISK
	local json="$VM_OUT/${1//\//_}-$2.json" # SIDE names a module dir, maybe with slashes
	fio --name=v --filename="$3" --direct=1 --ioengine=libaio --rw="$RW" --bs="$BS" \
		--iodepth="$QD" --runtime="$RT" --time_based --size=248M --randrepeat=0 \
		--norandommap --output-format=json --output="$json" >/dev/null 2>&1 \
		|| { echo "$1 $2 fio failed"; return 1; }
	python3 -c "import json; j = json.load(open('$json'))['jobs'][0]; \
print('$1 $2 %.0f %.0f' % (j['read']['iops'], j['write']['iops']))"
}

ours() { # SIDE ROUND
	local state=/run/variants i pid disk kv
	local -a parts
	IFS=@ read -ra parts <<<"$1"
	local dir=${parts[0]} conns=1
	rm -rf $state
	mkdir -p $state/db
	echo "InitiatorName=$INITIATOR" >$state/initiatorname.iscsi
	: >$state/iscsid.conf
	export ISCSI_DB_DIR=$state/db ISCSID_SOCKET=$state/iscsid.sock
	export ISCSID_CONFIG=$state/iscsid.conf ISCSI_INITIATORNAME_FILE=$state/initiatorname.iscsi
	pyiscsi_kmod_up "$dir"
	for kv in "${parts[@]:1}"; do
		case "$kv" in
		*=*) echo "${kv#*=}" >"/sys/module/iscsi_tcp/parameters/${kv%%=*}" \
			|| vm_die "cannot set iscsi_tcp parameter $kv" ;;
		*) conns=$kv ;;
		esac
	done
	.venv/bin/iscsid -f >$state/iscsid.log 2>&1 &
	pid=$!
	for ((i = 0; i < 100; i++)); do [ -S $ISCSID_SOCKET ] && break; sleep 0.1; done
	.venv/bin/iscsiadm -m discovery -t st -p 127.0.0.1:3260 >/dev/null
	.venv/bin/iscsiadm -m node -T $IQN -p 127.0.0.1:3260 -o update \
		-n node.session.iscsi.MaxConnections -v "$conns" >/dev/null
	.venv/bin/iscsiadm -m node -T $IQN -p 127.0.0.1:3260 --login >/dev/null
	disk=$(iscsi_disk $IQN)
	for ((i = 0; i < 100; i++)); do
		[ "$(ls -d /sys/class/iscsi_connection/connection* 2>/dev/null | wc -l)" -ge "$conns" ] && break
		sleep 0.1
	done
	run_fio "ours:$1" "$2" "$disk"
	.venv/bin/iscsiadm -m node -U all >/dev/null
	kill $pid
	wait $pid
	pyiscsi_kmod_down
	unset ISCSI_DB_DIR ISCSID_SOCKET ISCSID_CONFIG ISCSI_INITIATORNAME_FILE
}

for round in 1 2; do
	openiscsi_up $INITIATOR
	iscsiadm -m discovery -t st -p 127.0.0.1:3260 >/dev/null
	iscsiadm -m node -T $IQN -p 127.0.0.1:3260 --login >/dev/null
	run_fio inkernel $round "$(iscsi_disk $IQN)"
	openiscsi_down
	for d in "${DIRS[@]}"; do ours "$d" $round; done
done

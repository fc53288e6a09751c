#!/usr/bin/env bash
# conncheck.sh - re-check, against real Linux kernel TIPC, what the survivor of a
# connection sees when its peer closes / shuts down / dies.  See README.md here.
#
# usage: sudo tools/interop/conncheck.sh [--require] [--keep-logs]
#
#   --require    a missing prerequisite (root, /dev/kvm, harness, harness cache)
#                is an error (exit 1) instead of "SKIPPED" (exit 0)
#   --keep-logs  keep the VM's run directory (console.log etc.) in
#                ${TIPCVM_RUN:-/run/tipcvm}/<ns>.last after the run
#
# environment: TIPCVM_HARNESS (default <repo>/../shared/tools/kernel-tipc),
#              TIPCVM_CACHE (the harness build cache, default ~/.cache/tipcshm-kernel-vm),
#              TIPCVM_RUN (the harness run directory base, default /run/tipcvm)
#
# exit status: 0 all cases ran and match the reference (Linux 6.1.192) or SKIPPED,
#              1 error / a case produced no result, 3 a case differs from the reference.
set -euo pipefail

REQUIRE=0
KEEP_LOGS=0
for arg in "$@"; do
	case $arg in
	--require) REQUIRE=1 ;;
	--keep-logs) KEEP_LOGS=1 ;;
	-h | --help)
		sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "unknown argument: $arg (try --help)" >&2
		exit 1
		;;
	esac
done

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
HARNESS=${TIPCVM_HARNESS:-$REPO_ROOT/../shared/tools/kernel-tipc}
BASE_CACHE=${TIPCVM_CACHE:-$HOME/.cache/tipcshm-kernel-vm}
RUN_BASE=${TIPCVM_RUN:-/run/tipcvm}
NS="tipcchk$$"

skip() {
	if [[ $REQUIRE == 1 ]]; then
		echo "ERROR (--require): $*" >&2
		exit 1
	fi
	echo "SKIPPED: $*"
	exit 0
}

# ---------------------------------------------------------------- prerequisites
[[ -e /dev/kvm ]] || skip "/dev/kvm is missing (the kernel-TIPC VM harness needs it)"
[[ -x $HARNESS/tipcvm.py ]] ||
	skip "kernel-TIPC harness not found at $HARNESS (set TIPCVM_HARNESS)"
HARNESS=$(cd "$HARNESS" && pwd)
[[ $(id -u) == 0 ]] ||
	skip "needs root, as the harness does (namespaces, tap devices): sudo $0"
[[ -f $BASE_CACHE/build.env ]] ||
	skip "harness cache $BASE_CACHE is missing: build it once with: sudo $HARNESS/build.sh"
KERNEL=$(sed -n 's/^KERNEL=//p' "$BASE_CACHE/build.env")
INITRD=$(sed -n 's/^INITRD=//p' "$BASE_CACHE/build.env")
[[ $KERNEL == /* && -f $KERNEL && $INITRD == /* && -f $INITRD ]] ||
	skip "harness cache $BASE_CACHE is incomplete (KERNEL/INITRD in build.env):" \
		"rebuild it with: sudo FORCE=1 $HARNESS/build.sh"
for tool in gcc cpio gzip python3 ip qemu-system-x86_64; do
	command -v "$tool" >/dev/null ||
		skip "$tool is not installed (the harness's build.sh installs it: sudo $HARNESS/build.sh)"
done

# ---------------------------------------------------------------- work dir + cleanup
WORK=
VM_STARTED=0
# the original stdout/stderr: a trap can fire while a command's output is redirected
# into $WORK, and cleanup() must not write there
exec {OUT_FD}>&1 {ERR_FD}>&2

tipcvm() {
	(cd "$HARNESS" && TIPCVM_CACHE="$WORK/cache" ./tipcvm.py --ns "$NS" "$@")
}

cleanup() {
	local rc=$?
	trap '' INT TERM
	set +e
	exec 1>&"$OUT_FD" 2>&"$ERR_FD"
	if [[ $VM_STARTED == 1 ]]; then
		echo "--- bringing the VM down (namespace $NS)"
		tipcvm down
		if [[ $KEEP_LOGS == 1 ]]; then
			echo "VM logs kept in $RUN_BASE/$NS.last"
		elif [[ -d $RUN_BASE/$NS.last ]]; then
			rm -rf -- "${RUN_BASE:?}/$NS.last"
			echo "removed $RUN_BASE/$NS.last again (--keep-logs keeps it)"
		fi
		# down stops qemu by its recorded PID; report (never kill) anything left over
		if left=$(pgrep -f -- "$RUN_BASE/$NS/"); then
			echo "WARNING: processes still refer to $RUN_BASE/$NS: $left" >&2
			rc=1
		fi
		if ip netns list | grep -w -- "$NS" >/dev/null; then
			echo "WARNING: network namespace $NS still exists" >&2
			rc=1
		fi
	fi
	if [[ -n $WORK ]]; then
		rm -rf -- "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&"$ERR_FD"; exit 130' INT
trap 'exit 143' TERM
WORK=$(mktemp -d "${TMPDIR:-/tmp}/conncheck.XXXXXX")

# ---------------------------------------------------------------- build the overlay initramfs
T_START=$SECONDS
mkdir -p "$WORK/overlay/bin" "$WORK/cache"
gcc -O2 -Wall -static -s -o "$WORK/overlay/bin/conncheck" "$SCRIPT_DIR/conncheck.c"
chmod 755 "$WORK/overlay/bin/conncheck"
(cd "$WORK/overlay" && find . -print0 | cpio --null -o -H newc --quiet --owner=0:0) |
	gzip -6 >"$WORK/overlay.cpio.gz"
# the kernel unpacks concatenated initramfs archives one after the other
cat "$INITRD" "$WORK/overlay.cpio.gz" >"$WORK/cache/initramfs.cpio.gz"
# tipcvm.py reads only KERNEL and INITRD from build.env; KERNEL stays in the base cache
sed -e "s#^INITRD=.*#INITRD=$WORK/cache/initramfs.cpio.gz#" \
	"$BASE_CACHE/build.env" >"$WORK/cache/build.env"

# ---------------------------------------------------------------- boot one VM
echo "--- booting one kernel-TIPC VM (namespace $NS, harness $HARNESS)"
VM_STARTED=1
tipcvm up -n 1 --echo none --status 0
KREL=$(tipcvm exec --timeout 30 1 "uname -r" | tr -d '\r\n')
echo "--- guest kernel: $KREL"

# ---------------------------------------------------------------- the matrix
STYPES=(seq stream)
ACTIONS=(close shutclose send10close kill)

# reference: what Linux 6.1.192 showed (first recv / later recvs / send)
expected() {
	case $1 in
	close | kill) echo "ECONNRESET|ECONNRESET|EPIPE" ;;
	shutclose) echo "EOF|blocked|EPIPE" ;;
	send10close) echo "data(10)|ECONNRESET|EPIPE" ;;
	esac
}

# one result line -> short token: data(N), EOF, blocked (EAGAIN after SO_RCVTIMEO 3 s),
# ok(N) for a successful send, or the errno name
short() {
	sed -E -e 's/.* -> //' \
		-e 's/^([0-9]+) bytes.*/data(\1)/' \
		-e 's/^0 \(EOF\).*/EOF/' \
		-e 's/^-1 errno=[0-9]+ EAGAIN.*/blocked/' \
		-e 's/^-1 errno=[0-9]+ ([A-Za-z0-9]+).*/\1/' \
		-e 's/^([0-9]+) errno=0 .*/ok(\1)/'
}

first_match() { # FILE PATTERN -> short token of the first matching survivor line, or "?"
	local line
	line=$(grep -m1 -F -- "$2" "$1" || true)
	if [[ -n $line ]]; then short <<<"$line"; else echo "?"; fi
}

declare -a SUMMARY=()
FAILED=0
DIFFERS=0
for st in "${STYPES[@]}"; do
	for act in "${ACTIONS[@]}"; do
		out="$WORK/out.$st.$act"
		echo
		rc=0
		tipcvm exec --timeout 60 1 "conncheck local $st $act listen early" >"$out" 2>&1 || rc=$?
		cat "$out"
		echo "rc=$rc"
		first=$(first_match "$out" "survivor: recv#1 ->")
		later=$(for i in 2 3 4 5; do first_match "$out" "survivor: recv#$i ->"; done |
			sort -u | paste -sd/ -)
		send=$(first_match "$out" "survivor: send#3(")
		soerr=$(sed -n 's/.*survivor: SO_ERROR=[0-9-]* //p' "$out" | head -n1)
		pollend=$(sed -n 's/.*survivor: poll(end) rc=[0-9-]* revents=0x[0-9a-f]* *//p' "$out" |
			head -n1)
		if [[ $rc != 0 || -z $soerr ]]; then
			verdict="FAILED(rc=$rc)"
			FAILED=1
		elif [[ "$first|$later|$send" == "$(expected "$act")" && $soerr == 0 &&
			$pollend == "IN HUP" ]]; then
			verdict="same"
		else
			verdict="DIFFERS"
			DIFFERS=1
		fi
		SUMMARY+=("$(printf '%-6s %-11s  %-11s %-15s %-7s %-8s %-9s %s' "$st" "$act" \
			"$first" "$later" "$send" "${soerr:-?}" "${pollend:-?}" "$verdict")")
	done
done

echo
echo "=== summary: survivor=listen timing=early, guest kernel $KREL"
echo "    (first = recv#1, later = recv#2..#5, send = first send after the recvs;"
echo "     blocked = recv still blocked after SO_RCVTIMEO 3 s; reference = Linux 6.1.192)"
printf '%-6s %-11s  %-11s %-15s %-7s %-8s %-9s %s\n' \
	stype action first later send SO_ERROR "poll(end)" "vs reference"
printf '%s\n' "${SUMMARY[@]}"
echo "run time: $((SECONDS - T_START)) s (build + boot + matrix)"

if [[ $FAILED == 1 ]]; then
	echo "some cases FAILED (no result); see their output above"
	exit 1
fi
if [[ $DIFFERS == 1 ]]; then
	echo "some cases DIFFER from the Linux 6.1.192 reference"
	exit 3
fi
exit 0

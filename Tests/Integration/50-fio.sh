#!/usr/bin/env bash
# fio with --verify=crc32c on an image (libaio + O_DIRECT random writes at depth 16, psync mixed 64k),
# saving verify state; then a Tessera remount and fio --verify_only over every block written.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need fio

M=$((1024 * 1024))
start_tessera
img="$MNT/fio.img"
truncate -s 512M "$img"

# Job 1: libaio, O_DIRECT, iodepth 16, 4k random writes over the first 128M.
# Job 2: psync, 64k, random mixed read/write over 256M..512M (reads of written blocks are verified too).
job_args() {
    local name=$1
    case "$name" in
        aio) echo --name=aio --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --bs=4k --offset=0 --size=128M ;;
        sync) echo --name=sync --ioengine=psync --direct=0 --rw=randrw --rwmixread=30 --bs=64k --offset=256M --size=256M ;;
    esac
}
common=(--filename="$img" --verify=crc32c --verify_fatal=1 --verify_dump=1 --randrepeat=1 --randseed=4242
        --do_verify=1 --verify_state_save=1 --group_reporting --output-format=normal)

for j in aio sync; do
    info "fio job $j"
    # shellcheck disable=SC2046
    run_fio "fio-$j.log" "${common[@]}" $(job_args "$j")
done
# the jobs really wrote: the image holds data in both regions
alloc=$(volume_field fio allocated)
[ "$alloc" -ge $((128 * M)) ] || fail "after the fio jobs the image has only $alloc bytes allocated"
ls ./*verify.state >/dev/null 2>&1 || fail "fio did not save verify state files"

info "remount, then fio --verify_only"
restart_tessera
for j in aio sync; do
    # shellcheck disable=SC2046
    run_fio "fio-$j-verify.log" "${common[@]}" $(job_args "$j") --verify_only --verify_state_load=1
    grep -qE 'READ: .*io=[1-9]' "fio-$j-verify.log" || fail "fio --verify_only ($j) read nothing back"
done

info "a corrupted block must be caught by --verify_only (proves the check works)"
# corrupt every 64k block start in the sync region so at least one written block is hit
py '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for off in range(256 << 20, 512 << 20, 1 << 20):
    os.pwrite(fd, b"\xff" * 512, off)
os.fsync(fd); os.close(fd)
' "$img"
rc=0
# shellcheck disable=SC2046
timeout 300 fio "${common[@]}" $(job_args sync) --verify_only --verify_state_load=1 > fio-corrupt.log 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "fio --verify_only did not notice corrupted blocks (exit 0)"

stop_tessera
pass

#!/usr/bin/env bash
# An S3 store that stops answering (issue 9, finding 6): the Ceph RGW of TESSERA_TEST_S3_URL is frozen with
# SIGSTOP under a mounted pool of a directory store and that S3 store. New writes (with fsync) succeed and
# land on the directory store; `store show` and `status` answer at once and say UNREACHABLE; a read of data
# that lives only on the S3 store fails with EIO within 30 s; after SIGCONT the probe returns the store to
# service by itself and every byte reads back.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 dd ss md5sum
T_TIMEOUT=${T_TIMEOUT:-900}

[ -n "${TESSERA_TEST_S3_URL:-}" ] || fail "TESSERA_TEST_S3_URL is not set: this test needs an S3 endpoint \
(Scripts/test starts a throwaway Ceph RGW and sets it)"
URL=${TESSERA_TEST_S3_URL%/}
PORT=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port)' "$URL")
RGW_PID=$(ss -ltnpH "sport = :$PORT" | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2)
[ -n "$RGW_PID" ] || fail "no process listens on port $PORT of $URL"
grep -q radosgw "/proc/$RGW_PID/comm" || warn "the S3 endpoint on port $PORT is $(cat "/proc/$RGW_PID/comm"), not radosgw"
M=$((1024 * 1024))

new_data_dir --chunk-size 1M
must tcli pool create p --chunk-size 1M
mkdir -p "$T_WORK/d1"
# equal quotas: both stores take new chunks
must tcli store add d1 --pool p --dir "$T_WORK/d1" --size 1G
must tcli store add s3 --pool p --s3 "$URL/outage-$RANDOM" --size 1G --compress none
start_tessera --no-init
must tcli volume create v --size 64M --pool p
write_random "$MNT/v.img" 0 $((16 * M)) 1
sum1=$(dd if="$MNT/v.img" bs=1M count=16 status=none | md5sum)
on_s3=$(tcli store show s3 --json | json 'd["chunks"]')
on_d1=$(tcli store show d1 --json | json 'd["chunks"]')
info "before the outage: $on_s3 chunk(s) on s3, $on_d1 on d1"
[ "$on_s3" -gt 0 ] || fail "no chunk went to the S3 store: nothing to test"

info "RGW (pid $RGW_PID) frozen with SIGSTOP"
defer kill -CONT "$RGW_PID"
kill -STOP "$RGW_PID"
t0=$(date +%s)
write_random "$MNT/v.img" $((16 * M)) $((16 * M)) 2 || fail "a write with fsync failed during the S3 outage"
info "   16 MiB of new chunks written and fsynced in $(( $(date +%s) - t0 )) s"
range_sum() { dd if="$MNT/v.img" bs=1M skip="$1" count="$2" status=none | md5sum; }   # FROM COUNT (MiB)
sum2=$(range_sum 16 16)

t0=$(date +%s%N)
out=$(timeout 10 env TESSERA_DATA="$DATA" "$TESSERA_BIN" store show s3) || fail "store show s3 failed during the outage"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
info "   store show s3 answered in $ms ms"
(( ms < 2000 )) || fail "store show took $ms ms during the outage"
grep -q "UNREACHABLE" <<<"$out" || fail "store show does not say UNREACHABLE: $out"
timeout 10 env TESSERA_DATA="$DATA" "$TESSERA_BIN" status | grep -q UNREACHABLE || fail "status does not show the outage"
now_d1=$(tcli store show d1 --json | json 'd["chunks"]')
assert_eq "$now_d1" $((on_d1 + 16)) "chunks on d1 after 16 new ones during the outage"

info "a read of data on the frozen store fails with EIO within 30 s"
failed=0
for (( i=0; i<16; i++ )); do
    t0=$(date +%s)
    if ! err=$(dd if="$MNT/v.img" of=/dev/null bs=1M count=1 skip=$i iflag=direct 2>&1); then
        took=$(( $(date +%s) - t0 ))
        info "   chunk $i: failed after $took s: $(tail -n1 <<<"$err")"
        grep -qi "input/output error" <<<"$err" || fail "the failed read did not say EIO: $err"
        (( took <= 30 )) || fail "the read took $took s to fail (documented: at most 30 s)"
        failed=1
        break
    fi
done
[ "$failed" = 1 ] || fail "every chunk read back during the outage, although $on_s3 live on the frozen store"

info "SIGCONT: the probe returns the store to service by itself"
kill -CONT "$RGW_PID"
for (( i=0; i<60; i++ )); do
    tcli store show s3 | grep -q "health: ok" && break
    sleep 1
done
tcli store show s3 | grep -q "health: ok" || fail "the S3 store is not back 60 s after SIGCONT: $(tcli store show s3)"
info "   back after about $i s"
[ "$(range_sum 0 16)" = "$sum1" ] || fail "data written before the outage differs"
[ "$(range_sum 16 16)" = "$sum2" ] || fail "data written during the outage differs"
stop_tessera
pass

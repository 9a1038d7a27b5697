#!/usr/bin/env bash
# fsx: the model checker (Tests/Model/fsx.py) drives one image per seed with random buffered, O_DIRECT
# and mmap reads and writes, fsync/fdatasync, punch hole, zero range, copy_file_range, truncate up and
# down to any byte size (an odd cut grown again must read zeros), mmap writes past EOF (ftruncate up,
# then write through the mapping), SEEK_DATA/SEEK_HOLE, close/reopen and unmount/remount, all checked
# against an in-memory model. Default: 5 seeds x 10,000 operations, a remount every 2,500 operations
# of each seed; odd seeds run on a second pool with 64 KiB chunks (FSX_SMALL_CHUNK), even ones on the
# default pool.
#
# Knobs: FSX_SEED (first seed; random by default, seeds are FSX_SEED, FSX_SEED+1, ...), FSX_SEEDS,
# FSX_OPS (per seed), FSX_REMOUNT_EVERY, FSX_MAX_SIZE, FSX_VERIFY_EVERY, FSX_DEADLINE (epoch seconds:
# stop cleanly, with a final verify, once passed; used by Scripts/soak), RELIABILITY_OUT (append a JSON
# line with the totals), FSX_SKIP (operations to leave out, e.g. open_trunc: only to narrow down a failure).
# Prints `fsx: N operations checked, M seeds, R remounts, X mismatches` (Scripts/reliability greps it).
set -euo pipefail
T_TIMEOUT=${T_TIMEOUT:-1100}
source "$(dirname "$0")/lib.sh"
need python3

FSX="$T_DIR/../Model/fsx.py"
[ -f "$FSX" ] || fail "missing $FSX"
SEEDS=${FSX_SEEDS:-5}
OPS=${FSX_OPS:-10000}
REMOUNT_EVERY=${FSX_REMOUNT_EVERY:-2500}
MAX_SIZE=${FSX_MAX_SIZE:-64M}
VERIFY_EVERY=${FSX_VERIFY_EVERY:-2000}
FIRST=${FSX_SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
info "seeds $FIRST..$((FIRST + SEEDS - 1)), $OPS operations each (rerun with FSX_SEED=$FIRST)"

start_tessera
CS=$(tcli pool show default --json | json 'd["chunkSize"]') || fail "cannot read the pool's chunk size"
# Every other seed runs on a second pool with small chunks: many more chunk boundaries per MiB.
SMALL_CS=${FSX_SMALL_CHUNK:-64K}
mkdir -p "$T_WORK/small-store"
must tcli pool create small --chunk-size "$SMALL_CS" >/dev/null
must tcli store add small-store --pool small --dir "$T_WORK/small-store" >/dev/null
SMALL_CS=$(tcli pool show small --json | json 'd["chunkSize"]') || fail "cannot read pool small's chunk size"

# The remount callback runs in a child shell: give it lib.sh's own helpers and state.
fsx_remount() {
    set -euo pipefail
    # stop_tessera waits for this pid to exit.
    TESSERA_PID=$(daemon_pid "$DATA") || TESSERA_PID=
    export TESSERA_PID
    restart_tessera >&2
}
export -f fsx_remount restart_tessera stop_tessera start_tessera _t_force_stop _t_is_mounted _t_fuse_conn \
    daemon_pid fail info warn defer
export DATA MNT T_WORK T_NAME T_START TESSERA_BIN

# fsx runs from outside the mount, so that the remounts find the mountpoint free.
cd "$T_WORK"
FSX_PID=
kill_fsx() { [ -z "$FSX_PID" ] || kill -KILL "$FSX_PID"; }
defer kill_fsx

total_ops=0 total_remounts=0 mismatches=0 seeds_run=0 failed_seed='' reported=0
report() {
    reported=1
    echo "fsx: $total_ops operations checked, $seeds_run seeds, $total_remounts remounts, $mismatches mismatches"
    if [ -n "${RELIABILITY_OUT:-}" ]; then
        printf '{"check":"fsx","operations":%d,"seeds":%d,"remounts":%d,"mismatches":%d}\n' \
            "$total_ops" "$seeds_run" "$total_remounts" "$mismatches" >> "$RELIABILITY_OUT"
    fi
}
# Interrupted (timeout, watchdog, signal): still append what the finished seeds checked.
report_if_needed() { [ "$reported" = 1 ] || report; }
defer report_if_needed

for (( i=0; i<SEEDS; i++ )); do
    seed=$((FIRST + i))
    if [ -n "${FSX_DEADLINE:-}" ] && [ "$(date +%s)" -ge "${FSX_DEADLINE%.*}" ]; then
        info "deadline reached before seed $seed"
        break
    fi
    extra=()
    [ -n "${FSX_DEADLINE:-}" ] && extra+=(--deadline "$FSX_DEADLINE")
    [ -n "${FSX_SKIP:-}" ] && extra+=(--skip "$FSX_SKIP")
    out="$T_WORK/fsx-$seed.out"
    cs=$CS max=$MAX_SIZE
    if (( seed % 2 == 1 )); then
        cs=$SMALL_CS max=$(( SMALL_CS * 256 ))
        must tcli volume create "fsx-$seed" --size 512 --pool small >/dev/null
    fi
    rc=0
    # In the background, so that a TERM (timeout, watchdog) ends the test now and the cleanup kills fsx
    # before it unmounts.
    python3 "$FSX" "$MNT/fsx-$seed.img" --seed "$seed" --ops "$OPS" --max-size "$max" \
        --chunk-size "$cs" --verify-every "$VERIFY_EVERY" --remount-every "$REMOUNT_EVERY" \
        --remount-cmd "bash -c fsx_remount" --delete "${extra[@]}" > "$out" 2>&1 &
    FSX_PID=$!
    wait "$FSX_PID" || rc=$?
    FSX_PID=
    result=$(grep '^fsx-result:' "$out" | tail -n 1 || true)
    [ -n "$result" ] || { cat "$out" >&2; fail "seed $seed: fsx ended (exit $rc) without a result line"; }
    ops=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<<"$result")
    rem=$(sed -n 's/.* remounts=\([0-9]*\).*/\1/p' <<<"$result")
    mis=$(sed -n 's/.* mismatches=\([0-9]*\).*/\1/p' <<<"$result")
    total_ops=$((total_ops + ops)) total_remounts=$((total_remounts + rem)) mismatches=$((mismatches + mis))
    seeds_run=$((seeds_run + 1))
    # fsx's remounts replaced the daemon: follow it (for stop_tessera and the cleanup).
    TESSERA_PID=$(daemon_pid "$DATA") || TESSERA_PID=
    if [ "$rc" -ne 0 ]; then
        grep -v '^unmounted \|^mounted ' "$out" >&2 || true
        failed_seed=$seed
        break
    fi
    info "$(grep "^fsx: seed .* operations checked" "$out" || echo "seed $seed: $result") [chunk size $cs]"
done

report
[ -z "$failed_seed" ] ||
    fail "fsx seed $failed_seed failed (exit $rc, report above; rerun: FSX_SEED=$failed_seed FSX_SEEDS=1 FSX_OPS=$OPS)"
[ "$total_ops" -gt 0 ] || fail "no operations ran"
if [ -z "${FSX_DEADLINE:-}" ]; then
    assert_eq "$total_ops" $((SEEDS * OPS)) "operations checked"
fi
left=$(volume_names | grep '^fsx-' || true)
[ -z "$left" ] || fail "images left behind after fsx deleted them: $left"
stop_tessera
pass

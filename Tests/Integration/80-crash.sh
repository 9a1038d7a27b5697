#!/usr/bin/env bash
# Crash test: a writer logs every write that fdatasync acknowledged; the daemon is SIGKILLed at a random
# moment; after a remount every acknowledged write must be there (never older data, zeros or garbage).
# Five rounds on the same image, alternating buffered and O_DIRECT writers; the log keeps growing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_reliability.sh"
need python3
rel_init crash
rel_set kills 0
rel_set lost 0

ROUNDS=${CRASH_ROUNDS:-5}
SEED=${CRASH_SEED:-$RANDOM}
info "seed $SEED (rerun with CRASH_SEED=$SEED)"
CW="$T_DIR/crashwriter.py"
LOG=$PWD/crash.log
: > "$LOG"
RANDOM=$SEED

start_tessera
truncate -s 256M "$MNT/crash.img"
assert_eq "$(file_size "$MNT/crash.img")" $((256 * 1024 * 1024)) "crash.img size"

verify() {   # WHAT
    local out rc=0
    out=$(timeout 300 python3 "$CW" verify "$MNT/crash.img" "$LOG" --seed "$SEED" 2>&1) || rc=$?
    indent "[$T_NAME]   " "$out"
    if [ "$rc" -ne 0 ]; then
        rel_set lost 1
        fail "$1: acknowledged writes lost or damaged (seed $SEED; log kept in $T_WORK)"
    fi
}

total_before=0
for round in $(seq 1 "$ROUNDS"); do
    direct=()
    [ $((round % 2)) -eq 0 ] && direct=(--direct)
    python3 "$CW" write "$MNT/crash.img" "$LOG" --seed "$SEED" --batch 8 --max-seconds 60 "${direct[@]}" \
        2> "writer-$round.err" &
    wpid=$!
    defer kill -KILL "$wpid"
    ms=$((1000 + RANDOM % 3000))
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill -0 "$wpid" 2>/dev/null || fail "round $round: the writer died before the crash: $(cat "writer-$round.err")"
    pid=$TESSERA_PID
    info "round $round: SIGKILL daemon $pid after ${ms} ms (writer ${direct[*]:-buffered})"
    kill_tessera
    rel_add kills 1
    # the writer must now fail (ENOTCONN/EIO) and exit on its own
    for i in $(seq 1 100); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$wpid" 2>/dev/null; then
        kill -KILL "$wpid"
        fail "round $round: the writer is still running 10 s after the daemon was killed (stuck I/O)"
    fi
    wrc=0; wait "$wpid" || wrc=$?
    [ "$wrc" -eq 3 ] || warn "round $round: writer exit $wrc: $(cat "writer-$round.err")"
    acked=$(grep -vc '^#' "$LOG" || true)
    info "round $round: $((acked - total_before)) writes acknowledged this round, $acked in total"
    [ $((acked - total_before)) -gt 0 ] || fail "round $round: no write was acknowledged in ${ms} ms (fdatasync too slow or failing: $(cat "writer-$round.err"))"
    total_before=$acked
    start_tessera --no-init
    assert_eq "$(file_size "$MNT/crash.img")" $((256 * 1024 * 1024)) "crash.img size after crash $round"
    verify "after crash $round"
done

info "clean unmount and a final check"
restart_tessera
verify "after a clean remount"
stop_tessera
pass

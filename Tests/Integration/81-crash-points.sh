#!/usr/bin/env bash
# Targeted crash points: the mount daemon runs under strace, which SIGKILLs it on entering the Nth
# matching syscall (`-e inject=SYSCALL:signal=KILL:when=N`, limited with -P to the files that matter):
#
#   chunk-fdatasync / chunk-pwrite   fdatasync / pwrite64 on the chunk files of a volume being written
#   wal-pwrite / wal-sync            pwrite64 / fdatasync+fsync on catalog.db-wal (and catalog.db)
#   dir-fsync                        fsync on the store's chunks/XX directories (new chunk files)
#   chunk-unlink                     unlink of a deleted volume's chunk files
#
# swept over short scenarios:
#   (a) write+fsync: crashwriter.py logs every write that fdatasync acknowledged;
#   (b) create / resize through the CLI (the mount's control socket), and offline (the CLI itself killed);
#   (c) delete, through the CLI and by unlinking NAME.img in the mount.
# After each kill: umount -l the dead mount, mount again, and check
#   - zero acknowledged writes lost, zero rollbacks, every block readable (ackcheck.py);
#   - the catalog opens (the mount works, `volume list` answers, SQLite integrity_check is ok);
#   - create/resize/delete are all-or-nothing (and done if the CLI said so);
#   - no orphan chunk files: files under chunks/ == allocated chunks of `volume list --json`.
# N counts per thread (strace keeps injection counters per traced thread). A crash point whose Nth call
# never comes is counted as "not reached" (it shows which syscalls a scenario does not make).
#
# Knobs: CRASHPOINTS_SEED, CRASHPOINTS_QUICK=1 (a smaller sample).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_reliability.sh"
need python3 strace
rel_init crash-points
for k in points hit not_reached lost rollbacks unreadable orphans all_or_nothing_violations; do rel_set "$k" 0; done

SEED=${CRASHPOINTS_SEED:-$RANDOM}
info "seed $SEED (rerun with CRASHPOINTS_SEED=$SEED)"
CW="$T_DIR/crashwriter.py"
ACK="$T_DIR/ackcheck.py"
MiB=$((1 << 20))

new_data_dir
DATA=$(realpath "$DATA")
WAL=$DATA/catalog.db-wal
CHUNKS=$DATA/stores/default/chunks
start_fg daemon-0
DIRS=("$CHUNKS")
for d in "$CHUNKS"/*/; do DIRS+=("${d%/}"); done
[ "${#DIRS[@]}" -eq 257 ] || fail "expected 256 chunk directories under $CHUNKS, found $(( ${#DIRS[@]} - 1 ))"
restarts=0
PROBLEMS=()

problem() {
    PROBLEMS+=("$POINT: $*")
    warn "$POINT: $*"
}

chunk_files() { find "$CHUNKS" -type f | sort; }

# after_point: stop strace (it has exited by itself if it killed the daemon); if the daemon died,
# detach, remount; then the checks common to every point. Sets HIT (1: the crash point was reached).
after_point() {
    wait_pid_gone "$TESSERA_PID" 5 || true    # a kill may land just after the workload ended
    strace_stop
    HIT=0
    [ -d "/proc/$TESSERA_PID" ] || HIT=1
    if [ "$HIT" = 1 ]; then
        rel_add hit 1
        crashed_daemon "$TESSERA_PID" "$FG_LOG" && problem "the daemon crashed by itself (not the injected SIGKILL): $(grep -m3 -iE 'fatal|crash' "$FG_LOG")"
        kill_hard "$TESSERA_PID" "$MNT"
        restarts=$((restarts + 1))
        [ -s "$WAL" ] || [ -e "$DATA/catalog.db" ] || fail "$POINT: catalog.db is gone"
        sqlite_ok "$DATA/catalog.db" || problem "catalog fails SQLite integrity_check after the crash"
        start_fg "daemon-$restarts"
    else
        rel_add not_reached 1
    fi
    rel_add points 1
    local o
    o=$(orphan_chunks "$DATA") || fail "$POINT: cannot count orphan chunks"
    if [ "$o" -ne 0 ]; then
        rel_add orphans "$o"
        problem "$o chunk files more than the catalog's allocated chunks after the remount (orphans/leak, or negative: missing files)"
    fi
}

# verify_volume NAME LOG: ackcheck the image against its log
verify_volume() {
    local name=$1 log=$2 out rc=0 lost unread roll
    out=$T_WORK/verify-$POINT-$name.out
    timeout 120 python3 "$ACK" verify "$MNT/$name.img" "$log" --seed "$SEED" >"$out" 2>&1 || rc=$?
    lost=$(grep -o ' LOST=[0-9]*' "$out" | cut -d= -f2 || true)
    unread=$(grep -o 'UNREADABLE_UNACKED=[0-9]*' "$out" | cut -d= -f2 || true)
    roll=$(grep -o 'ROLLBACK=[0-9]*' "$out" | cut -d= -f2 || true)
    if [ -z "$lost" ]; then
        rel_add lost 1
        problem "cannot verify $name: $(tail -n 5 "$out")"
        return 0
    fi
    rel_add lost "$lost"; rel_add rollbacks "$roll"; rel_add unreadable "$unread"
    [ "$rc" -eq 0 ] || problem "$name: $(head -n 1 "$out" | cut -c1-300); first problems: $(sed -n '2,4p' "$out" | tr '\n' ';')"
    return 0
}

# ---------------------------------------------------------------------------------------------------------
# (a) write + fsync

WARM=warm
WARM_LOG=$T_WORK/warm.log
must tcli volume create "$WARM" --size 8M
python3 "$CW" write "$MNT/$WARM.img" "$WARM_LOG" --seed "$SEED" --batch 4 --max-seconds 1.5 2>/dev/null ||
    fail "warm-up writer failed"
mapfile -t WARM_FILES < <(chunk_files)
[ "${#WARM_FILES[@]}" -ge 6 ] || fail "warm-up allocated only ${#WARM_FILES[@]} chunks of 8"
info "warm volume: ${#WARM_FILES[@]} chunk files, $(grep -vc '^#' "$WARM_LOG") acknowledged writes"

point_write() {   # TARGET N
    local target=$1 n=$2 calls paths vol log direct=()
    POINT="a:$target@$n"
    case $target in
        chunk-fdatasync) calls=fdatasync; paths=("${WARM_FILES[@]}") ;;
        chunk-pwrite)    calls=pwrite64;  paths=("${WARM_FILES[@]}") ;;
        wal-pwrite)      calls=pwrite64;  paths=("$WAL") ;;
        wal-sync)        calls=fdatasync,fsync; paths=("$WAL" "$DATA/catalog.db") ;;
        dir-fsync)       calls=fsync;     paths=("${DIRS[@]}") ;;
        *) fail "unknown target $target" ;;
    esac
    if [[ $target == chunk-* ]]; then
        vol=$WARM log=$WARM_LOG
    else
        vol="w$(rel_get points)" log=$T_WORK/$vol.log
        must tcli volume create "$vol" --size 16M
    fi
    [ $(( $(rel_get points) % 2 )) -eq 1 ] && direct=(--direct)
    strace_inject "$TESSERA_PID" "$calls" "signal=KILL:when=$n" "${paths[@]}"
    python3 "$CW" write "$MNT/$vol.img" "$log" --seed "$SEED" --batch 4 --max-seconds 2 "${direct[@]}" \
        2>"$T_WORK/writer-$(rel_get points).err" || true
    after_point
    verify_volume "$vol" "$log"
    info "$POINT: $([ "$HIT" = 1 ] && echo "killed" || echo "not reached"), $(grep -vc '^#' "$log") acknowledged writes on $vol"
}

QUICK=${CRASHPOINTS_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    A_POINTS=("chunk-fdatasync 1" "chunk-fdatasync 4" "chunk-pwrite 9" "wal-pwrite 2" "wal-sync 1" "dir-fsync 2")
else
    A_POINTS=("chunk-fdatasync 1" "chunk-fdatasync 2" "chunk-fdatasync 3" "chunk-fdatasync 5" "chunk-fdatasync 8"
              "chunk-fdatasync 13" "chunk-pwrite 1" "chunk-pwrite 4" "chunk-pwrite 16" "chunk-pwrite 64"
              "chunk-pwrite 200" "wal-pwrite 1" "wal-pwrite 2" "wal-pwrite 3" "wal-pwrite 7" "wal-pwrite 20"
              "wal-sync 1" "wal-sync 2" "dir-fsync 1" "dir-fsync 2" "dir-fsync 4" "dir-fsync 9")
fi
for p in "${A_POINTS[@]}"; do
    # shellcheck disable=SC2086
    point_write $p
done

# ---------------------------------------------------------------------------------------------------------
# (b) create / resize through the control socket

point_catalog() {   # PHASE CALLS N
    local phase=$1 calls=$2 n=$3 name rc=0
    POINT="b:$phase-$calls@$n"
    name="c$(rel_get points)"
    if [ "$phase" = resize ]; then
        must tcli volume create "$name" --size 8M
        write_random "$MNT/$name.img" $((3 * MiB)) 4096 "$SEED"
    fi
    strace_inject "$TESSERA_PID" "$calls" "signal=KILL:when=$n" "$WAL" "$DATA/catalog.db"
    if [ "$phase" = create ]; then
        timeout 30 env TESSERA_DATA="$DATA" "$TESSERA_BIN" volume create "$name" --size 8M \
            >/dev/null 2>"$T_WORK/cli.err" || rc=$?
    else
        timeout 30 env TESSERA_DATA="$DATA" "$TESSERA_BIN" volume resize "$name" --size 24M \
            >/dev/null 2>"$T_WORK/cli.err" || rc=$?
    fi
    [ "$rc" -ne 124 ] || problem "the CLI hung (30 s) when the daemon died under it"
    after_point
    local size=""
    if has_volume "$name"; then
        size=$(volume_field "$name" size)
        [ -f "$MNT/$name.img" ] || problem "$name is in the catalog but $name.img is not in the mount"
        [ ! -f "$MNT/$name.img" ] || [ "$(file_size "$MNT/$name.img")" = "$size" ] ||
            problem "$name.img has size $(file_size "$MNT/$name.img"), the catalog says $size"
    fi
    if [ "$phase" = create ]; then
        if [ -z "$size" ]; then
            [ "$rc" -ne 0 ] || { rel_add all_or_nothing_violations 1; problem "create returned 0 but $name is gone after the crash"; }
        else
            [ "$size" = $((8 * MiB)) ] || { rel_add all_or_nothing_violations 1; problem "$name exists with size $size (expected 8M or absent)"; }
        fi
    else
        if [ -z "$size" ]; then
            rel_add all_or_nothing_violations 1; problem "$name vanished after a crash during its resize"
        elif [ "$rc" -eq 0 ]; then
            [ "$size" = $((24 * MiB)) ] || { rel_add all_or_nothing_violations 1; problem "resize returned 0 but $name has size $size"; }
        else
            [ "$size" = $((8 * MiB)) ] || [ "$size" = $((24 * MiB)) ] ||
                { rel_add all_or_nothing_violations 1; problem "$name has size $size after a crash during resize 8M->24M"; }
        fi
        if [ -n "$size" ]; then
            [ "$(range_md5 "$MNT/$name.img" $((3 * MiB)) 4096)" = "$(py '
import random, sys, hashlib; print(hashlib.md5(random.Random(int(sys.argv[1])).randbytes(4096)).hexdigest())' "$SEED")" ] ||
                { rel_add lost 1; problem "the fsynced block of $name changed after a crash during resize"; }
        fi
    fi
    info "$POINT: $([ "$HIT" = 1 ] && echo "killed" || echo "not reached"), CLI exit $rc, $name: ${size:-absent}"
}

if [ "$QUICK" = 1 ]; then
    B_POINTS=("create pwrite64 1" "resize pwrite64 1" "create fdatasync,fsync 1")
else
    B_POINTS=("create pwrite64 1" "create pwrite64 2" "create pwrite64 3" "create pwrite64 5"
              "resize pwrite64 1" "resize pwrite64 2" "create fdatasync,fsync 1" "resize fdatasync,fsync 1")
fi
for p in "${B_POINTS[@]}"; do
    # shellcheck disable=SC2086
    point_catalog $p
done

# ---------------------------------------------------------------------------------------------------------
# (c) delete

point_delete() {   # HOW TARGET N     HOW: cli | unlink
    local how=$1 target=$2 n=$3 name rc=0 calls paths before
    POINT="c:$how-$target@$n"
    name="d$(rel_get points)"
    must tcli volume create "$name" --size 8M
    mapfile -t before < <(chunk_files)
    local i
    for i in 0 2 5 7; do write_random "$MNT/$name.img" $((i * MiB + 8192)) 4096 "$((SEED + i))"; done
    local sums
    sums=$(for i in 0 2 5 7; do range_md5 "$MNT/$name.img" $((i * MiB + 8192)) 4096; done)
    local mine
    mine=$(comm -13 <(printf '%s\n' "${before[@]}") <(chunk_files))
    [ "$(wc -l <<<"$mine")" -eq 4 ] || fail "$POINT: expected 4 new chunk files for $name, got: $mine"
    case $target in
        wal-pwrite) calls=pwrite64; paths=("$WAL") ;;
        wal-sync)   calls=fdatasync,fsync; paths=("$WAL" "$DATA/catalog.db") ;;
        unlink)     calls=unlink,unlinkat; mapfile -t paths <<<"$mine" ;;
        dir-fsync)  calls=fsync; paths=("${DIRS[@]}") ;;
    esac
    strace_inject "$TESSERA_PID" "$calls" "signal=KILL:when=$n" "${paths[@]}"
    if [ "$how" = cli ]; then
        timeout 30 env TESSERA_DATA="$DATA" "$TESSERA_BIN" volume delete "$name" >/dev/null 2>"$T_WORK/cli.err" || rc=$?
    else
        timeout 30 rm -f "$MNT/$name.img" 2>"$T_WORK/cli.err" || rc=$?
    fi
    [ "$rc" -ne 124 ] || problem "the delete hung (30 s) when the daemon died under it"
    after_point
    local state
    if has_volume "$name"; then
        state=present
        [ "$rc" -ne 0 ] || { rel_add all_or_nothing_violations 1; problem "delete returned 0 but $name is still there after the remount"; }
        local got
        got=$(for i in 0 2 5 7; do range_md5 "$MNT/$name.img" $((i * MiB + 8192)) 4096 2>/dev/null || echo unreadable; done)
        [ "$got" = "$sums" ] || { rel_add all_or_nothing_violations 1; rel_add lost 1; problem "$name survived its interrupted delete only in part (its data changed or is unreadable)"; }
        [ "$(volume_field "$name" allocated)" = $((4 * MiB)) ] ||
            { rel_add all_or_nothing_violations 1; problem "$name survived with allocated=$(volume_field "$name" allocated), expected 4 MiB"; }
    else
        state=gone
        [ ! -e "$MNT/$name.img" ] || problem "$name is gone from the catalog but $name.img is still in the mount"
        local f left=0
        while IFS= read -r f; do [ -e "$f" ] && left=$((left + 1)); done <<<"$mine"
        [ "$left" -eq 0 ] || { rel_add orphans "$left"; problem "$name is gone but $left of its chunk files remain after the remount"; }
    fi
    info "$POINT: $([ "$HIT" = 1 ] && echo "killed" || echo "not reached"), delete exit $rc, $name $state"
}

if [ "$QUICK" = 1 ]; then
    C_POINTS=("cli wal-pwrite 1" "unlink unlink 2")
else
    C_POINTS=("cli wal-pwrite 1" "cli wal-pwrite 2" "cli unlink 1" "cli unlink 3" "unlink wal-pwrite 1"
              "unlink unlink 2" "unlink unlink 4" "cli wal-sync 1" "cli dir-fsync 1")
fi
for p in "${C_POINTS[@]}"; do
    # shellcheck disable=SC2086
    point_delete $p
done

# ---------------------------------------------------------------------------------------------------------
# offline: the CLI itself opens the catalog and is killed in the middle of its transaction

stop_tessera
offline_point() {   # OP N
    local op=$1 n=$2 rc=0 name
    POINT="offline:$op@$n"
    name="o$(rel_get points)"
    case $op in
        create) ;;
        resize|delete) must tcli volume create "$name" --size 8M ;;
    esac
    local cmd=(volume "$op" "$name")
    [ "$op" = create ] && cmd+=(--size 8M)
    [ "$op" = resize ] && cmd+=(--size 24M)
    # (the braces keep bash's "Killed" notice out of the output)
    { TESSERA_DATA="$DATA" timeout 30 strace -f -qq -o /dev/null -e trace=pwrite64 \
        -e inject=pwrite64:signal=KILL:when="$n" -P "$WAL" "$TESSERA_BIN" "${cmd[@]}" >/dev/null 2>&1; } 2>/dev/null || rc=$?
    rel_add points 1
    if [ "$rc" -eq 137 ]; then rel_add hit 1; else rel_add not_reached 1; fi
    sqlite_ok "$DATA/catalog.db" || problem "catalog fails integrity_check after the CLI was killed"
    local size=""
    has_volume "$name" && size=$(volume_field "$name" size)
    case $op in
        create) [ -z "$size" ] || [ "$size" = $((8 * MiB)) ] || { rel_add all_or_nothing_violations 1; problem "$name has size $size"; }
                [ "$rc" -ne 0 ] || [ -n "$size" ] || { rel_add all_or_nothing_violations 1; problem "create returned 0, $name is missing"; } ;;
        resize) [ "$size" = $((8 * MiB)) ] || [ "$size" = $((24 * MiB)) ] || { rel_add all_or_nothing_violations 1; problem "$name has size '${size}'"; } ;;
        delete) [ "$rc" -ne 0 ] || [ -z "$size" ] || { rel_add all_or_nothing_violations 1; problem "delete returned 0, $name still there"; } ;;
    esac
    info "$POINT: $([ "$rc" -eq 137 ] && echo "killed" || echo "not reached (exit $rc)"), $name: ${size:-absent}"
}
for p in "create 1" "create 3" "resize 1" "delete 1" "delete 2"; do
    # shellcheck disable=SC2086
    offline_point $p
done

# ---------------------------------------------------------------------------------------------------------
# final: a clean mount, every write volume checked again, no orphans

start_fg daemon-final
POINT=final
verify_volume "$WARM" "$WARM_LOG"
for log in "$T_WORK"/w*.log; do
    [ -e "$log" ] || continue
    v=$(basename "$log" .log)
    has_volume "$v" || { rel_add lost 1; problem "volume $v disappeared"; continue; }
    verify_volume "$v" "$log"
done
o=$(orphan_chunks "$DATA")
[ "$o" -eq 0 ] || { rel_add orphans "$o"; problem "$o orphan chunk files after the final clean mount"; }
stop_tessera

summary="crash-points: $(rel_get points) crash points swept ($(rel_get hit) killed, $(rel_get not_reached) not reached), $(rel_get lost) acknowledged writes lost, $(rel_get rollbacks) rollbacks, $(rel_get orphans) orphan chunks, $(rel_get all_or_nothing_violations) partial operations, $(rel_get unreadable) unreadable blocks"
echo "$summary"
if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    printf '  %s\n' "${PROBLEMS[@]}" >&2
    fail "${#PROBLEMS[@]} problems (seed $SEED)"
fi
pass

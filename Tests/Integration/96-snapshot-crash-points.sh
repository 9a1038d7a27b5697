#!/usr/bin/env bash
# Targeted crash points in snapshot create and delete: the daemon runs under strace, which SIGKILLs it on
# the Nth matching syscall (as 81-crash-points does):
#   create (CLI group v+w, or mkdir under .snapshots):  pwrite64 on catalog.db-wal, fdatasync/fsync of
#                                                       the catalog
#   delete (CLI):  pwrite64 on the WAL, its fdatasync/fsync, unlink of the chunk files only the snapshot
#                  holds
# After each point: remount, then
#   - the snapshot is all or nothing: present (listed, its images exactly the volumes at capture) or
#     absent (no directory; for a delete, none of its chunk files left); exit 0 from the CLI means done;
#   - a snapshot that survived keeps its contents when the volume is overwritten after the remount
#     (the copy-on-write state was made durable with it);
#   - SQLite integrity_check ok; after the remount and an unmount `tessera fsck` is clean (no missing or
#     orphan chunk: what the crash left half done was finished or undone by the remount).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_reliability.sh"
source "$(dirname "$0")/_snap.sh"
need python3 strace md5sum
snap_init snapshot-crash-points

M=$((1024 * 1024))
new_data_dir --chunk-size 1M
DATA=$(realpath "$DATA")
WAL=$DATA/catalog.db-wal
CHUNKS=$DATA/stores/default/chunks
export TESSERA_DATA="$DATA"
start_fg daemon-0
restarts=0
must tcli volume create v --size 16M
must tcli volume create w --size 8M
write_random "$MNT/v.img" 0 $((8 * M)) 1
write_random "$MNT/w.img" $M $((4 * M)) 2

md5() { md5sum < "$1"; }
files() { find "$CHUNKS" -type f | sort; }

# after a point: detach (the daemon may be dead) and remount; then unmount, `tessera fsck` (must be clean:
# whatever the crash left half done, the remount must have finished or undone), and mount again.
# Sets HIT. (fsck straight after the crash, before any remount, is only reported.)
settle() {
    wait_pid_gone "$TESSERA_PID" 5 || true
    strace_stop
    HIT=0
    if [ ! -d "/proc/$TESSERA_PID" ]; then
        HIT=1
        crashed_daemon "$TESSERA_PID" "$FG_LOG" && bad "the daemon crashed by itself: $(grep -m3 -iE 'fatal|crash' "$FG_LOG")"
        kill_hard "$TESSERA_PID" "$MNT"
        sqlite_ok "$DATA/catalog.db" || bad "catalog fails SQLite integrity_check after the crash"
        local out rc=0
        out=$(timeout 300 "$TESSERA_BIN" fsck 2>&1) || rc=$?
        [ "$rc" -eq 0 ] || info "  (fsck right after the crash, before a remount: exit $rc: $(grep -E '^problem' <<<"$out" | head -n 2 | tr '\n' ' '))"
        restarts=$((restarts + 1))
        start_fg "daemon-$restarts"
    fi
    timeout 60 "$TESSERA_BIN" unmount "$MNT" >/dev/null 2>&1 || bad "unmount after $POINT failed"
    wait_pid_gone "$TESSERA_PID" 100 || fail "the daemon did not exit after unmount"
    fsck_clean "$POINT: after the crash, a remount and an unmount" || true
    restarts=$((restarts + 1))
    start_fg "daemon-$restarts"
}

point_create() {   # HOW(cli|mkdir) CALLS N
    local how=$1 calls=$2 n=$3 name rc=0
    POINT="create-$how-$calls@$n"
    case_begin "$POINT"
    name="c$SNAP_CASES"
    local vm wm
    vm=$(md5 "$MNT/v.img"); wm=$(md5 "$MNT/w.img")
    strace_inject "$TESSERA_PID" "$calls" "signal=KILL:when=$n" "$WAL" "$DATA/catalog.db"
    if [ "$how" = cli ]; then
        timeout 30 "$TESSERA_BIN" snapshot create v w --name "$name" >/dev/null 2>"$T_WORK/cli.err" || rc=$?
    else
        timeout 30 mkdir "$MNT/.snapshots/$name" 2>"$T_WORK/cli.err" || rc=$?
    fi
    [ "$rc" -ne 124 ] || bad "the CLI hung (30 s) when the daemon died under it"
    settle
    local state=absent
    if has_snapshot "$name"; then
        state=present
        check_eq "$(snap_field "$name" volumes)" '["v", "w"]' "volumes of $name"
        check_eq "$(md5 "$MNT/.snapshots/$name/v.img")" "$vm" "$name/v.img vs v at capture"
        check_eq "$(md5 "$MNT/.snapshots/$name/w.img")" "$wm" "$name/w.img vs w at capture"
        # copy-on-write after the crash: overwriting v must leave the snapshot alone
        write_random "$MNT/v.img" $((2 * M)) $((2 * M)) "$SNAP_CASES"
        write_random "$MNT/w.img" $M 4096 "$SNAP_CASES"
        check_eq "$(md5 "$MNT/.snapshots/$name/v.img")" "$vm" "$name/v.img after v was written following the crash"
        check_eq "$(md5 "$MNT/.snapshots/$name/w.img")" "$wm" "$name/w.img after w was written following the crash"
    else
        [ "$rc" -ne 0 ] || bad "snapshot create returned 0 but $name is gone after the crash"
        [ ! -e "$MNT/.snapshots/$name" ] || bad "$name is not listed but .snapshots/$name exists"
        write_random "$MNT/v.img" $((2 * M)) $((2 * M)) "$SNAP_CASES"
    fi
    info "  $([ "$HIT" = 1 ] && echo killed || echo "not reached"), exit $rc, $name $state"
}

point_delete() {   # CALLS-KIND N
    local kind=$1 n=$2 name rc=0 calls paths
    POINT="delete-$kind@$n"
    case_begin "$POINT"
    name="d$SNAP_CASES"
    local f1 mine sm
    write_random "$MNT/v.img" 0 $((8 * M)) $((100 + SNAP_CASES))     # chunks 0-7 (new, or rewritten in place)
    must tcli snapshot create v --name "$name" >/dev/null
    sm=$(md5 "$MNT/.snapshots/$name/v.img")
    mapfile -t f1 < <(files)
    write_random "$MNT/v.img" 0 $((8 * M)) $((200 + SNAP_CASES))     # now the old 8 are the snapshot's alone
    # the chunk files that existed when the snapshot was taken and still do: the snapshot's 8 among them
    # (the unlink crash points count unlinks of these paths only)
    mine=$(comm -12 <(printf '%s\n' "${f1[@]}") <(files))
    check_eq "$(snap_field "$name" freeable)" $((8 * M)) "freeable of $name before its delete"
    case $kind in
        wal-pwrite) calls=pwrite64; paths=("$WAL") ;;
        wal-sync)   calls=fdatasync,fsync; paths=("$WAL" "$DATA/catalog.db") ;;
        unlink)     calls=unlink,unlinkat; mapfile -t paths <<<"$mine" ;;
    esac
    local before_count
    before_count=$(chunk_files)
    strace_inject "$TESSERA_PID" "$calls" "signal=KILL:when=$n" "${paths[@]}"
    timeout 30 "$TESSERA_BIN" snapshot delete "$name" >/dev/null 2>"$T_WORK/cli.err" || rc=$?
    [ "$rc" -ne 124 ] || bad "snapshot delete hung (30 s) when the daemon died under it"
    settle
    local state=absent
    if has_snapshot "$name"; then
        state=present
        [ "$rc" -ne 0 ] || bad "snapshot delete returned 0 but $name is still listed after the crash"
        [ -f "$MNT/.snapshots/$name/v.img" ] || bad "$name is listed but .snapshots/$name/v.img is missing"
        check_eq "$(md5 "$MNT/.snapshots/$name/v.img" 2>/dev/null || echo unreadable)" "$sm" \
            "$name survived its interrupted delete: contents"
        check_eq "$(snap_field "$name" freeable)" $((8 * M)) "$name survived: freeable"
        check_eq "$(chunk_files)" "$before_count" "$name survived: chunk files"
        must tcli snapshot delete "$name" >/dev/null
    else
        [ ! -e "$MNT/.snapshots/$name" ] || bad "$name is not listed but .snapshots/$name exists"
    fi
    check_eq "$(chunk_files)" $((before_count - 8)) "chunk files once $name is gone (its 8 freed, nothing else)"
    info "  $([ "$HIT" = 1 ] && echo killed || echo "not reached"), exit $rc, $name $state"
}

for p in "cli pwrite64 1" "cli pwrite64 2" "cli pwrite64 3" "cli pwrite64 5" "cli fdatasync,fsync 1" \
         "cli fdatasync,fsync 2" "mkdir pwrite64 1" "mkdir fdatasync,fsync 1"; do
    # shellcheck disable=SC2086
    point_create $p
done
for p in "wal-pwrite 1" "wal-pwrite 2" "wal-pwrite 3" "wal-sync 1" "unlink 1" "unlink 4" "unlink 8"; do
    # shellcheck disable=SC2086
    point_delete $p
done
timeout 60 "$TESSERA_BIN" unmount "$MNT" >/dev/null || bad "final unmount failed"
wait_pid_gone "$TESSERA_PID" 100 || fail "the daemon did not exit after the final unmount"
fsck_clean "at the end" || true
SNAP_SUMMARY="$restarts remounts"
finish

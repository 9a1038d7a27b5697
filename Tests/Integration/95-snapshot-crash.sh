#!/usr/bin/env bash
# SIGKILL of the mount daemon during snapshot create (CLI, group, mkdir) and snapshot delete, while
# crashwriter.py writes with fdatasync. After each kill: remount, then
#   - no acknowledged write lost (crashwriter verify on the live image);
#   - every snapshot is either fully there or absent: listed <=> its directory exists; a create the CLI
#     acknowledged (exit 0) is there, a delete it acknowledged is gone; a snapshot that survived a
#     delete reads exactly as before (md5 of each image), a new one holds the static volume exactly and
#     only valid blocks of the written one;
#   - unmounted, `tessera fsck` is clean (no missing, orphan or corrupt chunk).
# Knobs: SNAPCRASH_ROUNDS (default 12), SNAPCRASH_SEED.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_snap.sh"
need python3 md5sum
snap_init snapshot-crash

ROUNDS=${SNAPCRASH_ROUNDS:-12}
SEED=${SNAPCRASH_SEED:-$RANDOM}
info "seed $SEED (rerun with SNAPCRASH_SEED=$SEED)"
RANDOM=$SEED
CW="$T_DIR/crashwriter.py"
LOG=$PWD/crash.log
: > "$LOG"
M=$((1024 * 1024))

new_data_dir --chunk-size 1M
start_tessera --no-init
export TESSERA_DATA="$DATA"
must tcli volume create c --size 64M          # crashwriter's
must tcli volume create d --size 16M          # static: its snapshots must always equal it
must tcli volume create e --size 64M          # snapshots of e are the ones deleted (64 chunks to free)
write_random "$MNT/d.img" 0 $((16 * M)) 5
D_MD5=$(md5sum < "$MNT/d.img")

md5() { md5sum < "$1"; }

# valid_blocks IMAGE: every 4 KiB block is zeros or a crashwriter block of its own offset
valid_blocks() {
    py '
import os, sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[3])
import crashwriter as cw
p, seed = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(p)
bad = 0
with open(p, "rb", buffering=0) as f:
    off = 0
    while off < size:
        chunk = f.read(1 << 20)
        for i in range(0, len(chunk), cw.BLOCK):
            b = chunk[i:i + cw.BLOCK]
            if b.count(0) == len(b): continue
            q = cw.parse_block(b)
            if q is None or q[1] != off + i or q[2] != seed: bad += 1
        off += len(chunk)
sys.exit(f"{bad} blocks are neither zeros nor a valid block of their place" if bad else 0)
' "$1" "$SEED" "$T_DIR"
}

declare -A SNAP_MD5=()     # snapshot/image -> md5 recorded while it was known complete
check_catalog() {   # WHAT: listed <=> directory; every listed snapshot complete
    local j names dirs s
    j=$(snap_json)
    names=$(json '"\n".join(sorted(s["name"] for s in d))' <<<"$j")
    dirs=$(find "$MNT/.snapshots" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort)
    check_eq "$dirs" "$names" "$1: .snapshots directories vs snapshot list"
    for s in $names; do
        local vols
        vols=$(json "[s['volumes'] for s in d if s['name'] == '$s'][0]" <<<"$j")
        for v in $(json '" ".join(d)' <<<"$vols"); do
            [ -f "$MNT/.snapshots/$s/$v.img" ] || { bad "$1: snapshot $s lists $v but has no $v.img"; continue; }
            local k="$s/$v"
            if [ -n "${SNAP_MD5[$k]:-}" ]; then
                check_eq "$(md5 "$MNT/.snapshots/$k.img")" "${SNAP_MD5[$k]}" "$1: contents of $k.img"
            elif [ "$v" = d ]; then
                check_eq "$(md5 "$MNT/.snapshots/$k.img")" "$D_MD5" "$1: $k.img (d never changes)"
                SNAP_MD5[$k]=$D_MD5
            elif [ "$v" = c ]; then
                valid_blocks "$MNT/.snapshots/$k.img" || bad "$1: $k.img holds garbage"
                SNAP_MD5[$k]=$(md5 "$MNT/.snapshots/$k.img")
            else
                SNAP_MD5[$k]=$(md5 "$MNT/.snapshots/$k.img")
            fi
        done
    done
}

verify_live() {
    local out rc=0
    out=$(timeout 300 python3 "$CW" verify "$MNT/c.img" "$LOG" --seed "$SEED" 2>&1) || rc=$?
    indent "[$T_NAME]     " "$out"
    [ "$rc" -eq 0 ] || bad "$1: acknowledged writes lost or damaged"
}

hit_during=0; acked_creates=0; acked_deletes=0; survived=0; vanished=0
for round in $(seq 1 "$ROUNDS"); do
    kind=$(( round % 4 ))   # 0: delete, 1: CLI create (group c d e), 2: mkdir, 3: CLI create c
    case_begin "round $round: $( case $kind in 0) echo "delete";; 1) echo "group create";; 2) echo "mkdir";; 3) echo "create";; esac )"
    name="k$round"
    if [ "$kind" = 0 ]; then
        # a snapshot of e holding 64 chunks nobody else has
        write_random "$MNT/e.img" 0 $((64 * M)) $((100 + round))
        must tcli snapshot create e --name "$name"
        write_random "$MNT/e.img" 0 $((64 * M)) $((200 + round))
        SNAP_MD5[$name/e]=$(md5 "$MNT/.snapshots/$name/e.img")
    fi
    python3 "$CW" write "$MNT/c.img" "$LOG" --seed "$SEED" --batch 8 --max-seconds 30 2> "writer-$round.err" &
    wpid=$!
    defer kill -KILL "$wpid"
    sleep "0.$(( 300 + RANDOM % 500 ))"
    rm -f "op.rc"
    case $kind in
        0) ( rc=0; timeout 30 "$TESSERA_BIN" snapshot delete "$name" >/dev/null 2>op.err || rc=$?; echo "$rc" > op.rc ) & ;;
        1) ( rc=0; timeout 30 "$TESSERA_BIN" snapshot create c d e --name "$name" >/dev/null 2>op.err || rc=$?; echo "$rc" > op.rc ) & ;;
        2) ( rc=0; timeout 30 mkdir "$MNT/.snapshots/$name" 2>op.err || rc=$?; echo "$rc" > op.rc ) & ;;
        3) ( rc=0; timeout 30 "$TESSERA_BIN" snapshot create c --name "$name" >/dev/null 2>op.err || rc=$?; echo "$rc" > op.rc ) & ;;
    esac
    opid=$!
    # the CLI takes 10-20 ms end to end, the daemon's part a few ms: aim around it
    delay=$(( 2000 + (RANDOM * 32768 + RANDOM) % 28000 ))   # microseconds
    sleep "$(printf '0.%06d' "$delay")"
    [ -e op.rc ] && done_before=1 || done_before=0
    kill_tessera
    wait "$opid" || true
    orc=$(cat op.rc 2>/dev/null || echo "?")
    for i in $(seq 1 100); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$wpid" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true
    [ "$done_before" = 0 ] && hit_during=$((hit_during + 1))
    start_tessera --no-init
    present=0; has_snapshot "$name" && present=1
    info "  killed after $((delay / 1000)).$(( delay % 1000 / 100 )) ms: operation exit $orc ($( [ "$done_before" = 1 ] && echo "had finished" || echo "was running")), snapshot $name $( [ "$present" = 1 ] && echo present || echo absent)"
    [ "$orc" = 0 ] || info "    (the operation said: $(head -c 300 op.err 2>/dev/null | tr '\n' ' '))"
    if [ "$kind" = 0 ]; then
        if [ "$orc" = 0 ]; then
            acked_deletes=$((acked_deletes + 1))
            [ "$present" = 0 ] || bad "snapshot delete $name returned 0 but $name is back after the crash"
        fi
        if [ "$present" = 1 ]; then survived=$((survived + 1)); else vanished=$((vanished + 1)); unset "SNAP_MD5[$name/e]"; fi
    else
        if [ "$orc" = 0 ]; then
            acked_creates=$((acked_creates + 1))
            [ "$present" = 1 ] || bad "snapshot create $name returned 0 but $name is gone after the crash"
        fi
        if [ "$present" = 1 ]; then
            want='["c", "d", "e"]'; [ "$kind" = 3 ] && want='["c"]'
            check_eq "$(snap_field "$name" volumes)" "$want" "volumes of $name after the crash"
        fi
    fi
    check_catalog "after crash $round"
    verify_live "after crash $round"
    stop_tessera
    fsck_clean "after crash $round" || true
    start_tessera --no-init
    check_catalog "after crash $round and a clean remount"
done

info "final: delete every snapshot, then fsck"
for s in $(json '" ".join(s["name"] for s in d)' <<<"$(snap_json)"); do must tcli snapshot delete "$s" >/dev/null; done
check_eq "$(json 'len(d)' <<<"$(snap_json)")" 0 "snapshots left"
check_eq "$(chunk_files)" "$(chunks_of_volumes)" "chunk files vs chunks allocated by the volumes (no snapshot left)"
verify_live "at the end"
stop_tessera
fsck_clean "at the end" || true
SNAP_SUMMARY="$ROUNDS kills ($hit_during while the operation ran), acknowledged creates $acked_creates, deletes $acked_deletes; interrupted deletes: $survived kept, $vanished gone"
SNAP_EXTRA=",\"kills\":$ROUNDS,\"during\":$hit_during"
finish

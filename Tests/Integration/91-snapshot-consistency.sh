#!/usr/bin/env bash
# A snapshot is the image at one instant, taken while the volumes are being written:
#   (a) block level: snapwriter.py keeps threads writing 4 KiB blocks (O_DIRECT on one volume, buffered
#       + fdatasync on the other) and logs every write's issue and acknowledgement time; snapshots are
#       taken meanwhile (group CLI, mkdir under .snapshots, single volume, --all). Every block of every
#       snapshot image must be explained by one instant inside the `snapshot create` call: all writes
#       acknowledged before it present, none issued after it (snapwriter.py check). The checker must
#       also reject the wrong window (it has teeth).
#   (b) ext4 on a loop device on an image, snapshotted mid-workload (files created / atomically replaced
#       / deleted with fsync): a copy of the snapshot image (cp --sparse=always) replays its journal
#       with e2fsck -fp (preen, as at boot after a crash) and is then clean for e2fsck -fn; mounted, every file is in a state between
#       "acknowledged before the snapshot" and "started before it returned". The same through a clone
#       of the snapshot, repaired in place on a loop device.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_snap.sh"
need python3 losetup mkfs.ext4 e2fsck cp blockdev
snap_init snapshot-consistency

SW="$T_DIR/snapwriter.py"
M=$((1024 * 1024))
SEED=${SNAP_SEED:-$RANDOM}
info "seed $SEED (rerun with SNAP_SEED=$SEED)"
RANDOM=$SEED
start_tessera

# timed_snap NAME ARGS...: `tessera snapshot create ARGS --name NAME` between two CLOCK_MONOTONIC reads;
# sets WIN_<NAME>="T0 T1"; with ARGS = mkdir, a mkdir under .snapshots instead.
declare -A WIN=()
timed_snap() {
    local name=$1; shift
    local out
    out=$(py '
import os, subprocess, sys, time
name, mnt, args = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.monotonic()
if args == ["mkdir"]:
    os.mkdir(os.path.join(mnt, ".snapshots", name)); rc = 0; msg = "mkdir"
else:
    r = subprocess.run([os.environ["TESSERA_BIN"], "snapshot", "create", *args, "--name", name],
                       capture_output=True, text=True)
    rc, msg = r.returncode, (r.stdout + r.stderr).strip()
t1 = time.monotonic()
print(f"{t0:.6f} {t1:.6f} {rc} {msg}")
' "$name" "$MNT" "$@") || fail "snapshot $name: $out"
    local t0 t1 rc msg
    read -r t0 t1 rc msg <<<"$out"
    [ "$rc" = 0 ] || fail "snapshot $name ($*) failed: $msg"
    WIN[$name]="$t0 $t1"
    info "  $name: $msg (window $(py 'import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000, 1))' "$t0" "$t1") ms)"
}
export TESSERA_DATA="$DATA"

pause() { sleep "$(printf '0.%03d' $((300 + RANDOM % 700)))"; }

# ---------------------------------------------------------------------------------------------------------
checked=0
in_flight_total=0
for round in 1 2; do
    case_begin "block level, round $round: snapshots while O_DIRECT and buffered writers run"
    threads=$((round * 2))
    x=x$round; y=y$round
    must tcli volume create "$x" --size 32M
    must tcli volume create "$y" --size 32M
    log=$PWD/w$round.log
    rm -f ready
    python3 "$SW" write "$log" ready --vol "$x=$MNT/$x.img:direct" --vol "$y=$MNT/$y.img:buffered" \
        --threads "$threads" --blocks 4096 --seconds 9 --seed $((SEED + round)) 2> "writer$round.err" &
    wpid=$!
    defer kill -KILL "$wpid"
    for i in $(seq 1 300); do [ -e ready ] && break; kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    [ -e ready ] || fail "the writer did not get ready: $(cat "writer$round.err")"
    pause; timed_snap "g$round" "$x" "$y"
    pause; timed_snap "m$round" mkdir
    pause; timed_snap "s$round" "$x"
    pause; timed_snap "a$round" --all
    pause; timed_snap "g${round}b" "$y" "$x"
    wrc=0; wait "$wpid" || wrc=$?
    cat "writer$round.err" >&2
    [ "$wrc" -eq 0 ] || fail "writer failed (exit $wrc)"
    for s in "g$round" "m$round" "s$round" "a$round" "g${round}b"; do
        imgs=()
        for v in "$x" "$y"; do
            [ -e "$MNT/.snapshots/$s/$v.img" ] && imgs+=("$v=$MNT/.snapshots/$s/$v.img")
        done
        case $s in
            s*) check_eq "${#imgs[@]}" 1 "images in $s" ;;
            *) check_eq "${#imgs[@]}" 2 "images of $x and $y in $s" ;;
        esac
        read -r t0 t1 <<<"${WIN[$s]}"
        out=$(python3 "$SW" check "$log" --snap "$t0" "$t1" "${imgs[@]}" 2>&1) || bad "snapshot $s is not the image at one instant:"$'\n'"$out"
        indent "[$T_NAME]     $s: " "$out"
        checked=$((checked + 1))
        n=$(sed -nE 's/.* in_flight=([0-9]+).*/\1/p' <<<"$out" | head -n1)
        in_flight_total=$((in_flight_total + ${n:-0}))
    done
    out=$(python3 "$SW" final "$log" "$x=$MNT/$x.img" "$y=$MNT/$y.img" 2>&1) || bad "live volumes lost writes:"$'\n'"$out"
    # the checker has teeth: the live images are not the instant of g$round
    read -r t0 t1 <<<"${WIN[g$round]}"
    if python3 "$SW" check "$log" --snap "$t0" "$t1" "$x=$MNT/$x.img" >/dev/null 2>&1; then
        fail "snapwriter check accepted the live image (written after g$round) as snapshot g$round: the checker is broken"
    fi
done
[ "$in_flight_total" -gt 0 ] || warn "no block held a write that was in flight during a snapshot (weak run)"
info "block level: $checked snapshots checked; $in_flight_total blocks held writes in flight during their snapshot"

# ---------------------------------------------------------------------------------------------------------
case_begin "ext4 on a loop device, snapshotted mid-workload"
truncate -s 256M "$MNT/e.img"
loop_attach "$MNT/e.img"; dev=$LOOP_DEV
timeout 120 mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dev" || fail "mkfs.ext4 failed"
mkdir -p fs
mount "$dev" fs || fail "mount ext4 failed"
defer umount -l "$PWD/fs"
rm -f ready
python3 "$SW" fswork fs fs.log ready --seconds 8 --threads 2 --seed "$SEED" 2> fswork.err &
fpid=$!
defer kill -KILL "$fpid"
# and bulk buffered writes without fsync, so the journal and the page cache are busy
( mkdir -p fs/bulk; for i in 1 2 3 4; do head -c $((8 * M)) /dev/urandom > "fs/bulk/$i"; sleep 0.5; done ) &
bpid=$!
for i in $(seq 1 100); do [ -e ready ] && break; sleep 0.1; done
sleep 2
timed_snap e1 e
sleep 1.5
timed_snap e2 mkdir
frc=0; wait "$fpid" || frc=$?
wait "$bpid" || true
cat fswork.err >&2
[ "$frc" -eq 0 ] || fail "fswork failed (exit $frc)"
umount fs || fail "umount ext4"
losetup -d "$dev"
out=$(timeout 120 e2fsck -fn "$MNT/e.img" 2>&1) || bad "the live ext4 is not clean after the workload:"$'\n'"$out"

for s in e1 e2; do
    snapimg=$MNT/.snapshots/$s/e.img
    [ -f "$snapimg" ] || { bad "$snapimg missing"; continue; }
    read -r t0 t1 <<<"${WIN[$s]}"
    # read-only loop device straight on the snapshot image
    loop_attach "$snapimg" -r; rdev=$LOOP_DEV
    check_eq "$(blockdev --getsize64 "$rdev")" $((256 * M)) "size of the read-only loop device on $s"
    check_eq "$(cat "/sys/block/${rdev#/dev/}/ro")" 1 "read-only flag of the loop device on $s"
    losetup -d "$rdev"
    # a copy: journal replay, then clean
    t_cp0=$(date +%s%N)
    timeout 120 cp --sparse=always "$snapimg" "$s.img" || fail "cp --sparse=always of $snapimg failed"
    info "  $s: copied out in $(( ($(date +%s%N) - t_cp0) / 1000000 )) ms ($(du -k "$s.img" | cut -f1) KiB used)"
    # -p (preen): what boot does after a crash; it fixes only what a crash may leave (journal replay,
    # orphans, summary counters) and exits 4 on anything else
    rc=0; out=$(timeout 120 e2fsck -fp "$s.img" 2>&1) || rc=$?
    [ "$rc" -le 1 ] || bad "e2fsck -fp (journal replay + preen) on a copy of $s exit $rc:"$'\n'"$out"
    rc=0; out=$(timeout 120 e2fsck -fn "$s.img" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || bad "e2fsck -fn after journal replay on a copy of $s exit $rc:"$'\n'"$out"
    loop_attach "$s.img" -r; cdev=$LOOP_DEV
    mkdir -p "m-$s"
    if mount -o ro "$cdev" "m-$s"; then
        out=$(python3 "$SW" fscheck "m-$s" fs.log "$t0" "$t1" 2>&1) || bad "files in snapshot $s are not an instant of the workload:"$'\n'"$out"
        indent "[$T_NAME]     $s: " "$out"
        umount "m-$s"
    else
        bad "the repaired copy of $s does not mount"
    fi
    losetup -d "$cdev"
done

info "  clone of e1, repaired in place on a loop device"
e1md5=$(md5sum < "$MNT/.snapshots/e1/e.img")
must tcli clone e1/e eclone
loop_attach "$MNT/eclone.img"; cdev=$LOOP_DEV
rc=0; out=$(timeout 120 e2fsck -fp "$cdev" 2>&1) || rc=$?
[ "$rc" -le 1 ] || bad "e2fsck -fp on clone eclone exit $rc:"$'\n'"$out"
rc=0; out=$(timeout 120 e2fsck -fn "$cdev" 2>&1) || rc=$?
[ "$rc" -eq 0 ] || bad "e2fsck -fn on clone eclone after replay exit $rc:"$'\n'"$out"
mkdir -p m-clone
if mount "$cdev" m-clone; then
    read -r t0 t1 <<<"${WIN[e1]}"
    out=$(python3 "$SW" fscheck m-clone fs.log "$t0" "$t1" 2>&1) || bad "files in clone eclone:"$'\n'"$out"
    indent "[$T_NAME]     eclone: " "$out"
    echo scribble > m-clone/new-in-clone
    umount m-clone
else
    bad "clone eclone does not mount after e2fsck"
fi
losetup -d "$cdev"
check_eq "$(md5sum < "$MNT/.snapshots/e1/e.img")" "$e1md5" "snapshot e1 after its clone was repaired and written"

stop_tessera
fsck_clean "after the consistency cases"
SNAP_SUMMARY="$checked block-level snapshots checked, $in_flight_total in-flight blocks classified"
SNAP_EXTRA=",\"snapshots_checked\":$checked"
finish

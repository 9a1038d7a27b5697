#!/usr/bin/env bash
# Continuous data protection on a real mount:
#   - pattern writes with recorded times (several inside one second, others seconds apart): the image
#     MOUNT/.cdp/vm@TIME.img at each time equals the image saved right then (cmp), also through
#     `cp --sparse=always`, `qemu-img convert` and a read-only loop device, and by a time with an offset;
#   - a mark (MOUNT/.cdp/vm@NAME.img), `ls MOUNT/.cdp`, `cdp status`;
#   - restore --as and in place (refused while the image is open);
#   - kill -9 of the daemon and remount: every instant up to the last fsync is intact;
#   - bad input: one line, the documented exit code (or errno for paths), nothing changed;
#   - ext4 on a loop device over a protected volume (of another domain: MOUNT/ops/.cdp) under a continuous
#     writer: the image at random instants mounts (journal replay) and passes e2fsck -fn; a diff between
#     two snapshots (one taken mid-write) applied over the first gives the second;
#   - disable frees the journal.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 qemu-img cmp losetup mkfs.ext4 e2fsck
M=$((1024 * 1024))

new_data_dir
start_tessera --no-init
export TESSERA_DATA="$DATA"
must tcli volume create vm --size 16M
write_random "$MNT/vm.img" 0 $((4 * M)) 1           # before protection: the first base holds it
must tcli cdp enable vm --window 1h --max-size 1G
cp --sparse=always "$MNT/vm.img" exp.pre

now() { date -u +%Y-%m-%dT%H:%M:%S.%NZ; }
# step I SYNC: a pattern write (a few 4K blocks and one 1M run), then the instant and the image then.
declare -a T=()
step() {
    py '
import ctypes, os, random, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
p, i, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
r = random.Random(i)
fd = os.open(p, os.O_WRONLY)
for _ in range(4):
    os.pwrite(fd, bytes([i + 1]) * 4096, r.randrange(0, 4096) * 4096)
os.pwrite(fd, r.randbytes(1 << 20), r.randrange(0, 15) << 20)
if i % 3 == 2:
    if libc.fallocate(fd, 0x03, r.randrange(0, 16) << 20, 1 << 19) != 0:   # PUNCH_HOLE | KEEP_SIZE
        sys.exit("punch hole: errno %d" % ctypes.get_errno())
if sync:
    os.fsync(fd)
os.close(fd)
' "$MNT/vm.img" "$1" "${2:-0}"
    T[$1]=$(now)
    cp --sparse=always "$MNT/vm.img" "exp.$1"
}

info "pattern writes with recorded times"
for i in 0 1 2 3; do step "$i"; done               # inside one second
sleep 1.1
step 4 1
must tcli cdp mark vm before-upgrade
MARK_EXP=exp.4
sleep 1.1
for i in 5 6; do step "$i"; sleep 0.6; done

check_image() {   # I: the image at T[I] equals exp.I
    local img="$MNT/.cdp/vm@${T[$1]}.img"
    cmp "$img" "exp.$1" || fail "image at ${T[$1]} (step $1) differs from the image saved then"
}
for i in 0 1 2 3 4 5 6; do check_image "$i"; done
cmp "$MNT/.cdp/vm@before-upgrade.img" "$MARK_EXP" || fail "the mark's image differs"
# The same instant with an offset (+02:00) names the same image.
OFFSET_T=$(py '
import sys
t = sys.argv[1]
h = int(t[11:13]) + 2
print(t[:11] + "%02d" % (h % 24) + t[13:-1] + "+02:00") if h < 24 else print(t)
' "${T[2]}")
cmp "$MNT/.cdp/vm@$OFFSET_T.img" exp.2 || fail "the image at $OFFSET_T differs from the one at ${T[2]}"

info "cp --sparse=always, qemu-img convert, losetup -r"
cp --sparse=always "$MNT/.cdp/vm@${T[3]}.img" copy3.img
cmp copy3.img exp.3 || fail "cp --sparse=always of a .cdp image differs"
must qemu-img convert -f raw -O qcow2 "$MNT/.cdp/vm@${T[5]}.img" conv5.qcow2
must qemu-img compare -f raw -F qcow2 exp.5 conv5.qcow2
LOOP=$(losetup -r -f --show "$MNT/.cdp/vm@${T[1]}.img") || fail "losetup -r of a .cdp image failed"
defer losetup -d "$LOOP"
cmp "$LOOP" exp.1 || fail "the loop device over a .cdp image differs"
losetup -d "$LOOP"

info "ls .cdp, status"
LISTING=$(ls "$MNT/.cdp")
grep -qxF "vm@before-upgrade.img" <<<"$LISTING" || fail "ls .cdp does not list the mark: $LISTING"
[ "$(grep -c '^vm@20.*Z\.img$' <<<"$LISTING")" = 1 ] || fail "ls .cdp does not list vm at its window start: $LISTING"
START=$(grep '^vm@20' <<<"$LISTING")
cmp "$MNT/.cdp/$START" exp.pre || fail "the image at the window start ($START) is not the volume at enable"
STATUS=$(tcli cdp status vm --json)
[ "$(json 'd[0]["marks"][0]["name"]' <<<"$STATUS")" = before-upgrade ] || fail "cdp status lacks the mark: $STATUS"
[ "$(json 'd[0]["retainedBytes"] > 7 * 1048576' <<<"$STATUS")" = true ] || fail "retained bytes too small: $STATUS"

info "bad input"
expect_fail --code 4 tcli cdp enable vm
expect_fail --code 2 tcli cdp enable vm --window 0s
expect_fail --code 2 tcli cdp enable vm --window 99999d
expect_fail --code 2 tcli cdp enable vm --max-size 0
expect_fail --code 3 tcli cdp enable nope
expect_fail --code 2 tcli cdp restore vm --at yesterday --as x
expect_fail --code 2 tcli cdp restore vm --at 2999-01-01T00:00:00Z --as x
expect_fail --code 2 tcli cdp restore vm --at 2001-01-01T00:00:00Z --as x
expect_fail --code 3 tcli cdp restore vm --mark nope --as x
expect_fail --code 3 tcli cdp restore nope --at "${T[1]}" --as x
expect_fail --code 4 tcli cdp restore vm --at "${T[1]}" --as vm
expect_fail --code 4 tcli cdp mark vm before-upgrade
expect_fail --code 3 tcli cdp status nope
expect_fail --code 5 tcli volume delete vm
has_volume x && fail "a refused restore created a volume"
for bad in "vm@yesterday.img" "vm@2999-01-01T00:00:00Z.img" "nope@${T[1]}.img" "vm@2026-13-01T00:00:00Z.img"; do
    stat "$MNT/.cdp/$bad" >/dev/null 2>&1 && fail ".cdp/$bad exists"
done
: > "$MNT/.cdp/vm@${T[1]}.img" 2>/dev/null && fail "a .cdp image opened for writing"
true

info "restore --as"
must tcli cdp restore vm --at "${T[2]}" --as r2
cmp "$MNT/r2.img" exp.2 || fail "restore --as differs from the image at ${T[2]}"
must tcli cdp restore vm --mark before-upgrade --as r4
cmp "$MNT/r4.img" exp.4 || fail "restore --mark --as differs from the mark's image"

# apply_diff DIFF BASE OUT: OUT = a copy of BASE with DIFF's data ranges (SEEK_DATA) written over it; fails
# when DIFF has no hole at all.
apply_diff() {
    py '
import os, shutil, sys
diff, base, out = sys.argv[1], sys.argv[2], sys.argv[3]
shutil.copyfile(base, out)
fd = os.open(diff, os.O_RDONLY)
size = os.fstat(fd).st_size
data = 0
with open(out, "r+b") as f:
    at = 0
    while at < size:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        f.seek(start)
        f.write(os.pread(fd, end - start, start))
        data += end - start
        at = end
if data >= size:
    sys.exit("the diff has no holes")
' "$1" "$2" "$3"
}

info "a diff (.diff/FROM..TO/vm.img) applied over FROM gives TO"
DIFF="$MNT/.diff/before-upgrade..${T[6]}/vm.img"
apply_diff "$DIFF" "$MARK_EXP" rebuilt6.img
cmp rebuilt6.img exp.6 || fail "exp.4 + the diff before-upgrade..T6 differs from the image at T6"
DIFF_LIST=$(ls "$MNT/.diff/before-upgrade..${T[6]}")
[ "$DIFF_LIST" = vm.img ] || fail "the diff directory lists '$DIFF_LIST', not vm.img"
stat "$MNT/.diff/${T[6]}..before-upgrade/vm.img" >/dev/null 2>&1 && fail "a diff from after its end exists"

info "kill -9 and remount keep every instant up to the last fsync"
step 7 1
SYNCED=7
step 8 0                                          # not fsynced: may or may not survive
kill_tessera
start_tessera --no-init
for i in 0 3 4 6 "$SYNCED"; do check_image "$i"; done
cmp "$MNT/.cdp/vm@before-upgrade.img" "$MARK_EXP" || fail "the mark's image changed across the crash"

info "restore in place (refused while open)"
exec 3<"$MNT/vm.img"
expect_fail --code 5 tcli cdp restore vm --at "${T[6]}"
exec 3<&-
must tcli cdp restore vm --at "${T[6]}"
cmp "$MNT/vm.img" exp.6 || fail "restore in place differs from the image at ${T[6]}"
check_image 7                                     # the instant before the restore is still there

info "ext4 under a continuous writer (in domain ops): the image at random instants passes e2fsck after journal replay"
must tcli domain create ops
must tcli volume create fsv --size 64M --domain ops
expect_fail --code 3 tcli cdp enable fsv --window 1h        # not in the default domain
must tcli cdp enable fsv --window 1h --domain ops
FSDEV=$(losetup -f --show "$MNT/ops/fsv.img") || fail "losetup of ops/fsv.img failed"
defer losetup -d "$FSDEV"
mkfs.ext4 -q -F "$FSDEV" >/dev/null 2>&1 || fail "mkfs.ext4 on fsv.img failed"
mkdir -p fsmnt
mount -t ext4 "$FSDEV" fsmnt || fail "cannot mount the ext4 of fsv.img"
defer umount -l "$PWD/fsmnt"
( i=0; while [ ! -e stop.writer ]; do
      i=$((i + 1))
      head -c $(( (i % 7 + 1) * 37 * 1024 )) /dev/urandom > "fsmnt/f$((i % 40))" || exit 1
      if [ $((i % 5)) -eq 0 ]; then rm -f "fsmnt/f$(( (i + 13) % 40 ))"; fi
      if [ $((i % 9)) -eq 0 ]; then
          mkdir -p "fsmnt/d$((i % 11))" || exit 1
          mv -f "fsmnt/f$((i % 40))" "fsmnt/d$((i % 11))/" || exit 1
      fi
      if [ $((i % 4)) -eq 0 ]; then sync -f fsmnt/. || exit 1; fi
  done
  exit 0 ) &
FSW=$!
defer kill "$FSW"
declare -a FT=()
for _ in 1 2 3; do
    sleep "0.$((RANDOM % 9 + 1))"
    FT+=("$(now)")
done
must tcli snapshot create fsv --name e1 --domain ops   # while the writer writes
sleep 0.5
touch stop.writer
wait "$FSW" || fail "the ext4 writer failed"
umount fsmnt
losetup -d "$FSDEV"
must tcli snapshot create fsv --name e2 --domain ops
apply_diff "$MNT/ops/.diff/e1..e2/fsv.img" "$MNT/ops/.snapshots/e1/fsv.img" e2.img
cmp e2.img "$MNT/ops/.snapshots/e2/fsv.img" || fail "snapshot e1 + the diff e1..e2 differs from snapshot e2"
for t in "${FT[@]}"; do
    cp --sparse=always "$MNT/ops/.cdp/fsv@$t.img" at.img || fail "cannot copy ops/.cdp/fsv@$t.img"
    D2=$(losetup -f --show at.img) || fail "losetup of the copy at $t failed"
    mount -t ext4 -o ro "$D2" fsmnt || { losetup -d "$D2"; fail "the ext4 at $t does not mount (journal replay)"; }
    umount fsmnt
    losetup -d "$D2"
    out=$(e2fsck -fn at.img 2>&1) || fail "e2fsck -fn of the image at $t after journal replay: $(tail -n 8 <<<"$out")"
done
OPS_CDP=$(ls "$MNT/ops/.cdp")
[[ "$OPS_CDP" == fsv@*.img ]] || fail "ls MOUNT/ops/.cdp lists '$OPS_CDP', not fsv's window start"
compgen -G "$MNT/.cdp/fsv@*" >/dev/null && fail "the default domain's .cdp lists ops's fsv"
[ -e "$MNT/.cdp/fsv@${FT[0]}.img" ] && fail "ops's fsv is reachable through the default domain's .cdp"
[ "$(ls "$MNT/ops/.diff/${FT[0]}..${FT[2]}")" = fsv.img ] || fail "MOUNT/ops/.diff/T0..T2 does not list fsv.img"
[ "$(json '[i["volume"] for i in d]' <<<"$(tcli cdp status --domain ops --json)")" = '["fsv"]' ] ||
    fail "cdp status --domain ops does not list exactly fsv"
must tcli snapshot delete e1 --domain ops
must tcli snapshot delete e2 --domain ops
must tcli cdp disable fsv --domain ops

info "disable frees the journal"
VID=$(json '[v["id"] for v in d if v["name"] == "vm"][0]' <<<"$(tcli volume list --json)")
[ -d "$DATA/cdp/$VID" ] || fail "no journal directory $DATA/cdp/$VID"
must tcli cdp disable vm
[ -e "$DATA/cdp/$VID" ] && fail "cdp disable left $DATA/cdp/$VID"
stat "$MNT/.cdp/vm@${T[6]}.img" >/dev/null 2>&1 && fail "a .cdp image outlived cdp disable"
SNAPS=$(tcli snapshot list --json)
[ "$(json 'len(d)' <<<"$SNAPS")" = 0 ] || fail "cdp left snapshots behind: $SNAPS"
[ -z "$(ls "$DATA/cdp")" ] || fail "cdp disable left files in $DATA/cdp: $(ls "$DATA/cdp")"
expect_fail --code 3 tcli cdp disable vm
stop_tessera
must tcli cdp enable vm --window 30m              # on an unmounted data directory
must tcli cdp status vm
must tcli cdp disable vm
pass

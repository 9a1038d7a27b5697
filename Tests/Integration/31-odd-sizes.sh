#!/usr/bin/env bash
# Images of any byte size: `cp` of a 1000-byte file, `truncate -s 1001` / `-s 4097` of an image with
# data (growing again reads zeros past the cut, also beside a snapshot taken before the cut, which keeps
# its bytes), an mmap write past an odd EOF (ftruncate up, write through the mapping, msync), `qemu-img
# info` and `qemu-img compare` on an odd-sized image, and `losetup -r` over one (the loop device sees the
# whole sectors and reads them right, buffered and with --direct-io). The CLI keeps asking for whole
# sectors (`volume create/resize --size 1001`: exit 2, nothing changed). Everything survives a remount.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 cp cmp truncate losetup blockdev qemu-img

M=$((1024 * 1024))

start_tessera
cs=$(tcli pool show default --json | json 'd["chunkSize"]')

# ---------------------------------------------------------------------------------------------------------
info "cp of a 1000-byte file"
head -c 1000 /dev/urandom > k.src
cp k.src "$MNT/k.img" || fail "cp of a 1000-byte file into the mount failed"
assert_eq "$(file_size "$MNT/k.img")" 1000 "k.img size"
assert_eq "$(volume_field k size)" 1000 "volume k size"
cmp k.src "$MNT/k.img" || fail "k.img differs from its 1000-byte source"

# ---------------------------------------------------------------------------------------------------------
info "truncate -s 1001 and -s 4097 of an image with data, then grow"
src_len=$((2 * cs + 3 * M))
truncate -s "$src_len" t.src && write_random t.src 0 "$src_len" 11
cp t.src "$MNT/t.img"
must tcli snapshot create t --name before-cut >/dev/null
truncate -s 1001 "$MNT/t.img" || fail "truncate -s 1001 of an image failed"
assert_eq "$(file_size "$MNT/t.img")" 1001 "t.img after truncate -s 1001"
assert_eq "$(volume_field t size)" 1001 "volume t size after truncate -s 1001"
cmp -n 1001 t.src "$MNT/t.img" || fail "the first 1001 bytes of t.img changed"
[ $(( $(file_blocks "$MNT/t.img") * 512 )) -le "$cs" ] || fail "st_blocks of a 1001-byte image is more than one chunk: $(file_blocks "$MNT/t.img")"
truncate -s 4097 "$MNT/t.img" || fail "truncate -s 4097 of an image failed"
assert_eq "$(file_size "$MNT/t.img")" 4097 "t.img after truncate -s 4097"
cmp -n 1001 t.src "$MNT/t.img" || fail "t.img head changed by growing to 4097"
is_zero "$MNT/t.img" 1001 $((4097 - 1001)) || fail "after truncate 1001 then 4097, bytes 1001..4097 are not zeros"
# grow by a write past the end: the gap (old data of the cut chunk and beyond) reads zeros
printf 'Z' | dd of="$MNT/t.img" bs=1 seek=$((cs + 12345)) conv=notrunc status=none
assert_eq "$(file_size "$MNT/t.img")" $((cs + 12346)) "t.img after a write past EOF"
is_zero "$MNT/t.img" 1001 $((cs + 12345 - 1001)) || fail "a write past an odd EOF: the gap is not zeros"
# the snapshot taken before the cut still reads every old byte
cmp "$MNT/.snapshots/before-cut/t.img" t.src || fail "the snapshot taken before the cut changed"
# an odd cut at the end of a full chunk, grown by truncate (the same chunk's tail)
cp t.src "$MNT/u.img"
truncate -s $((cs - 1)) "$MNT/u.img"
truncate -s "$src_len" "$MNT/u.img"
cmp -n $((cs - 1)) t.src "$MNT/u.img" || fail "u.img head changed"
is_zero "$MNT/u.img" $((cs - 1)) $((src_len - cs + 1)) || fail "cut at chunk end - 1, regrown: not zeros"
# ftruncate and O_TRUNC through python (what a file exerciser does)
py '
import os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDWR)
for s in (4097, 1, 513, 1000001, 12345):
    os.ftruncate(fd, s)
    if os.fstat(fd).st_size != s: sys.exit(f"ftruncate({s}): fstat says {os.fstat(fd).st_size}")
os.close(fd)
fd = os.open(p, os.O_RDWR | os.O_TRUNC)
if os.fstat(fd).st_size != 0: sys.exit("open(O_TRUNC) did not empty the image")
os.pwrite(fd, b"x" * 777, 0)
os.close(fd)
if os.path.getsize(p) != 777: sys.exit(f"size after a 777-byte write: {os.path.getsize(p)}")
' "$MNT/u.img" || fail "ftruncate to odd sizes / O_TRUNC"
assert_eq "$(volume_field u size)" 777 "volume u size"

# ---------------------------------------------------------------------------------------------------------
info "mmap write past an odd EOF"
head -c 5001 /dev/urandom > m.src
cp m.src "$MNT/m.img"
py '
import mmap, os, random, sys
p, out = sys.argv[1], sys.argv[2]
r = random.Random(5)
fd = os.open(p, os.O_RDWR)
old = os.fstat(fd).st_size
new = old + 70001                       # odd too
os.ftruncate(fd, new)
data = r.randbytes(new - 4000)          # from inside the old last page to the new EOF
with mmap.mmap(fd, new, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
    m[4000:new] = data
    m.flush()
os.close(fd)
with open(out, "r+b") as f:             # the same on the local copy: the expected image
    f.truncate(new); f.seek(4000); f.write(data)
' "$MNT/m.img" m.src || fail "mmap write past an odd EOF failed"
assert_eq "$(file_size "$MNT/m.img")" $((5001 + 70001)) "m.img size after the mmap write"
# read through O_DIRECT: what the daemon holds, not the page cache
py '
import mmap, os, sys
p, n = sys.argv[1], int(sys.argv[2])
fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, (n + 4095) // 4096 * 4096)
got = os.preadv(fd, [buf], 0)
if got != n: sys.exit(f"O_DIRECT read returned {got} bytes, the file has {n}")
sys.stdout.buffer.write(buf[:n])
' "$MNT/m.img" $((5001 + 70001)) > m.back || fail "O_DIRECT read of m.img"
cmp m.src m.back || fail "mmap write past an odd EOF: the daemon's bytes differ"

# ---------------------------------------------------------------------------------------------------------
info "qemu-img on an odd-sized image"
head -c $((M + 1001)) /dev/urandom > q.src
cp q.src "$MNT/q.img"
local_j=$(qemu-img info --output=json q.src) || fail "qemu-img info on the local copy failed"
mnt_j=$(qemu-img info --output=json "$MNT/q.img") || fail "qemu-img info on an odd-sized image failed"
assert_eq "$(json 'd["format"]' <<<"$mnt_j")" raw "qemu-img info format"
assert_eq "$(json 'd["virtual-size"]' <<<"$mnt_j")" "$(json 'd["virtual-size"]' <<<"$local_j")" \
    "qemu-img info virtual-size (as for the same file on a local filesystem)"
must qemu-img compare -f raw -F raw q.src "$MNT/q.img"

# ---------------------------------------------------------------------------------------------------------
info "losetup -r over an odd-sized image: the whole sectors"
lsize=$((3 * M + 1001))
head -c "$lsize" /dev/urandom > l.src
cp l.src "$MNT/l.img"
sectors=$((lsize / 512 * 512))
# Detach at exit only while the device is still ours (a loop number is reused at once once detached).
detach_if_ours() { [ "$(losetup -n -O BACK-FILE "$1" 2>/dev/null)" = "$2" ] && losetup -d "$1"; }
for dio in off on; do
    dev=$(losetup -f --show -r --direct-io="$dio" "$MNT/l.img") || fail "losetup -r --direct-io=$dio failed"
    defer detach_if_ours "$dev" "$MNT/l.img"
    assert_eq "$(blockdev --getsize64 "$dev")" "$sectors" "loop device size over a $lsize-byte image (dio $dio)"
    cmp -n "$sectors" l.src "$dev" || fail "the loop device (dio $dio) reads other bytes than the image's whole sectors"
    dd if="$dev" of=l.last bs=512 skip=$((sectors / 512 - 1)) count=1 iflag=direct status=none ||
        fail "O_DIRECT read of the loop device's last sector (dio $dio) failed"
    cmp l.last <(tail -c +$((sectors - 511)) l.src | head -c 512) || fail "last sector through the loop device (dio $dio)"
    losetup -d "$dev"
done
assert_eq "$(file_size "$MNT/l.img")" "$lsize" "l.img size after the loop devices"
cmp l.src "$MNT/l.img" || fail "l.img changed under a read-only loop device"

# ---------------------------------------------------------------------------------------------------------
info "the CLI keeps asking for whole sectors"
expect_fail --code 2 tcli volume resize k --size 1001
grep -q "multiple of 512" <<<"$EF_ERR" || fail "volume resize --size 1001: unexpected message: $EF_ERR"
expect_fail --code 2 tcli volume create odd --size 1000
has_volume odd && fail "a refused volume create made volume odd"
assert_eq "$(volume_field k size)" 1000 "volume k size after the refused resize"
tcli volume resize --help | grep -q "512-byte sectors" || fail "volume resize --help does not say whole sectors"
tcli volume create --help | grep -q "512-byte sectors" || fail "volume create --help does not say whole sectors"

# ---------------------------------------------------------------------------------------------------------
info "remount: odd sizes and bytes survive"
restart_tessera
assert_eq "$(file_size "$MNT/k.img")" 1000 "k.img size after remount"
cmp k.src "$MNT/k.img" || fail "k.img after remount"
assert_eq "$(file_size "$MNT/t.img")" $((cs + 12346)) "t.img size after remount"
is_zero "$MNT/t.img" 1001 $((cs + 12345 - 1001)) || fail "t.img's regrown range after remount"
cmp "$MNT/.snapshots/before-cut/t.img" t.src || fail "the snapshot after remount"
cmp m.src "$MNT/m.img" || fail "m.img after remount"
assert_eq "$(file_size "$MNT/u.img")" 777 "u.img size after remount"
stop_tessera
pass

#!/usr/bin/env bash
# Plain file tools on images: sparse cp in and out, SEEK_DATA/SEEK_HOLE, truncate grow/shrink, punch
# hole, zero range, fallocate, writes past EOF, rename, unlink, chown/chmod, xattrs, statfs, and that all
# of it survives unmount + remount.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 cp cmp truncate fallocate md5sum

G=$((1024 * 1024 * 1024))
M=$((1024 * 1024))

start_tessera

info "statfs"
read -r bsize blocks bfree <<<"$(stat -f -c '%S %b %f' "$MNT")"
[ "$blocks" -gt 0 ] || fail "statfs on the mount reports 0 blocks"
[ "$bfree" -le "$blocks" ] || fail "statfs: free $bfree > total $blocks"
read -r fbs fblocks <<<"$(stat -f -c '%S %b' "$DATA/stores/default")"
fs_total=$((fbs * fblocks))
[ $((bsize * blocks)) -le $((fs_total + fs_total / 10)) ] || fail "statfs capacity $((bsize*blocks)) exceeds the backing filesystem's $fs_total"
df "$MNT" >/dev/null || fail "df on the mount failed"

# ---------------------------------------------------------------------------------------------------------
info "cp --sparse=always in and out"
truncate -s 1G src.img
write_random src.img 0 $M 1
write_random src.img $((100 * M + 4096)) $((3 * M)) 2
write_random src.img $((700 * M + 12345)) 777 3
write_random src.img $((G - 512 * 1024)) $((512 * 1024)) 4
timeout 120 cp --sparse=always src.img "$MNT/s.img" || fail "cp --sparse=always into the mount failed"
has_volume s || fail "cp into the mount did not create volume s"
assert_eq "$(file_size "$MNT/s.img")" "$G" "s.img size"
cmp src.img "$MNT/s.img" || fail "s.img differs from its source"
cs=$(chunk_size s)
blocks=$(file_blocks "$MNT/s.img")
[ $((blocks * 512)) -le $((8 * cs + 8 * M)) ] || fail "st_blocks of s.img is $blocks (x512) for ~5 MiB of data at 4 places (chunk $cs): not thin"
[ "$blocks" -gt 0 ] || fail "st_blocks of s.img is 0 although it holds data"
du_k=$(du -k "$MNT/s.img" | cut -f1)
[ "$du_k" -lt $((512 * 1024)) ] || fail "du says s.img uses ${du_k}K"
assert_eq "$(volume_field s allocated)" $((blocks * 512)) "volume allocated vs st_blocks*512"

info "SEEK_DATA / SEEK_HOLE"
py '
import errno, os, sys
p, cs, G, M = sys.argv[1], int(sys.argv[2]), 1 << 30, 1 << 20
fd = os.open(p, os.O_RDONLY)
def seek(off, how):
    try: return os.lseek(fd, off, how)
    except OSError as e:
        if e.errno == errno.ENXIO: return None
        raise
def down(x): return x - x % cs
problems = []
def check(what, got, lo, hi):
    if got is None or not (lo <= got <= hi): problems.append(f"{what}: got {got}, want [{lo}, {hi}]")
check("SEEK_DATA 0", seek(0, os.SEEK_DATA), 0, 0)
check("SEEK_HOLE 0", seek(0, os.SEEK_HOLE), M, max(M, cs))
d = 100 * M + 4096
check("SEEK_DATA after first extent", seek(max(M, cs) + 0, os.SEEK_DATA), down(d), d)
h = seek(d, os.SEEK_HOLE)
check("SEEK_HOLE after second extent", h, d + 3 * M, down(d + 3 * M - 1) + cs)
check("SEEK_DATA for the 777 bytes", seek(h, os.SEEK_DATA), down(700 * M + 12345), 700 * M + 12345)
check("SEEK_DATA for the tail", seek(700 * M + 12345 + cs, os.SEEK_DATA), down(G - 512 * 1024), G - 512 * 1024)
check("SEEK_HOLE at the tail is EOF", seek(G - 4096, os.SEEK_HOLE), G, G)
r = seek(G, os.SEEK_DATA)
if r is not None: problems.append(f"SEEK_DATA at EOF should be ENXIO, got {r}")
if problems: sys.exit("\n".join(problems))
' "$MNT/s.img" "$cs" || fail "SEEK_DATA/SEEK_HOLE answers are wrong (above)"
must tcli volume create empty --size 1G
py '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    r = os.lseek(fd, 0, os.SEEK_DATA); sys.exit(f"SEEK_DATA in a never-written volume returned {r}, want ENXIO")
except OSError as e:
    if e.errno != errno.ENXIO: raise
h = os.lseek(fd, 0, os.SEEK_HOLE)
if h != 0: sys.exit(f"SEEK_HOLE at 0 of an empty volume returned {h}, want 0")
' "$MNT/empty.img" || fail "SEEK_DATA/SEEK_HOLE on an empty volume"
tcli volume delete empty >/dev/null

timeout 120 cp --sparse=always "$MNT/s.img" out.img || fail "cp --sparse=always out of the mount failed"
cmp src.img out.img || fail "copy out differs from the source"
[ "$(du -k out.img | cut -f1)" -lt $((64 * 1024)) ] || fail "copy out of the mount is not sparse: $(du -k out.img)"

info "dense copy (copy_file_range) in and out"
head -c $((20 * M)) /dev/urandom > dense.bin
timeout 120 cp dense.bin "$MNT/dense.img" || fail "cp of a dense file into the mount failed"
assert_eq "$(file_size "$MNT/dense.img")" $((20 * M)) "dense.img size"
cmp dense.bin "$MNT/dense.img" || fail "dense.img differs"
py 'import os,sys; i=os.open(sys.argv[1],os.O_RDONLY); o=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT,0o644)
n=os.path.getsize(sys.argv[1]); off=0
while off<n:
    k=os.copy_file_range(i,o,n-off,off,off)
    if k<=0: sys.exit("copy_file_range returned %d"%k)
    off+=k' "$MNT/dense.img" "$MNT/dense2.img" || fail "copy_file_range mount->mount failed"
cmp dense.bin "$MNT/dense2.img" || fail "copy_file_range mount->mount: dense2.img differs"
timeout 60 cp "$MNT/dense.img" dense.out || fail "cp of dense.img out failed"
cmp dense.bin dense.out || fail "dense copy out differs"

# ---------------------------------------------------------------------------------------------------------
info "truncate grow and shrink"
truncate -s 2G "$MNT/s.img"
assert_eq "$(file_size "$MNT/s.img")" $((2 * G)) "s.img after truncate -s 2G"
assert_eq "$(volume_field s size)" $((2 * G)) "volume s size after truncate -s 2G"
cmp -n "$G" src.img "$MNT/s.img" || fail "data changed by growing"
is_zero "$MNT/s.img" "$G" "$G" || fail "grown range of s.img is not zeros"

truncate -s 8M t.src && write_random t.src 0 $((8 * M)) 5
cp t.src "$MNT/t.img"
b_full=$(file_blocks "$MNT/t.img")
truncate -s 1M "$MNT/t.img"
assert_eq "$(file_size "$MNT/t.img")" $M "t.img after shrink"
b_small=$(file_blocks "$MNT/t.img")
[ "$b_small" -lt "$b_full" ] || fail "shrinking 8M->1M did not reduce st_blocks ($b_full -> $b_small)"
truncate -s 8M "$MNT/t.img"
cmp -n $M t.src "$MNT/t.img" || fail "first 1M of t.img changed by shrink+grow"
is_zero "$MNT/t.img" $M $((7 * M)) || fail "after shrink to 1M and grow to 8M, the regrown range is not zeros"
# unaligned shrink inside a chunk then grow: the cut-off tail of that chunk must read zeros too
cp t.src "$MNT/t2.img"
truncate -s $((3 * M + 4096)) "$MNT/t2.img"
truncate -s 8M "$MNT/t2.img"
cmp -n $((3 * M + 4096)) t.src "$MNT/t2.img" || fail "t2.img head changed"
is_zero "$MNT/t2.img" $((3 * M + 4096)) $((5 * M - 4096)) || fail "unaligned shrink then grow: regrown range is not zeros"

# ---------------------------------------------------------------------------------------------------------
info "fallocate punch hole and zero range"
cs=$(tcli pool show default --json | json 'd["chunkSize"]')
# whole chunks: an image of 4 chunks of data, punch chunks 1 and 2
truncate -s $((4 * cs)) p1.src && write_random p1.src 0 $((4 * cs)) 6
cp p1.src "$MNT/p1.img"
pb0=$(file_blocks "$MNT/p1.img")
[ $((pb0 * 512)) -ge $((4 * cs)) ] || fail "4 chunks of random data but st_blocks*512 = $((pb0 * 512)) < $((4 * cs))"
fallocate -p -o "$cs" -l $((2 * cs)) "$MNT/p1.img" || fail "fallocate --punch-hole failed"
assert_eq "$(file_size "$MNT/p1.img")" $((4 * cs)) "size after punch (keep size)"
is_zero "$MNT/p1.img" "$cs" $((2 * cs)) || fail "punched range does not read zeros"
cmp -n "$cs" p1.src "$MNT/p1.img" || fail "data before the punched range changed"
cmp -i $((3 * cs)) p1.src "$MNT/p1.img" || fail "data after the punched range changed"
pb1=$(file_blocks "$MNT/p1.img")
[ $(( (pb0 - pb1) * 512 )) -ge $((2 * cs)) ] || fail "punching 2 whole chunks reduced st_blocks only from $pb0 to $pb1 (chunk $cs)"
# partial chunks
cp t.src "$MNT/p.img"
# unaligned punch inside a chunk
fallocate -p -o $((5 * M + 4096)) -l 12288 "$MNT/p.img"
is_zero "$MNT/p.img" $((5 * M + 4096)) 12288 || fail "small punch does not read zeros"
assert_eq "$(range_md5 "$MNT/p.img" $((5 * M)) 4096)" "$(range_md5 t.src $((5 * M)) 4096)" "4K before the small punch"
assert_eq "$(range_md5 "$MNT/p.img" $((5 * M + 16384)) $((M - 16384)))" "$(range_md5 t.src $((5 * M + 16384)) $((M - 16384)))" "rest of chunk after the small punch"
# zero range
fallocate -z -o $((6 * M + 512)) -l $((M + 1024)) "$MNT/p.img" || fail "fallocate --zero-range failed"
is_zero "$MNT/p.img" $((6 * M + 512)) $((M + 1024)) || fail "zeroed range does not read zeros"
assert_eq "$(range_md5 "$MNT/p.img" $((6 * M)) 512)" "$(range_md5 t.src $((6 * M)) 512)" "512 bytes before zero range"
assert_eq "$(range_md5 "$MNT/p.img" $((7 * M + 1536)) $((M - 1536)))" "$(range_md5 t.src $((7 * M + 1536)) $((M - 1536)))" "bytes after zero range"
assert_eq "$(file_size "$MNT/p.img")" $((8 * M)) "size after zero range"
# punch of a whole image frees everything
fallocate -p -o 0 -l $((8 * M)) "$MNT/p.img"
is_zero "$MNT/p.img" 0 $((8 * M)) || fail "fully punched image is not zeros"
assert_eq "$(file_blocks "$MNT/p.img")" 0 "st_blocks of a fully punched image"
# fallocate mode 0 (libvirt preallocation) grows the file
fallocate -l 64M "$MNT/f.img" || fail "fallocate -l 64M on a new image failed"
assert_eq "$(file_size "$MNT/f.img")" $((64 * M)) "size after fallocate -l 64M"
is_zero "$MNT/f.img" 0 $((64 * M)) || fail "fallocated image is not zeros"
fallocate -n -o $((64 * M)) -l $((8 * M)) "$MNT/f.img" || fail "fallocate --keep-size failed"
assert_eq "$(file_size "$MNT/f.img")" $((64 * M)) "size after fallocate --keep-size"

# ---------------------------------------------------------------------------------------------------------
info "writes past EOF grow the image"
py '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.pwrite(fd, b"\x5a" * 65536, 0)
os.pwrite(fd, b"\xa5" * 65536, 10 * (1 << 20))
os.fsync(fd); os.close(fd)
' "$MNT/g.img"
assert_eq "$(file_size "$MNT/g.img")" $((10 * M + 65536)) "size after writing past EOF"
assert_eq "$(volume_field g size)" $((10 * M + 65536)) "volume g size after writing past EOF"
is_zero "$MNT/g.img" 65536 $((10 * M - 65536)) || fail "gap left by a write past EOF is not zeros"
assert_eq "$(range_md5 "$MNT/g.img" $((10 * M)) 65536)" "$(head -c 65536 /dev/zero | tr '\0' '\245' | md5sum | cut -d' ' -f1)" "data written past EOF"
dd if=/dev/urandom of=app.bin bs=64K count=16 status=none
cat app.bin >> "$MNT/g.img" || fail "append (O_APPEND) to an image failed"
assert_eq "$(file_size "$MNT/g.img")" $((10 * M + 65536 + M)) "size after append"
assert_eq "$(range_md5 "$MNT/g.img" $((10 * M + 65536)) $M)" "$(md5sum < app.bin | cut -d' ' -f1)" "appended data"

# ---------------------------------------------------------------------------------------------------------
info "rename and unlink"
sum=$(md5sum < "$MNT/dense.img")
mv "$MNT/dense.img" "$MNT/renamed.img" || fail "mv dense.img renamed.img failed"
[ -e "$MNT/dense.img" ] && fail "dense.img still exists after mv"
assert_eq "$(md5sum < "$MNT/renamed.img")" "$sum" "data after rename"
names=$(volume_names)
grep -qx renamed <<<"$names" || fail "volume list lacks 'renamed' after mv"
grep -qx dense <<<"$names" && fail "volume list still has 'dense' after mv"
expect_fail mv "$MNT/renamed.img" "$MNT/renamed.raw"       # names in the mount must end in .img
expect_fail mv "$MNT/renamed.img" "$MNT/.hidden.img"
[ -e "$MNT/renamed.img" ] || fail "a refused rename lost renamed.img"
expect_fail touch "$MNT/notanimage.txt"
expect_fail mkdir "$MNT/dir.img"
rm "$MNT/dense2.img" || fail "rm dense2.img failed"
[ -e "$MNT/dense2.img" ] && fail "dense2.img still exists after rm"
has_volume dense2 && fail "volume dense2 still listed after rm"
expect_fail rm "$MNT/nosuch.img"

# ---------------------------------------------------------------------------------------------------------
info "chown / chmod"
chown 1234:5678 "$MNT/renamed.img"
chmod 0640 "$MNT/renamed.img"
assert_eq "$(file_owner "$MNT/renamed.img") $(file_mode "$MNT/renamed.img")" "1234:5678 640" "owner/mode after chown/chmod"
assert_eq "$(volume_field renamed uid):$(volume_field renamed gid)" "1234:5678" "catalog uid:gid"
# open(O_CREAT) makes the image with the caller's mode & ~umask
(umask 027; py 'import os,sys; os.close(os.open(sys.argv[1], os.O_CREAT|os.O_WRONLY, 0o666))' "$MNT/um.img")
assert_eq "$(file_mode "$MNT/um.img")" 640 "mode of an image created with umask 027"

info "xattrs (trusted.libvirt.security.*, user.*)"
py '
import os, sys
p = sys.argv[1]
os.setxattr(p, "trusted.libvirt.security.dac", b"+0:+0")
os.setxattr(p, "trusted.libvirt.security.ref_dac", b"1")
os.setxattr(p, "user.note", b"hello")
assert os.getxattr(p, "trusted.libvirt.security.dac") == b"+0:+0", os.getxattr(p, "trusted.libvirt.security.dac")
names = set(os.listxattr(p))
want = {"trusted.libvirt.security.dac", "trusted.libvirt.security.ref_dac", "user.note"}
assert want <= names, names
os.setxattr(p, "user.note", b"changed")
assert os.getxattr(p, "user.note") == b"changed"
os.removexattr(p, "trusted.libvirt.security.ref_dac")
assert "trusted.libvirt.security.ref_dac" not in os.listxattr(p)
try:
    os.getxattr(p, "user.nosuch"); sys.exit("getxattr of a missing name succeeded")
except OSError as e:
    import errno
    assert e.errno == errno.ENODATA, e
try:
    os.setxattr(p, "user.note", b"x", os.XATTR_CREATE); sys.exit("XATTR_CREATE on an existing name succeeded")
except OSError as e:
    import errno
    assert e.errno == errno.EEXIST, e
' "$MNT/renamed.img" || fail "xattr behaviour (above)"
if command -v setfattr >/dev/null; then
    setfattr -n trusted.libvirt.security.selinux -v "system_u:object_r:svirt_image_t:s0" "$MNT/renamed.img" || fail "setfattr failed"
    assert_eq "$(getfattr --absolute-names -n trusted.libvirt.security.selinux --only-values "$MNT/renamed.img")" 'system_u:object_r:svirt_image_t:s0' "getfattr value"
    has_line "$(getfattr --absolute-names -d -m - "$MNT/renamed.img")" 'trusted.libvirt.security.dac="+0:+0"' || fail "getfattr -d does not list trusted.libvirt.security.dac"
else
    warn "setfattr/getfattr not installed (package attr); used python os.setxattr only"
fi

# ---------------------------------------------------------------------------------------------------------
info "unmount + remount: data, sizes, owners, modes identical"
state() {
    (cd "$MNT" && for f in *; do
        printf '%s %s %s %s %s\n' "$f" "$(stat -c '%s %u:%g %a' "$f")" "$(md5sum < "$f" | cut -d' ' -f1)" "$(stat -c %b "$f")" ""
    done)
}
before=$(state)
restart_tessera
after=$(state)
if [ "$after" != "$before" ]; then
    diff <(echo "$before") <(echo "$after") >&2 || true
    fail "state differs after remount (diff above: name size owner mode md5 blocks)"
fi
cmp src.img <(head -c "$G" "$MNT/s.img") || fail "s.img differs from its source after remount"
x=$(getfattr --absolute-names -n trusted.libvirt.security.dac --only-values "$MNT/renamed.img" 2>/dev/null || true)
[ "$x" = "+0:+0" ] || warn "xattr trusted.libvirt.security.dac did not survive remount (got '$x')"

info "rm deletes the volume for good"
rm "$MNT/s.img"
restart_tessera
[ -e "$MNT/s.img" ] && fail "s.img is back after remount"
has_volume s && fail "volume s is back after remount"

stop_tessera
pass

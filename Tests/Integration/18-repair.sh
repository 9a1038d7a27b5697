# 18-repair: a block that fails its checksum can be repaired, also under a snapshot.
#   A volume with 1 MiB of data and a snapshot s1 (which shares every chunk); one byte of one block of a
#   chunk file on the directory store flipped in place (as 97-pools' bitrot case does). Then:
#   - reading that block fails with EIO (live image and snapshot); a 512-byte write into it (not
#     covering it) fails with EIO too;
#   - scrub (mounted) exits 7 and names volume, byte range, the live image and s1, and the next step;
#   - dd rewriting exactly that block (O_DIRECT, conv=notrunc) succeeds; the live image reads back the
#     new data and every other byte; the snapshot still gives EIO there and the right data elsewhere;
#   - fsck (unmounted) exits 1 and reports the loss (volume, bytes, snapshot s1) and the next step;
#   - fsck --zero-unrecoverable without --repair is bad input (exit 2);
#   - fsck --repair --zero-unrecoverable zeroes the block, reports it ("zeroed:"), exits 0; fsck is then
#     clean; the snapshot image reads entirely (zeros at the block), the live image keeps its new data.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 dd md5sum

K=1024
M=$((1024 * 1024))
CS=$((64 * K))
BAD_CHUNK=3
BAD=$((BAD_CHUNK * CS + 4096))          # byte offset of the damaged block in the volume
BAD_BLOCK=$((BAD / 4096))

# pattern FILE SEED LEN: LEN random bytes from SEED
pattern() { py 'import random, sys; open(sys.argv[1], "wb").write(random.Random(int(sys.argv[2])).randbytes(int(sys.argv[3])))' "$@"; }
# md5 of LEN bytes at OFF of FILE (O_DIRECT when the 4th argument is "direct"); prints EIO on an I/O error
range_md5() {
    py '
import errno, hashlib, os, sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
flags = os.O_RDONLY | (os.O_DIRECT if len(sys.argv) > 4 else 0)
fd = os.open(path, flags)
try:
    import mmap
    buf = mmap.mmap(-1, n)
    got = os.preadv(fd, [buf], off)
    print(hashlib.md5(buf[:got]).hexdigest() if got == n else f"short {got}")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
' "$@"
}
file_md5() { py 'import hashlib, sys; d = open(sys.argv[1], "rb").read(); o, n = int(sys.argv[2]), int(sys.argv[3]); print(hashlib.md5(d[o:o + n]).hexdigest())' "$@"; }

new_data_dir --chunk-size 64K
must tcli volume create v --size 4M
pattern orig.bin 1800 $M
pattern newblock.bin 1801 4096
start_tessera --no-init
must dd if=orig.bin of="$MNT/v.img" bs=64K conv=notrunc,fsync oflag=direct status=none
must tcli snapshot create v --name s1
SNAP="$MNT/.snapshots/s1/v.img"
[ -f "$SNAP" ] || fail "no snapshot image at $SNAP"
stop_tessera

info "flip one byte of block 1 of chunk $BAD_CHUNK in its chunk file"
where=$(py '
import glob, sys
probe = open(sys.argv[2], "rb").read()[int(sys.argv[3]):int(sys.argv[3]) + 64]
hits = [p for p in glob.glob(sys.argv[1] + "/chunks/*/*") if open(p, "rb").read(64) == probe]
if len(hits) != 1: sys.exit(f"found the chunk {len(hits)} times")
with open(hits[0], "r+b") as h:
    h.seek(5000); c = h.read(1); h.seek(5000); h.write(bytes([c[0] ^ 0x5a])); h.flush()
    import os; os.fsync(h.fileno())
print(hits[0])
' "$DATA/stores/default" orig.bin $((BAD_CHUNK * CS))) || fail "cannot flip a byte on the store: $where"
info "flipped a byte of $where"

start_tessera --no-init
assert_eq "$(range_md5 "$MNT/v.img" $BAD 4096 direct)" EIO "reading the damaged block of the live image"
assert_eq "$(range_md5 "$SNAP" $BAD 4096 direct)" EIO "reading the damaged block of the snapshot"
rc=0
err=$(dd if=/dev/zero of="$MNT/v.img" bs=512 count=1 seek=$((BAD / 512 + 2)) conv=notrunc oflag=direct status=none 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fail "a 512-byte write into the damaged block (not covering it) succeeded"
grep -qi "input/output error" <<<"$err" || fail "the partial write into the damaged block failed without EIO: $err"

info "scrub (mounted) names the loss and the next step"
rc=0
out=$(tcli scrub 2>scrub.err) || rc=$?
assert_eq "$rc" 7 "scrub exit code with a damaged block; stderr: $(cat scrub.err)"
grep -qF "lost: volume v, bytes $BAD…$((BAD + 4095)) (live image; snapshot s1)" <<<"$out" \
    || fail "scrub does not report the lost block with volume, bytes, live image and snapshot:"$'\n'"$out"
grep -q "^next step: rewrite" <<<"$out" || fail "scrub gives no next step:"$'\n'"$out"
grep -q "fsck --repair --zero-unrecoverable" <<<"$out" || fail "scrub does not mention --zero-unrecoverable:"$'\n'"$out"
n=$(tcli scrub --json 2>/dev/null | json '[(l["volume"], l["offset"], l["live"], l["snapshots"]) for f in d["findings"] for l in f["lost"]]') || true
assert_eq "$n" "[[\"v\", $BAD, true, [\"s1\"]]]" "scrub --json lost blocks"

info "dd rewrites exactly the damaged block"
must dd if=newblock.bin of="$MNT/v.img" bs=4096 count=1 seek=$BAD_BLOCK conv=notrunc oflag=direct status=none
expected=$(cp orig.bin expected.bin && dd if=newblock.bin of=expected.bin bs=4096 seek=$BAD_BLOCK conv=notrunc status=none && file_md5 expected.bin 0 $M)
assert_eq "$(range_md5 "$MNT/v.img" $BAD 4096 direct)" "$(file_md5 newblock.bin 0 4096)" "the rewritten block"
assert_eq "$(range_md5 "$MNT/v.img" 0 $M direct)" "$expected" "the live image after the rewrite"
assert_eq "$(range_md5 "$SNAP" $BAD 4096 direct)" EIO "the snapshot's damaged block after the live rewrite"
assert_eq "$(range_md5 "$SNAP" 0 $BAD direct)" "$(file_md5 orig.bin 0 $BAD)" "the snapshot before the damaged block"
assert_eq "$(range_md5 "$SNAP" $((BAD + 4096)) $((M - BAD - 4096)) direct)" "$(file_md5 orig.bin $((BAD + 4096)) $((M - BAD - 4096)))" \
    "the snapshot after the damaged block"
rc=0
out=$(tcli scrub 2>/dev/null) || rc=$?
assert_eq "$rc" 7 "scrub exit code after the live rewrite (the snapshot still reads the damaged block)"
grep -qF "lost: volume v, bytes $BAD…$((BAD + 4095)) (snapshot s1)" <<<"$out" \
    || fail "scrub after the live rewrite does not say only s1 reads the lost block:"$'\n'"$out"
stop_tessera

info "fsck (unmounted) reports the loss and the next step"
rc=0
out=$(tcli fsck 2>fsck.err) || rc=$?
assert_eq "$rc" 1 "fsck exit code with a damaged block; stderr: $(cat fsck.err)"
grep -qF "lost: volume v, bytes $BAD…$((BAD + 4095)) (snapshot s1)" <<<"$out" || fail "fsck does not report the lost block:"$'\n'"$out"
grep -q "NOT CLEAN" <<<"$out" || fail "fsck does not say NOT CLEAN:"$'\n'"$out"
grep -q "^next step: rewrite" <<<"$out" || fail "fsck gives no next step:"$'\n'"$out"
grep -q "fsck --repair --zero-unrecoverable" <<<"$out" || fail "fsck does not mention --zero-unrecoverable:"$'\n'"$out"
expect_fail --code 2 tcli fsck --zero-unrecoverable
# --repair alone removes nothing that belongs to a volume and leaves the loss reported
rc=0
out=$(tcli fsck --repair 2>/dev/null) || rc=$?
assert_eq "$rc" 1 "fsck --repair (without --zero-unrecoverable) exit code with a damaged block"
grep -qF "lost: volume v, bytes $BAD…$((BAD + 4095))" <<<"$out" || fail "fsck --repair no longer reports the lost block:"$'\n'"$out"

info "fsck --repair --zero-unrecoverable"
out=$(tcli fsck --repair --zero-unrecoverable 2>fsck.err) || fail "fsck --repair --zero-unrecoverable failed (exit $?): $out $(cat fsck.err)"
grep -qF "zeroed: volume v, bytes $BAD…$((BAD + 4095)) (snapshot s1)" <<<"$out" || fail "fsck does not report the zeroed block:"$'\n'"$out"
grep -q "^clean" <<<"$out" || fail "fsck --repair --zero-unrecoverable does not end clean:"$'\n'"$out"
out=$(tcli fsck 2>fsck.err) || fail "fsck after zeroing is not clean (exit $?): $out $(cat fsck.err)"
grep -q "^clean" <<<"$out" || fail "fsck after zeroing: $out"
grep -q "lost:" <<<"$out" && fail "fsck after zeroing still reports a loss: $out"

start_tessera --no-init
cp orig.bin snapexpected.bin
must dd if=/dev/zero of=snapexpected.bin bs=4096 seek=$BAD_BLOCK count=1 conv=notrunc status=none
assert_eq "$(range_md5 "$SNAP" 0 $M direct)" "$(file_md5 snapexpected.bin 0 $M)" "the snapshot after zeroing (zeros at the block)"
assert_eq "$(range_md5 "$MNT/v.img" 0 $M direct)" "$expected" "the live image after fsck zeroed the snapshot's block"
out=$(tcli scrub 2>&1) || fail "scrub after zeroing failed: $out"
grep -q "0 corrupt, 0 unreadable" <<<"$out" || fail "scrub after zeroing: $out"
stop_tessera
pass

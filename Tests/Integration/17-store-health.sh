#!/usr/bin/env bash
# Store health and truthful capacity (issue 9, findings 6 and 8), through a real mount:
#
#   (a) a pool of a healthy dir store and a dir store on an ext4 loop filesystem. The ext4 is shut down
#       (`xfs_io -x -c shutdown`): reads of data on it fail with EIO within 30 s; the store is marked
#       unreachable; `store show` (text and --json), `pool show` and `status` answer within 1 s and say
#       so, with the last error; new writes with fsync succeed and land on the healthy store. After
#       `umount -l` and mounting the same image at the same path, the store returns to service by itself
#       (within ~20 s) and its data reads back equal.
#   (c) two dir stores on one tmpfs: `pool show --json` and `df MOUNT` count the tmpfs once; `store add`
#       says what share of new chunks the store takes; `store set --size` changes a quota while mounted
#       (and it persists); bad input (unknown store, bad or zero size, a file store) is refused with one
#       line and the documented code, and nothing changes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 dd xfs_io mkfs.ext4 losetup mount umount mountpoint df md5sum
T_TIMEOUT=${T_TIMEOUT:-600}

K=1024
M=$((1024 * 1024))
CS=$((64 * K))

umount_if() { if mountpoint -q "$1"; then umount "$1" || umount -l "$1"; fi; }

# chunk_indices DIR VOLUME_ID: the logical chunk indices of VOLUME_ID's chunks on the dir store at DIR
# (from each chunk file's label xattr: volume, index, epoch as little-endian u64).
chunk_indices() {
    python3 - "$1" "$2" <<'EOF'
import os, struct, sys
root, vol = sys.argv[1], int(sys.argv[2])
out = []
for sub in os.listdir(os.path.join(root, "chunks")):
    d = os.path.join(root, "chunks", sub)
    for f in os.listdir(d):
        try:
            raw = os.getxattr(os.path.join(d, f), "user.tessera.label")
        except OSError:
            continue
        v, idx, _ = struct.unpack("<qQQ", raw[:24])
        if v == vol:
            out.append(idx)
print(" ".join(str(i) for i in sorted(out)))
EOF
}

# read_chunk IMG INDEX: md5 of that chunk read with O_DIRECT (no page cache), or "EIO" / the error.
read_chunk() {
    if dd if="$1" of="$T_WORK/.chunk" bs=$CS skip="$2" count=1 iflag=direct status=none 2>"$T_WORK/.rc.err"; then
        md5sum <"$T_WORK/.chunk" | cut -d' ' -f1
    elif grep -q "Input/output error" "$T_WORK/.rc.err"; then
        echo EIO
    else
        echo "error: $(cat "$T_WORK/.rc.err")"
    fi
}

# timed CMD...: runs CMD; its elapsed milliseconds go to ELAPSED_MS.
timed() {
    local t0 t1
    t0=$(date +%s%N)
    "$@"
    t1=$(date +%s%N)
    ELAPSED_MS=$(( (t1 - t0) / 1000000 ))
}

store_field() { tcli store show "$1" --json | json "(d[0] if isinstance(d, list) else d)$2"; }
# wait_health STORE WANT TRIES: poll every 0.5 s until STORE's health is WANT (at most TRIES times); sets health
wait_health() {
    local i
    for (( i = 0; i < $3; i++ )); do
        health=$(store_field "$1" '["health"]')
        [ "$health" = "$2" ] && return 0
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------------------
info "(a) a dir store whose filesystem is shut down"
new_data_dir
DATA=$(realpath "$DATA")
BACKING=$T_WORK/ext4.img
EXT=$T_WORK/ext4
mkdir -p "$EXT" "$T_WORK/good"
truncate -s 256M "$BACKING"
mkfs.ext4 -q -F "$BACKING" || fail "mkfs.ext4 failed"
loop_attach "$BACKING"
DEV1=$LOOP_DEV
mount -t ext4 "$DEV1" "$EXT" || fail "cannot mount $DEV1 on $EXT"
defer umount_if "$EXT"
mkdir -p "$EXT/store"

must tcli pool create hp --chunk-size 64K
must tcli store add good --pool hp --dir "$T_WORK/good"
must tcli store add weak --pool hp --dir "$EXT/store"
start_tessera
must tcli volume create v --size 64M --pool hp
IMG=$MNT/v.img
VID=$(tcli volume show v --json | json 'd["id"]')

head -c $((4 * M)) /dev/urandom > "$T_WORK/first"
dd if="$T_WORK/first" of="$IMG" bs=1M oflag=direct conv=fsync,notrunc status=none || fail "first write failed"
read -r -a WEAK <<<"$(chunk_indices "$EXT/store" "$VID")"
read -r -a GOOD <<<"$(chunk_indices "$T_WORK/good" "$VID")"
(( ${#WEAK[@]} > 0 && ${#GOOD[@]} > 0 )) || fail "the first write did not land on both stores (weak ${#WEAK[@]}, good ${#GOOD[@]})"
assert_eq $(( ${#WEAK[@]} + ${#GOOD[@]} )) 64 "chunks of the first 4 MiB"
W=${WEAK[0]}
want_w=$(dd if="$T_WORK/first" bs=$CS skip="$W" count=1 status=none | md5sum | cut -d' ' -f1)
assert_eq "$(read_chunk "$IMG" "$W")" "$want_w" "chunk $W on the weak store before the outage"
assert_eq "$(store_field weak '["health"]')" ok "weak's health before the outage"

info "shutting down the weak store's filesystem"
xfs_io -x -c shutdown "$EXT" || fail "xfs_io shutdown $EXT failed"
timed read_chunk "$IMG" "$W" > "$T_WORK/.r"
assert_eq "$(cat "$T_WORK/.r")" EIO "read of chunk $W on the dead store"
assert_le "$ELAPSED_MS" 30000 "ms for a read of the dead store to fail"
info "  the read failed with EIO in $ELAPSED_MS ms"

# The failed read marks it at once (the probe would within ~10 s).
wait_health weak unreachable 30
assert_eq "$health" unreachable "weak's health after the outage"
timed tcli store show weak > "$T_WORK/.show"
assert_le "$ELAPSED_MS" 1000 "ms for store show of the dead store"
grep -q "health: UNREACHABLE since .* (last error: " "$T_WORK/.show" ||
    fail "store show weak does not show the outage:"$'\n'"$(cat "$T_WORK/.show")"
err=$(store_field weak '.get("lastError") or ""')
[ -n "$err" ] || fail "store show --json has no lastError for the dead store"
info "  store show: $(sed -n 2p "$T_WORK/.show") ($ELAPSED_MS ms)"
timed tcli pool show hp > "$T_WORK/.pool"
assert_le "$ELAPSED_MS" 1000 "ms for pool show with a dead store"
grep -qE '^weak .*unreachable' "$T_WORK/.pool" || fail "pool show does not show weak unreachable:"$'\n'"$(cat "$T_WORK/.pool")"
timed tcli status > "$T_WORK/.status"
assert_le "$ELAPSED_MS" 1000 "ms for status with a dead store"
grep -q "store weak (pool hp): UNREACHABLE since" "$T_WORK/.status" ||
    fail "status does not show weak unreachable:"$'\n'"$(cat "$T_WORK/.status")"
share=$(store_field weak '["placementShare"]')
py 'import sys; sys.exit(0 if float(sys.argv[1]) == 0 else 1)' "$share" || fail "the dead store still takes $share of new chunks"

info "new writes while the store is down"
head -c $((4 * M)) /dev/urandom > "$T_WORK/second"
timed dd if="$T_WORK/second" of="$IMG" bs=1M seek=32 oflag=direct conv=fsync,notrunc status=none ||
    fail "a write (with fsync) to a fresh region failed while a store of the pool is down"
info "  4 MiB + fsync in $ELAPSED_MS ms"
python3 - "$T_WORK/second" "$IMG" <<'EOF' || fail "an O_DSYNC write to a fresh region failed during the outage"
import os, sys
data = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_DSYNC)
os.pwrite(fd, data[:1 << 20], 40 << 20)
os.fsync(fd)
os.close(fd)
EOF
read -r -a GOOD2 <<<"$(chunk_indices "$T_WORK/good" "$VID")"
py '
import sys
have = set(map(int, sys.argv[1].split()))
want = set(range(512, 576)) | set(range(640, 656))
missing = sorted(want - have)
sys.exit("chunks written during the outage not on the healthy store: %s" % missing[:10] if missing else 0)
' "${GOOD2[*]}" || fail "new chunks did not land on the healthy store"
cmp <(dd if="$IMG" bs=1M skip=32 count=4 iflag=direct status=none) "$T_WORK/second" ||
    fail "data written during the outage does not read back"
G=${GOOD[0]}
assert_eq "$(read_chunk "$IMG" "$G")" "$(dd if="$T_WORK/first" bs=$CS skip="$G" count=1 status=none | md5sum | cut -d' ' -f1)" \
    "chunk $G on the healthy store during the outage"

info "bringing the filesystem back (umount -l, mount the same image again)"
umount -l "$EXT"
loop_attach "$BACKING"
mount -t ext4 "$LOOP_DEV" "$EXT" || fail "cannot mount $BACKING again on $EXT"
t0=$(date +%s)
wait_health weak ok 50
assert_eq "$health" ok "weak's health after the filesystem came back"
info "  back in service after $(( $(date +%s) - t0 )) s"
assert_le $(( $(date +%s) - t0 )) 25 "seconds until the store returned to service"
for w in "${WEAK[@]}"; do
    want=$(dd if="$T_WORK/first" bs=$CS skip="$w" count=1 status=none | md5sum | cut -d' ' -f1)
    assert_eq "$(read_chunk "$IMG" "$w")" "$want" "chunk $w on the weak store after its return"
done
grep -q "store weak (pool hp): ok since" <<<"$(tcli status)" || fail "status does not show weak ok again"
# It takes new chunks again.
dd if=/dev/urandom of="$IMG" bs=1M seek=48 count=4 oflag=direct conv=fsync,notrunc status=none || fail "write after return failed"
read -r -a WEAK3 <<<"$(chunk_indices "$EXT/store" "$VID")"
[ "${#WEAK3[@]}" -gt "${#WEAK[@]}" ] || fail "the store back in service takes no new chunks"
stop_tessera

# ---------------------------------------------------------------------------------------------------
info "(c) two dir stores on one filesystem"
DATA=; MNT=; new_data_dir
DATA=$(realpath "$DATA")
TMPFS=$T_WORK/shared
mkdir -p "$TMPFS"
mount -t tmpfs -o size=64M tmpfs "$TMPFS" || fail "cannot mount a tmpfs"
defer umount_if "$TMPFS"
mkdir -p "$TMPFS/a" "$TMPFS/b"
must tcli pool create sh --chunk-size 64K
out=$(tcli store add sa --pool sh --dir "$TMPFS/a") || fail "store add sa failed"
grep -qE "^it will take about 100% of the pool's new chunks$" <<<"$out" || fail "store add sa does not give its share: $out"
start_tessera
out=$(tcli store add sb --pool sh --dir "$TMPFS/b") || fail "store add sb failed"
grep -qE "^it will take about 50% of the pool's new chunks$" <<<"$out" ||
    fail "store add sb (same filesystem as sa) should take half: $out"
must tcli store add fs1 --pool sh --file "$T_WORK/fs1.img" --size 16M

fs_total=$(py 'import os, sys; s = os.statvfs(sys.argv[1]); print(s.f_blocks * s.f_frsize)' "$TMPFS")
pj=$(tcli pool show sh --json)
py '
import json, sys
p = json.loads(sys.argv[1]); fs = int(sys.argv[2]); M = 1 << 20
st = {s["name"]: s for s in p["stores"]}
probs = []
if st["sa"]["filesystemID"] != st["sb"]["filesystemID"]: probs.append("sa and sb name different filesystems")
if st["sa"]["capacity"] != fs or st["sb"]["capacity"] != fs: probs.append("each store shows the filesystem: %d, %d" % (st["sa"]["capacity"], st["sb"]["capacity"]))
want = fs + st["fs1"]["capacity"]
if p["capacity"] != want: probs.append("pool capacity %d, want %d (tmpfs once + file store)" % (p["capacity"], want))
if p.get("filesystemSize") != fs: probs.append("filesystemSize %s, want %d" % (p.get("filesystemSize"), fs))
if p["free"] > fs + st["fs1"]["free"]: probs.append("pool free %d counts the tmpfs twice" % p["free"])
if p.get("filesystemUsed") is None: probs.append("no filesystemUsed")
sys.exit("; ".join(probs) if probs else 0)
' "$pj" "$fs_total" || fail "pool show --json counts the shared filesystem wrong: $pj"
grep -q "^backing filesystems: size " <<<"$(tcli pool show sh)" || fail "pool show (text) has no backing filesystem line"

# df on the mount: every store's room, each filesystem once.
expected=$(py '
import json, sys
pools = json.loads(sys.argv[1])
print(sum(p["capacity"] for p in pools))
' "$(tcli pool list --json)")
df_total=$(df --block-size=1 --output=size "$MNT" | tail -1 | tr -d ' ')
diff=$(( df_total > expected ? df_total - expected : expected - df_total ))
assert_le "$diff" $((M)) "bytes between df's size of the mount ($df_total) and the pools' capacity ($expected)"
twice=$(( expected + fs_total ))
[ "$df_total" -lt "$twice" ] || fail "df counts the shared tmpfs twice ($df_total)"

info "store set --size while mounted"
out=$(tcli store set sa --size 8M) || fail "store set sa --size 8M failed"
info "  $out"
assert_eq "$(store_field sa '["quota"]')" $((8 * M)) "sa's quota"
assert_eq "$(store_field sa '["capacity"]')" $((8 * M)) "sa's capacity under its quota"
assert_eq "$(tcli pool show sh --json | json 'd["capacity"]')" $(( fs_total + $(store_field fs1 '["capacity"]') )) \
    "pool capacity with sa capped (sb still has the whole tmpfs)"

info "bad store set input changes nothing"
before=$(tcli store list --json | json '[(s["name"], s.get("quota")) for s in d]')
expect_fail --code 3 tcli store set nosuch --size 1G
expect_fail --code 2 tcli store set sa --size 0
expect_fail --code 2 tcli store set sa --size 12Q
expect_fail --code 2 tcli store set fs1 --size 1G
expect_fail --code 2 tcli store set sa --size 1K
assert_eq "$(tcli store list --json | json '[(s["name"], s.get("quota")) for s in d]')" "$before" "stores after refused store set"
stop_tessera
assert_eq "$(store_field sa '["quota"]')" $((8 * M)) "sa's quota after unmount (from the catalog)"
expect_fail --code 2 tcli store set sa --size 0
must tcli store set sa --size 16M
assert_eq "$(store_field sa '["quota"]')" $((16 * M)) "sa's quota set offline"

pass

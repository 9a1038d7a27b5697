#!/usr/bin/env bash
# Pools of heterogeneous stores (issue 4), through a real mount and real clients:
#
#   1. a pool of a dir store (on a 64 MiB tmpfs) and a 64 MiB file store: a sequential dd lands chunks on
#      both, alternating (equal free space); the data reads back equal; `pool show` (text and --json) and
#      `store list --json` agree with the chunks really found on the media.
#   2. `store add` on the running mount: the next chunks land on the new store.
#   7. a zstd:3 dir store: compressible data is stored > 2x smaller (`store show` ratio and the files on
#      disk) and reads back equal.
#   6. bad `store add` input (mounted and offline): non-zero exit, one line, nothing changes.
#  2b. `store remove` on the running mount: an empty store leaves the pool and its manifest goes; a
#      store with chunks, an unknown or a malformed name is refused (5, 3, 2) and nothing changes.
#   3. full stores (two 8 MiB tmpfs): writes go on while one store has room; then ENOSPC (never EIO) for
#      O_DIRECT writes, dd and write+fsync; data written before stays correct; after a punch hole, a
#      volume delete, or room made on the store's filesystem, writes work again within seconds.
#   4. a file store on a loop block device: mkfs.ext4 on a volume through another loop device, files,
#      e2fsck -fn clean, unmount/remount, data intact.
#   5. bitrot on a dir store and on a file store: EIO for the damaged block (never wrong bytes), other
#      ranges fine, `store show` counts it, `scrub` (mounted and offline) exits 7 naming store and
#      volume, `scrub --json` lists it; after rewriting the block the read works and scrub exits 0;
#      on a terminal scrub shows a progress bar.
#  3b. a full file store: after a punch hole + fsync, and after deleting a volume, writes work again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 script dd cmp fallocate losetup mkfs.ext4 e2fsck mount umount mountpoint md5sum
T_TIMEOUT=${T_TIMEOUT:-600}

K=1024
M=$((1024 * 1024))
CS=$((64 * K))

# tmpfs_at DIR SIZE: a tmpfs of SIZE mounted at DIR, unmounted at exit.
tmpfs_at() {
    mkdir -p "$1"
    mount -t tmpfs -o "size=$2" tmpfs "$1" || fail "cannot mount a tmpfs at $1"
    defer umount_if "$1"
}
umount_if() { if mountpoint -q "$1"; then umount "$1" || umount -l "$1"; fi; }

# loop_detach_if DEV FILE: detach DEV only if it still belongs to FILE (loop numbers get reused).
loop_detach_if() {
    local back
    back=$(losetup -nO BACK-FILE "$1" 2>/dev/null || true)
    if [ -n "$back" ] && [ "$(realpath -m "$back")" = "$(realpath -m "$2")" ]; then losetup -d "$1"; fi
}
# loop_on FILE [opts]: attach; sets LOOP_DEV; detached at exit (if still ours). Not inside $(...).
loop_on() {
    local f=$1; shift
    LOOP_DEV=$(losetup -f --show "$@" "$f") || fail "losetup $* $f failed"
    defer loop_detach_if "$LOOP_DEV" "$f"
}

# fresh_data: forget the previous data directory / mountpoint (the previous mount must be stopped).
fresh_data() { DATA=; MNT=; TESSERA_PID=; new_data_dir; DATA=$(realpath "$DATA"); }

dir_chunks() { find "$1/chunks" -mindepth 2 -maxdepth 2 -type f | wc -l; }

# store_json NAME EXPR: EXPR over the store's entry `s` in `store list --json`.
store_json() {
    local j
    j=$(tcli store list --json) || fail "store list --json failed"
    python3 -c '
import json, sys
s = [x for x in json.load(sys.stdin) if x["name"] == sys.argv[1]]
if not s: sys.exit("no store " + sys.argv[1])
s = s[0]
v = eval(sys.argv[2])
print(v if isinstance(v, str) else json.dumps(v))
' "$1" "$2" <<<"$j" || fail "store list --json: cannot evaluate $2 for store $1: $j"
}

# io OP ARGS...: one client operation in python; prints "ok", an md5, or the errno name.
#   wfsync IMG OFF LEN SEED [direct]   pwrite (+ O_DIRECT) then fsync: ok | write:ERR | fsync:ERR
#   read IMG OFF LEN [direct]          md5 of the bytes (short reads continued), or the errno name
#   md5of LEN SEED                     md5 of the bytes wfsync writes for SEED
io() {
    py '
import errno, hashlib, mmap, os, random, sys
op = sys.argv[1]
def data(n, seed): return random.Random(seed).randbytes(n)
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
if op == "md5of":
    print(hashlib.md5(data(int(sys.argv[2]), int(sys.argv[3]))).hexdigest()); sys.exit(0)
img = sys.argv[2]
direct = sys.argv[-1] == "direct"
try:
    if op == "wfsync":
        off, n, seed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        fd = os.open(img, os.O_RDWR | (os.O_DIRECT if direct else 0))
        b = data(n, seed)
        try:
            if direct:
                m = mmap.mmap(-1, n); m[:] = b; w = os.pwritev(fd, [m], off)
            else:
                w = os.pwrite(fd, b, off)
            if w != n: print(f"short:{w}"); sys.exit(0)
        except OSError as e:
            print("write:" + name(e)); sys.exit(0)
        try: os.fsync(fd)
        except OSError as e: print("fsync:" + name(e)); sys.exit(0)
        print("ok")
    elif op == "read":
        off, n = int(sys.argv[3]), int(sys.argv[4])
        fd = os.open(img, os.O_RDONLY | (os.O_DIRECT if direct else 0))
        # like any client: a short read is continued; the error (if any) comes then
        b = b""
        while len(b) < n:
            if direct:
                m = mmap.mmap(-1, n - len(b)); r = os.preadv(fd, [m], off + len(b)); got = m[:r]
            else:
                got = os.pread(fd, n - len(b), off + len(b))
            if not got: break
            b += got
        print(hashlib.md5(b).hexdigest() if len(b) == n else f"short:{len(b)}")
except OSError as e:
    print(name(e))
' "$@"
}
md5of() { io md5of "$1" "$2"; }

# make_marked FILE FIRST COUNT SEED: COUNT chunks; chunk i starts with "TSRCHUNK" + u64 (FIRST+i), then
# random bytes, so the chunk can be recognised on any uncompressed store.
make_marked() {
    py '
import random, struct, sys
f, first, n, cs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
r = random.Random(int(sys.argv[4]))
with open(f, "wb") as h:
    for i in range(n):
        h.write(b"TSRCHUNK" + struct.pack("<Q", first + i) + r.randbytes(cs - 16))
' "$1" "$2" "$3" "$4" "$CS"
}

# placement LABEL=PATH...: JSON {chunk index: [labels]} of the marked chunks found on each medium (a dir
# store: the start of every chunk file; a file or device: anywhere).
placement() {
    py '
import glob, json, os, struct, sys
where = {}
for arg in sys.argv[1:]:
    label, path = arg.split("=", 1)
    if os.path.isdir(path):
        for p in glob.glob(path + "/chunks/*/*"):
            with open(p, "rb") as h: b = h.read(16)
            if b[:8] == b"TSRCHUNK": where.setdefault(struct.unpack("<Q", b[8:16])[0], []).append(label)
    else:
        with open(path, "rb") as h: d = h.read()
        i = d.find(b"TSRCHUNK")
        while i >= 0:
            where.setdefault(struct.unpack("<Q", d[i + 8:i + 16])[0], []).append(label)
            i = d.find(b"TSRCHUNK", i + 16)
print(json.dumps(where))
' "$@"
}

# ========================================================================================================
info "1. a pool of a dir store and a file store"
fresh_data
P1=$T_WORK/p1
tmpfs_at "$P1/dirfs" 64M
must tcli pool create p --chunk-size 64K
must tcli store add sd --pool p --dir "$P1/dirfs"
must tcli store add sf --pool p --file "$P1/store.file" --size 64M
[ -f "$P1/store.file" ] || fail "store add --file did not create $P1/store.file"
# the file is SIZE rounded down to whole slots (header + slot table + slots of a chunk and its checksums)
sfsize=$(file_size "$P1/store.file")
(( sfsize <= 64 * M && sfsize > 64 * M - 2 * CS )) || fail "store add --file --size 64M made a file of $sfsize bytes"
start_tessera --no-init
must tcli volume create v --size 32M --pool p

N1=256   # 16 MiB
make_marked src1 0 $N1 1
dd if=src1 of="$MNT/v.img" bs=1M oflag=direct conv=notrunc,fsync status=none || fail "dd into v.img failed"
cmp src1 <(head -c $((N1 * CS)) "$MNT/v.img") || fail "v.img does not read back what dd wrote"

pl=$(placement sd="$P1/dirfs" sf="$P1/store.file")
read -r n_sd n_sf alternations problems <<<"$(py '
import json, sys
w = {int(k): v for k, v in json.loads(sys.argv[1]).items()}
n = int(sys.argv[2])
probs = [i for i in range(n) if len(w.get(i, [])) != 1]
seq = [w[i][0] for i in range(n) if len(w.get(i, [])) == 1]
alt = sum(1 for a, b in zip(seq, seq[1:]) if a != b)
print(seq.count("sd"), seq.count("sf"), alt, len(probs))
' "$pl" $N1)"
info "placement: $n_sd chunks on sd, $n_sf on sf, $alternations alternations in $((N1 - 1)) steps"
assert_eq "$problems" 0 "chunks found on no store or on more than one"
(( n_sd > 0 && n_sf > 0 )) || fail "a sequential write did not land on both stores (sd $n_sd, sf $n_sf)"
(( n_sd >= N1 * 3 / 8 && n_sf >= N1 * 3 / 8 )) ||
    fail "equal free space but unequal placement: sd $n_sd, sf $n_sf of $N1"
[ "$alternations" -ge $((N1 * 9 / 10)) ] || fail "placement does not alternate: $alternations changes of store in $((N1 - 1)) consecutive chunks"
assert_eq "$(dir_chunks "$P1/dirfs")" "$n_sd" "chunk files on the dir store"
assert_eq "$(store_json sd 's["chunks"]')" "$n_sd" "store list --json chunks of sd"
assert_eq "$(store_json sf 's["chunks"]')" "$n_sf" "store list --json chunks of sf"
assert_eq "$(store_json sf 's["kind"]')" file "kind of sf"
assert_eq "$(store_json sd 's["kind"]')" dir "kind of sd"

pj=$(tcli pool show p --json) || fail "pool show p --json failed"
py '
import json, os, glob, sys
p = json.loads(sys.argv[1]); cs = int(sys.argv[2]); nsd, nsf = int(sys.argv[3]), int(sys.argv[4]); dirstore = sys.argv[5]
probs = []
def want(what, got, exp):
    if got != exp: probs.append(f"{what}: got {got}, expected {exp}")
want("chunkSize", p["chunkSize"], cs)
st = {s["name"]: s for s in p["stores"]}
want("stores", sorted(st), ["sd", "sf"])
want("sd chunks", st["sd"]["chunks"], nsd)
want("sf chunks", st["sf"]["chunks"], nsf)
want("pool allocated = chunks x chunk size", p["allocated"], (nsd + nsf) * cs)
want("pool capacity = sum of stores", p["capacity"], sum(s["capacity"] for s in p["stores"]))
want("pool free = sum of stores", p["free"], sum(s["free"] for s in p["stores"]))
want("pool used = sum of stores", p["used"], sum(s["used"] for s in p["stores"]))
want("provisioned", p["provisioned"], 32 << 20)
for s in p["stores"]:
    if not (0 < s["free"] <= s["capacity"]): probs.append("%s: free %d not in (0, capacity %d]" % (s["name"], s["free"], s["capacity"]))
    if not (s["chunks"] * cs <= s["used"] <= s["capacity"]): probs.append("%s: used %d not in [chunks x cs = %d, capacity]" % (s["name"], s["used"], s["chunks"] * cs))
    if s["capacity"] - s["free"] < s["chunks"] * cs: probs.append("%s: capacity - free = %d < allocated %d" % (s["name"], s["capacity"] - s["free"], s["chunks"] * cs))
# capacities: a 64 MiB tmpfs and a 64 MiB file (less its header and slot table)
if not (60 << 20 <= st["sd"]["capacity"] <= 64 << 20): probs.append("sd capacity %d is not that of a 64 MiB tmpfs" % st["sd"]["capacity"])
if not (60 << 20 <= st["sf"]["capacity"] <= 64 << 20): probs.append("sf capacity %d is not that of a 64 MiB file store" % st["sf"]["capacity"])
disk = sum(os.stat(f).st_blocks * 512 for f in glob.glob(dirstore + "/chunks/*/*"))
want("sd used = blocks of its chunk files", st["sd"]["used"], disk)
if probs: sys.exit("\n".join(probs))
' "$pj" $CS "$n_sd" "$n_sf" "$P1/dirfs" || fail "pool show p --json is inconsistent (above): $pj"

ptxt=$(tcli pool show p) || fail "pool show p failed"
py '
import sys
txt, nsd, nsf = sys.argv[1], sys.argv[2], sys.argv[3]
lines = txt.splitlines()
hdr = [l for l in lines if l.split()[:1] == ["STORE"]]
if not hdr: sys.exit("no STORE table header")
cols = hdr[0].split()
need = ["CAPACITY", "FREE", "ALLOCATED", "USED", "CHUNKS"]
miss = [c for c in need if c not in cols]
if miss: sys.exit(f"columns missing: {miss}")
rows = {l.split()[0]: l.split() for l in lines if l.split()[:1] in (["sd"], ["sf"])}
for name, n in (("sd", nsd), ("sf", nsf)):
    r = rows.get(name)
    if not r or len(r) != len(cols): sys.exit(f"row for {name} missing or misaligned: {r}")
    if r[cols.index("CHUNKS")] != n: sys.exit("%s: CHUNKS %s, expected %s" % (name, r[cols.index("CHUNKS")], n))
' "$ptxt" "$n_sd" "$n_sf" || fail "pool show p (text) is wrong (above):"$'\n'"$ptxt"

# ========================================================================================================
info "2. store add on the running mount"
mkdir -p "$P1/third"
must tcli store add s3rd --pool p --dir "$P1/third"
assert_eq "$(store_json s3rd 's["chunks"]')" 0 "chunks on the new store"
N2=64
make_marked src2 $N1 $N2 2
dd if=src2 of="$MNT/v.img" bs=1M seek=$((N1 * CS / M)) oflag=direct conv=notrunc,fsync status=none || fail "dd (second part) failed"
cat src1 src2 > src12
cmp src12 <(head -c $(((N1 + N2) * CS)) "$MNT/v.img") || fail "v.img does not read back what was written (after store add)"
pl=$(placement sd="$P1/dirfs" sf="$P1/store.file" s3rd="$P1/third")
read -r new_on_3rd old_on_3rd missing <<<"$(py '
import json, sys
w = {int(k): v for k, v in json.loads(sys.argv[1]).items()}
a, n = int(sys.argv[2]), int(sys.argv[3])
print(sum(1 for i in range(a, a + n) if w.get(i) == ["s3rd"]), sum(1 for i in range(a) if "s3rd" in w.get(i, [])),
      sum(1 for i in range(a + n) if len(w.get(i, [])) != 1))
' "$pl" $N1 $N2)"
info "after store add: $new_on_3rd of $N2 new chunks on s3rd"
assert_eq "$missing" 0 "chunks found on no store or on several"
assert_eq "$old_on_3rd" 0 "old chunks that moved to the new store"
# s3rd has the free space of the machine's disk, sd and sf < 64 MiB each: weighted placement gives it
# nearly everything.
[ "$new_on_3rd" -ge $((N2 * 3 / 4)) ] || fail "store added while mounted got $new_on_3rd of $N2 new chunks"
assert_eq "$(dir_chunks "$P1/third")" "$new_on_3rd" "chunk files on s3rd"
assert_eq "$(store_json s3rd 's["chunks"]')" "$new_on_3rd" "store list --json chunks of s3rd"

# ========================================================================================================
info "7. compression on a dir store"
mkdir -p "$P1/z"
must tcli pool create pz --chunk-size 64K
must tcli store add z --pool pz --dir "$P1/z" --compress zstd:3
assert_eq "$(store_json z 's["compression"]')" zstd:3 "compression of z"
must tcli volume create vz --size 16M --pool pz
py '
import sys
line = b"Tessera keeps thin volumes in pools of heterogeneous stores; this line repeats. 0123456789\n"
with open(sys.argv[1], "wb") as f:
    for i in range(4 * 1024 * 1024 // len(line) + 1):
        f.write(line.replace(b"0123456789", b"%010d" % (i % 97)))
' text.src
truncate -s $((4 * M)) text.src
dd if=text.src of="$MNT/vz.img" bs=1M oflag=direct conv=notrunc,fsync status=none || fail "dd into vz.img failed"
cmp text.src <(head -c $((4 * M)) "$MNT/vz.img") || fail "compressed volume reads back different bytes"
zshow=$(tcli store show z) || fail "store show z failed"
ratio=$(sed -n 's/.*ratio \([0-9.]*\)x.*/\1/p' <<<"$zshow")
[ -n "$ratio" ] || fail "store show z prints no ratio:"$'\n'"$zshow"
py 'import sys; sys.exit(0 if float(sys.argv[1]) > 2 else 1)' "$ratio" || fail "compression ratio $ratio <= 2 for repeated text"
zj=$(tcli store show z --json) || fail "store show z --json failed"
py '
import json, sys
s = json.loads(sys.argv[1])
if not s.get("sampledStored") or s["sampledLogical"] / s["sampledStored"] <= 2: sys.exit(f"sampled ratio not > 2: {s}")
' "$zj" || fail "store show z --json: bad ratio"
zdisk=$(du -s -B1 "$P1/z/chunks" | cut -f1)
[ "$zdisk" -lt $((2 * M)) ] || fail "4 MiB of repeated text take $zdisk bytes on the zstd store"
assert_eq "$(store_json z 's["chunks"]')" $((4 * M / CS)) "chunks on z"
# after a remount too
restart_tessera
cmp text.src <(head -c $((4 * M)) "$MNT/vz.img") || fail "compressed volume reads back different bytes after remount"
cmp src12 <(head -c $(((N1 + N2) * CS)) "$MNT/v.img") || fail "v.img reads back different bytes after remount"

# ========================================================================================================
info "6. bad store add input"
echo "not a tessera store, keep me" > "$P1/precious"
head -c 100000 /dev/urandom >> "$P1/precious"
precious_md5=$(md5sum < "$P1/precious")
mkdir -p "$P1/adir" "$P1/newdir"
# refuse CODE|any CMD...: CMD must fail (with CODE), with exactly one line on stderr.
refuse() {
    local code=$1; shift
    if [ "$code" = any ]; then expect_fail "$@"; else expect_fail --code "$code" "$@"; fi
    [ "$(wc -l <<<"$EF_ERR")" -eq 1 ] || fail "expected a one-line message from: $*; got:"$'\n'"$EF_ERR"
    info "refused: ${*:2} -> $EF_ERR"
}
# stores_now: `store list --json`, less the free space of the stores that share the machine's disk
# (other processes change it, and with it the placement shares); sd and sf (a tmpfs and a file) keep
# theirs. When the figures were read and when the health record began always move.
stores_now() {
    local j
    j=$(tcli store list --json) || fail "store list --json failed"
    json '[{k: v for k, v in s.items() if k not in ("figuresAt", "healthSince") and (s["name"] in ("sd", "sf") or k not in ("free", "freeChunks", "filesystemFree", "placementShare"))} for s in d]' <<<"$j"
}
bad_inputs() {   # one round of refused store adds; nothing may change
    local before after
    before=$(stores_now)
    refuse any tcli store add x1 --pool p --dir "$P1/newdir" --file "$P1/x1.file" --size 16M
    refuse any tcli store add x2 --pool p
    refuse any tcli store add x3 --pool p --dir "$P1/does-not-exist"
    refuse any tcli store add x4 --pool p --file "$P1/adir" --size 16M
    refuse any tcli store add x5 --pool p --file "$P1/precious"
    refuse any tcli store add x5b --pool p --file "$P1/precious" --size 16M
    refuse any tcli store add x6 --pool p --file "$P1/tiny.file" --size 64K
    refuse any tcli store add x7 --pool p --dir "$P1/newdir" --compress lz4
    refuse 4 tcli store add sd --pool p --dir "$P1/newdir"
    refuse 4 tcli store add sf --pool p --file "$P1/x8.file" --size 16M
    refuse 3 tcli store add x9 --pool nosuchpool --dir "$P1/newdir"
    refuse 3 tcli store add x10 --pool nosuchpool --file "$P1/x10.file" --size 16M
    after=$(stores_now)
    [ "$before" = "$after" ] || fail "refused store adds changed the store list:"$'\n'"$before"$'\n'"---"$'\n'"$after"
    [ "$(md5sum < "$P1/precious")" = "$precious_md5" ] || fail "a refused --file store add modified an existing file"
    local f
    for f in x1.file tiny.file x8.file x10.file does-not-exist; do
        [ ! -e "$P1/$f" ] || fail "a refused store add left $P1/$f behind"
    done
    [ -z "$(ls -A "$P1/newdir")" ] || fail "a refused store add wrote into $P1/newdir: $(ls -A "$P1/newdir")"
    [ -z "$(ls -A "$P1/adir")" ] || fail "a refused store add wrote into $P1/adir"
}
bad_inputs
cmp src12 <(head -c $(((N1 + N2) * CS)) "$MNT/v.img") || fail "v.img changed after the refused store adds"

info "2b. store remove on the running mount"
mkdir -p "$P1/spare"
must tcli store add spare --pool p --dir "$P1/spare"
[ -f "$P1/spare/store.json" ] || fail "store add wrote no store.json"
must tcli store remove spare
[ ! -e "$P1/spare/store.json" ] || fail "store remove left the store's manifest behind"
tcli store list --json | grep -q '"spare"' && fail "store remove left spare in the store list"
before=$(stores_now)
refuse 5 tcli store remove s3rd      # holds chunks
refuse 3 tcli store remove nosuch
refuse 2 tcli store remove 'bad/name'
[ "$before" = "$(stores_now)" ] || fail "a refused store remove changed the store list"
dd if=src2 of="$MNT/v.img" bs=1M seek=$((N1 * CS / M)) oflag=direct conv=notrunc,fsync status=none || fail "dd after store remove failed"
cmp src12 <(head -c $(((N1 + N2) * CS)) "$MNT/v.img") || fail "v.img changed across store remove"
stop_tessera
info "6. bad store add input, offline"
bad_inputs

# ========================================================================================================
info "3. full stores: ENOSPC, never EIO, and recovery"
fresh_data
P3=$T_WORK/p3
tmpfs_at "$P3/a" 8M
tmpfs_at "$P3/b" 8M
must tcli pool create f --chunk-size 64K
must tcli store add fa --pool f --dir "$P3/a"
must tcli store add fb --pool f --dir "$P3/b"
must tcli volume create other --size 8M --pool f
must tcli volume create fill --size 32M --pool f
start_tessera --no-init
[ "$(io wfsync "$MNT/other.img" 0 $M 300)" = ok ] || fail "writing 1 MiB to other failed"
truncate -s $((32 * M)) shadow.img
# fill store a from outside (its free-space estimate is now stale): the pool must go on with b
dd if=/dev/zero of="$P3/a/junk" bs=64K status=none 2>/dev/null || true
info "store a has $(df -B1 --output=avail "$P3/a" | tail -1) bytes left"

# fill_until_error IMG SHADOW OFF SEED: sequential 64 KiB O_DIRECT writes (each fsynced every 1 MiB)
# from OFF until the first error; every successful write also goes to SHADOW. Prints "BYTES ERRNO".
fill_until_error() {
    py '
import errno, mmap, os, random, sys
img, shadow, off, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cs = 65536; r = random.Random(seed)
fd = os.open(img, os.O_RDWR | os.O_DIRECT); sh = os.open(shadow, os.O_RDWR)
size = os.fstat(fd).st_size
m = mmap.mmap(-1, cs); done = 0; err = "none"
while off + done < size:
    b = r.randbytes(cs); m[:] = b
    try:
        w = os.pwritev(fd, [m], off + done)
        if w != cs: err = f"short{w}"; break
        if (done // cs) % 16 == 15: os.fsync(fd)
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno)); break
    os.pwrite(sh, b, off + done); done += cs
print(done, err)
' "$@"
}
read -r filled err <<<"$(fill_until_error "$MNT/fill.img" shadow.img 0 301)"
info "filled $filled bytes, then $err"
assert_eq "$err" ENOSPC "error when both stores are full"
# b had ~7 MiB free (other took a share of it), a had none: writes must have gone on on b
[ "$filled" -ge $((5 * M)) ] || fail "only $filled bytes written before ENOSPC although store b had room"
[ "$filled" -le $((16 * M)) ] || fail "$filled bytes written into 16 MiB of stores"
cmp <(head -c "$filled" shadow.img) <(head -c "$filled" "$MNT/fill.img") || fail "data written before ENOSPC reads back wrong"
r=$(io read "$MNT/other.img" 0 $M)
assert_eq "$r" "$(md5of $M 300)" "other volume after the pool filled up"
# other clients: dd (O_DIRECT), and a buffered write + fsync: ENOSPC, never EIO, never success
out=$(dd if=/dev/urandom of="$MNT/fill.img" bs=64K count=2 seek=$((filled / CS)) oflag=direct conv=notrunc 2>&1) &&
    fail "dd into a full pool succeeded"
grep -q "No space left on device" <<<"$out" || fail "dd into a full pool: expected 'No space left on device', got: $out"
r=$(io wfsync "$MNT/fill.img" "$filled" $((2 * CS)) 302)
case "$r" in write:ENOSPC | fsync:ENOSPC) info "buffered write+fsync into a full pool: $r" ;; *) fail "buffered write+fsync into a full pool: expected ENOSPC, got $r" ;; esac
r=$(io wfsync "$MNT/fill.img" "$filled" $CS 303 direct)
assert_eq "$r" write:ENOSPC "O_DIRECT write into a full pool (second time)"
# rewriting part of an existing chunk needs no new chunk: it must work on a full pool
r=$(io wfsync "$MNT/fill.img" $((CS + 4096)) 4096 304 direct)
assert_eq "$r" ok "overwriting an allocated chunk while the pool is full"
py '
import random, sys
b = random.Random(304).randbytes(4096)
with open(sys.argv[1], "r+b") as f: f.seek(65536 + 4096); f.write(b)
' shadow.img
# the daemon is alive and the data is intact
cmp <(head -c "$filled" shadow.img) <(head -c "$filled" "$MNT/fill.img") || fail "data reads back wrong on the full pool"

# retry_fill OFF SEED WHAT: after freeing space, a 1 MiB O_DIRECT write at OFF must work within 10 s.
retry_fill() {
    local off=$1 seed=$2 what=$3 i r
    for (( i=0; i<20; i++ )); do
        r=$(io wfsync "$MNT/fill.img" "$off" $M "$seed" direct)
        [ "$r" = ok ] && break
        [ "$r" = write:ENOSPC ] || [ "$r" = fsync:ENOSPC ] || fail "$what: write failed with $r (expected ok or, while waiting, ENOSPC)"
        sleep 0.5
    done
    [ "$r" = ok ] || fail "$what: writes still fail ($r) 10 s after freeing space"
    info "$what: writing works again after $((i / 2)).$((i % 2 * 5)) s"
    py '
import random, sys
b = random.Random(int(sys.argv[3])).randbytes(1 << 20)
with open(sys.argv[1], "r+b") as f: f.seek(int(sys.argv[2])); f.write(b)
' shadow.img "$off" "$seed"
}
# (a) punch a hole (2 MiB) + fsync
fallocate -p -o $((2 * M)) -l $((2 * M)) "$MNT/fill.img" || fail "punch hole in fill.img failed"
fallocate -p -o $((2 * M)) -l $((2 * M)) shadow.img
py 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)' "$MNT/fill.img" || fail "fsync after the punch failed"
pos=$(( filled / CS * CS ))
retry_fill "$pos" 310 "after a punch hole"
pos=$((pos + M))
# (b) delete another volume
must tcli volume delete other
retry_fill "$pos" 311 "after deleting a volume"
pos=$((pos + M))
# (c) room made on the store's filesystem
rm -f "$P3/a/junk"
retry_fill "$pos" 312 "after freeing room on the store's filesystem"
pos=$((pos + M))
cmp shadow.img "$MNT/fill.img" || fail "fill.img differs from what was written (after recovering from ENOSPC)"
restart_tessera
cmp shadow.img "$MNT/fill.img" || fail "fill.img differs from what was written, after remount"
stop_tessera
umount_if "$P3/a"
umount_if "$P3/b"

# ========================================================================================================
info "4. a file store on a block device (loop), ext4 on a volume"
fresh_data
P4=$T_WORK/p4
mkdir -p "$P4/fs"
truncate -s 128M "$P4/backing.raw"
loop_on "$P4/backing.raw"
BDEV=$LOOP_DEV
must tcli pool create b --chunk-size 64K
must tcli store add blk --pool b --file "$BDEV"
assert_eq "$(store_json blk 's["kind"]')" file "kind of the block-device store"
cap=$(store_json blk 's["capacity"]')
(( cap >= 120 * M && cap <= 128 * M )) || fail "capacity of a 128 MiB device store: $cap"
must tcli volume create e4 --size 96M --pool b
start_tessera --no-init
loop_on "$MNT/e4.img"
VDEV=$LOOP_DEV
mkfs.ext4 -q -F "$VDEV" >/dev/null 2>mkfs.err || fail "mkfs.ext4 on the volume failed: $(cat mkfs.err)"
mount "$VDEV" "$P4/fs" || fail "mount ext4 from the volume failed"
defer umount_if "$P4/fs"
head -c $((20 * M)) /dev/urandom > "$P4/big.src"
cp "$P4/big.src" "$P4/fs/big" || fail "cp into ext4 failed"
mkdir "$P4/fs/d"
for i in $(seq 1 50); do echo "small file $i $(head -c 300 /dev/urandom | base64 -w0)" > "$P4/fs/d/f$i"; done
(cd "$P4/fs" && find . -type f -exec md5sum {} + | sort -k2) > "$P4/sums"
umount "$P4/fs" || fail "umount ext4 failed"
e2fsck -fn "$VDEV" >e2fsck.out 2>&1 || fail "e2fsck -fn on the volume is not clean: $(cat e2fsck.out)"
losetup -d "$VDEV" || fail "losetup -d $VDEV failed"
[ "$(store_json blk 's["chunks"]')" -gt $((20 * M / CS)) ] || fail "the device store holds too few chunks: $(store_json blk 's["chunks"]')"
restart_tessera
loop_on "$MNT/e4.img" --read-only
VDEV=$LOOP_DEV
e2fsck -fn "$VDEV" >e2fsck.out 2>&1 || fail "e2fsck -fn after remount is not clean: $(cat e2fsck.out)"
mount -o ro "$VDEV" "$P4/fs" || fail "mount ext4 after remount failed"
(cd "$P4/fs" && find . -type f -exec md5sum {} + | sort -k2) > "$P4/sums2"
cmp "$P4/big.src" "$P4/fs/big" || fail "big file differs after remount"
umount "$P4/fs"
losetup -d "$VDEV"
diff "$P4/sums" "$P4/sums2" >/dev/null || fail "ext4 files differ after remount: $(diff "$P4/sums" "$P4/sums2" | head)"
stop_tessera
losetup -d "$BDEV" || fail "cannot detach $BDEV after unmount (still held?)"

# ========================================================================================================
info "5. bitrot on a dir store and on a file store"
fresh_data
P5=$T_WORK/p5
mkdir -p "$P5/rd"
must tcli pool create rd --chunk-size 64K
must tcli pool create rf --chunk-size 64K
must tcli store add rotd --pool rd --dir "$P5/rd"
must tcli store add rotf --pool rf --file "$P5/rf.file" --size 16M
must tcli volume create bd --size 4M --pool rd
must tcli volume create bf --size 4M --pool rf
start_tessera --no-init
[ "$(io wfsync "$MNT/bd.img" 0 $M 500 direct)" = ok ] || fail "writing bd failed"
[ "$(io wfsync "$MNT/bf.img" 0 $M 501 direct)" = ok ] || fail "writing bf failed"
stop_tessera

# flip DIRSTORE|FILE SEED CHUNK: flip one byte at offset 5000 of volume chunk CHUNK (found by its bytes).
flip() {
    py '
import glob, os, random, sys
where, seed, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = random.Random(seed).randbytes(1 << 20)
probe = d[k * 65536:k * 65536 + 64]
hits = []
if os.path.isdir(where):
    for p in glob.glob(where + "/chunks/*/*"):
        with open(p, "rb") as h:
            if h.read(64) == probe: hits.append((p, 0))
else:
    with open(where, "rb") as h: b = h.read()
    i = b.find(probe)
    while i >= 0: hits.append((where, i)); i = b.find(probe, i + 1)
if len(hits) != 1: sys.exit(f"found the chunk {len(hits)} times on {where}")
p, base = hits[0]
with open(p, "r+b") as h:
    h.seek(base + 5000); c = h.read(1); h.seek(base + 5000); h.write(bytes([c[0] ^ 0x5a])); h.flush(); os.fsync(h.fileno())
print(p, base + 5000)
' "$@"
}
where=$(flip "$P5/rd" 500 3) || fail "cannot flip a byte on the dir store"
info "flipped a byte: $where"
where=$(flip "$P5/rf.file" 501 5) || fail "cannot flip a byte on the file store"
info "flipped a byte: $where"
expected_md5() {  # SEED OFF LEN: md5 of that range of the 1 MiB pattern
    py 'import hashlib, random, sys; d = random.Random(int(sys.argv[1])).randbytes(1 << 20); o, n = int(sys.argv[2]), int(sys.argv[3]); print(hashlib.md5(d[o:o + n]).hexdigest())' "$@"
}
start_tessera --no-init
check_rot() {   # IMG SEED CHUNK: the damaged block gives EIO, the rest reads right
    local img=$1 seed=$2 k=$3 bad=$(( $3 * CS + 4096 ))
    assert_eq "$(io read "$img" "$bad" 4096)" EIO "reading the damaged block of $img"
    assert_eq "$(io read "$img" "$bad" 4096 direct)" EIO "reading the damaged block of $img (O_DIRECT)"
    assert_eq "$(io read "$img" $((k * CS)) $CS)" EIO "reading the damaged chunk of $img"
    assert_eq "$(io read "$img" $((k * CS)) 4096 direct)" "$(expected_md5 "$seed" $((k * CS)) 4096)" "the good block before the damaged one in $img"
    assert_eq "$(io read "$img" $((k * CS + 8192)) $((CS - 8192)) direct)" "$(expected_md5 "$seed" $((k * CS + 8192)) $((CS - 8192)))" "the good blocks after the damaged one in $img"
    assert_eq "$(io read "$img" 0 $((k * CS)) direct)" "$(expected_md5 "$seed" 0 $((k * CS)))" "the chunks before the damaged one in $img"
    assert_eq "$(io read "$img" $(((k + 1) * CS)) $((M - (k + 1) * CS)) direct)" "$(expected_md5 "$seed" $(((k + 1) * CS)) $((M - (k + 1) * CS)))" "the chunks after the damaged one in $img"
}
check_rot "$MNT/bd.img" 500 3
check_rot "$MNT/bf.img" 501 5
for s in rotd rotf; do
    show=$(tcli store show $s) || fail "store show $s failed"
    n=$(sed -n 's/^checksum errors since mount: \([0-9]*\)$/\1/p' <<<"$show")
    [[ -n $n && $n -gt 0 ]] || fail "store show $s does not count the checksum errors:"$'\n'"$show"
    n=$(tcli store show $s --json | json 'd["checksumErrors"]') || fail "store show $s --json failed"
    [ "$n" -gt 0 ] || fail "store show $s --json: checksumErrors $n"
done

# scrub_expect WHEN: scrub (text, then --json) must exit 7 and name both damaged chunks.
scrub_expect_corrupt() {
    local rc=0 out
    out=$(tcli scrub 2>scrub.err) || rc=$?
    assert_eq "$rc" 7 "scrub exit code with two damaged chunks ($1); stderr: $(cat scrub.err)"
    grep -qE "^corrupt: store rotd .*volume bd, bytes from $((3 * CS))\)" <<<"$out" || fail "scrub ($1) does not report the dir store's damaged chunk:"$'\n'"$out"
    grep -qE "^corrupt: store rotf .*volume bf, bytes from $((5 * CS))\)" <<<"$out" || fail "scrub ($1) does not report the file store's damaged chunk:"$'\n'"$out"
    grep -q "2 corrupt" <<<"$out" || fail "scrub ($1) summary does not say 2 corrupt:"$'\n'"$out"
    grep -qi "corrupt" scrub.err || fail "scrub ($1) exit 7 without a message on stderr"
    rc=0
    out=$(tcli scrub --json 2>/dev/null) || rc=$?
    assert_eq "$rc" 7 "scrub --json exit code ($1)"
    py '
import json, sys
r = json.loads(sys.argv[1]); cs = 65536
f = sorted((x["store"], x["volume"], x["volumeOffset"], x["problem"], x["offsets"]) for x in r["findings"])
want = [("rotd", "bd", 3 * cs, "corrupt", [4096]), ("rotf", "bf", 5 * cs, "corrupt", [4096])]
if f != want: sys.exit(f"findings {f}, expected {want}")
if r["stores"] != 3 or r["chunks"] != 32: sys.exit("scrubbed %d stores / %d chunks, expected 3 (default, rotd, rotf) / 32" % (r["stores"], r["chunks"]))
' "$out" || fail "scrub --json ($1) is wrong: $out"
}
scrub_expect_corrupt mounted
stop_tessera
scrub_expect_corrupt offline
start_tessera --no-init
# rewrite the damaged blocks; then everything reads and scrub is clean
assert_eq "$(io wfsync "$MNT/bd.img" $((3 * CS + 4096)) 4096 502 direct)" ok "rewriting the damaged block of bd"
assert_eq "$(io wfsync "$MNT/bf.img" $((5 * CS + 4096)) 4096 503 direct)" ok "rewriting the damaged block of bf"
assert_eq "$(io read "$MNT/bd.img" $((3 * CS + 4096)) 4096)" "$(md5of 4096 502)" "bd's rewritten block"
assert_eq "$(io read "$MNT/bf.img" $((5 * CS + 4096)) 4096)" "$(md5of 4096 503)" "bf's rewritten block"
assert_eq "$(io read "$MNT/bd.img" $((3 * CS)) 4096 direct)" "$(expected_md5 500 $((3 * CS)) 4096)" "bd's block before the rewritten one"
out=$(tcli scrub 2>scrub.err) || fail "scrub after the repair failed (exit $?): $out $(cat scrub.err)"
grep -q "0 corrupt, 0 unreadable" <<<"$out" || fail "scrub after the repair: $out"
grep -q "^scrubbed 32 chunk" <<<"$out" || fail "scrub (mounted) did not report 32 chunks: $out"
# on a terminal, scrub draws a progress bar (script(1) gives it a pty)
out=$(script -qec "env TESSERA_DATA=$DATA $TESSERA_BIN scrub" /dev/null) || fail "scrub on a pty failed: $out"
grep -q "100% (32/32 chunks)" <<<"$out" || fail "scrub on a terminal shows no progress bar: $out"
stop_tessera
out=$(script -qec "env TESSERA_DATA=$DATA $TESSERA_BIN scrub" /dev/null) || fail "offline scrub on a pty failed: $out"
grep -q "100% (32/32 chunks)" <<<"$out" || fail "offline scrub on a terminal shows no progress bar: $out"
out=$(tcli scrub 2>scrub.err) || fail "offline scrub after the repair failed: $out $(cat scrub.err)"
grep -q "^scrubbed 32 chunk(s) .* on 3 store(s) .*0 corrupt, 0 unreadable" <<<"$out" || fail "offline scrub after the repair: $out"

# ========================================================================================================
info "3b. a full file store: space freed by a punch hole or a volume delete is usable again"
# (last, so that the sections above still run if this one fails)
fresh_data
P3B=$T_WORK/p3b
mkdir -p "$P3B"
must tcli pool create ff --chunk-size 64K
must tcli store add ffs --pool ff --file "$P3B/ffs.file" --size 1M    # 14 slots
must tcli volume create fa --size 4M --pool ff
must tcli volume create fb --size 4M --pool ff
start_tessera --no-init
[ "$(io wfsync "$MNT/fb.img" 0 $((4 * CS)) 400 direct)" = ok ] || fail "writing 4 chunks to fb failed"
truncate -s $((4 * M)) shadow3b.img
read -r filled err <<<"$(fill_until_error "$MNT/fa.img" shadow3b.img 0 401)"
info "file store: filled $filled bytes of fa, then $err"
assert_eq "$err" ENOSPC "error when the file store is full"
[ "$filled" -ge $((8 * CS)) ] || fail "only $filled bytes written into a file store of 14 slots (4 used)"
assert_eq "$(store_json ffs 's["free"]')" 0 "free space of the full file store"
# retry_chunk IMG OFF SEED WHAT: a 64 KiB O_DIRECT write must work within 10 s
retry_chunk() {
    local i r
    for (( i=0; i<20; i++ )); do
        r=$(io wfsync "$1" "$2" $CS "$3" direct)
        [ "$r" = ok ] && break
        [ "$r" = write:ENOSPC ] || fail "$4: write failed with $r (expected ok or, while waiting, ENOSPC)"
        sleep 0.5
    done
    [ "$r" = ok ] || fail "$4: writes still fail with $r 10 s after freeing space (store: $(tcli store show ffs | sed -n 2p))"
    info "$4: writing works again"
}
fallocate -p -o 0 -l $((2 * CS)) "$MNT/fa.img" || fail "punch hole in fa.img failed"
py 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); os.fsync(fd)' "$MNT/fa.img" || fail "fsync after the punch failed"
retry_chunk "$MNT/fa.img" "$filled" 402 "file store, after a punch hole + fsync"
must tcli volume delete fb
retry_chunk "$MNT/fa.img" $((filled + CS)) 403 "file store, after deleting a volume"
assert_eq "$(io read "$MNT/fa.img" $((2 * CS)) $((filled - 2 * CS)) direct)" "$(py 'import hashlib, sys; f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2])); print(hashlib.md5(f.read(int(sys.argv[3]))).hexdigest())' shadow3b.img $((2 * CS)) $((filled - 2 * CS)))" "fa's data after the full file store recovered"

pass

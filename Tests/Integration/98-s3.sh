#!/usr/bin/env bash
# S3 stores end to end, against the endpoint of TESSERA_TEST_S3_URL (http://HOST:PORT/BUCKET; Scripts/test
# starts a throwaway Ceph RGW and sets it, with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY). Everything
# this test writes lives under one random key prefix of that bucket and is deleted at the end.
#
#   (a) credentials: `store add --s3` copies them into DATA/credentials/NAME (0600); the secret never
#       appears in the catalog, the log, `store list`, or the process list during a mount. A wrong secret,
#       a missing bucket and a closed port fail with one clear line and add nothing; a --credentials file
#       others can read is refused.
#   (b) a pool of one dir store and one s3 store (chunk 1M) under `mount --cache-size 64M`: fio
#       --verify=crc32c random writes, remount, fio --verify_only; chunks really on both stores.
#   (c) compression is on by default for s3 (zstd:3, `store list`), and compressible data compresses
#       (`store show` ratio > 2).
#   (d) bitrot on the s3 store (one byte of one object flipped behind Tessera's back): EIO on read, never
#       wrong bytes; `scrub` exits 7 naming the store and chunk; after rewriting the range, scrub exits 0.
#   (e) qemu-img convert into a volume of the s3 pool; qemu-img compare equal after a remount.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 fio qemu-img strings sqlite3

[ -n "${TESSERA_TEST_S3_URL:-}" ] || fail "TESSERA_TEST_S3_URL is not set: this test needs an S3 endpoint \
(Scripts/test starts Ceph RGW and sets it; by hand: Scripts/ceph-rgw start DIR PORT, Scripts/ceph-rgw bucket DIR \
tessera-test, export TESSERA_TEST_S3_URL=http://127.0.0.1:PORT/tessera-test AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=…)"
[[ -n ${AWS_ACCESS_KEY_ID:-} && -n ${AWS_SECRET_ACCESS_KEY:-} ]] ||
    fail "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set with TESSERA_TEST_S3_URL"
python3 -c 'import boto3' 2>/dev/null || fail "python3 boto3 is not installed"
s3u() { python3 "$T_DIR/s3util.py" "$@"; }
s3u check 2>"$T_WORK/s3check.err" || fail "the S3 endpoint/bucket $TESSERA_TEST_S3_URL does not answer: $(tail -n 3 "$T_WORK/s3check.err")"

M=$((1024 * 1024))
URL=${TESSERA_TEST_S3_URL%/}
PREFIX=its3-98-$(date +%s)-$RANDOM$RANDOM
SECRET=$AWS_SECRET_ACCESS_KEY
info "S3: $URL, prefix $PREFIX"
defer s3u delete "$PREFIX"
PROBLEMS=()
problem() { PROBLEMS+=("$*"); warn "PROBLEM: $*"; }

# secret_absent WHERE TEXT-OR-FILE...: the secret must not occur in the files / text
secret_in_files() { grep -rlaF -- "$SECRET" "$@" 2>/dev/null || true; }

# ---------------------------------------------------------------------------------------------------------
info "(a) credentials and refused stores"
new_data_dir --chunk-size 1M
DATA=$(realpath "$DATA")
must tcli pool create p --chunk-size 1M
mkdir -p "$T_WORK/d1"
must tcli store add d1 --pool p --dir "$T_WORK/d1"
# what a refused store add must not change: the stores (free space of dir stores moves on its own)
store_names() { tcli store list --json | json '"\n".join(sorted(s["name"] + " " + s["pool"] + " " + s["kind"] + " " + s["path"] for s in d))'; }
before=$(store_names)

# try_add WHAT ENV... -- ARGS...: `store add` must fail with one clear line and change nothing.
try_add() {   # WHAT PATTERN NAME ENV-ASSIGNMENTS... -- STORE-ADD-ARGS...
    local what=$1 pattern=$2 name=$3 envs=() t0 t1
    shift 3
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    t0=$(date +%s)
    expect_fail timeout 120 env "${envs[@]}" TESSERA_DATA="$DATA" "$TESSERA_BIN" store add "$name" "$@"
    t1=$(date +%s)
    info "  $what: refused in $((t1 - t0)) s: $EF_ERR"
    [ "$(wc -l <<<"$EF_ERR")" -eq 1 ] || problem "$what: expected one line on stderr, got: $EF_ERR"
    grep -qiE -- "$pattern" <<<"$EF_ERR" || problem "$what: the message does not say what is wrong (want /$pattern/): $EF_ERR"
    grep -qF -- "$SECRET" <<<"$EF_ERR" && problem "$what: the error message shows the secret"
    [ "$(store_names)" = "$before" ] || problem "$what: store list changed after a refused store add: $(store_names)"
    [ -e "$DATA/credentials/$name" ] && problem "$what: DATA/credentials/$name was left behind by a refused store add"
    [ $((t1 - t0)) -le 60 ] || problem "$what: took $((t1 - t0)) s to fail"
    return 0
}
try_add "wrong secret" 'denied|credential|secret|signature|forbidden|403' bad1 \
    AWS_SECRET_ACCESS_KEY=not-the-secret-$RANDOM -- --pool p --s3 "$URL/$PREFIX/bad1"
try_add "missing bucket" 'bucket|exist|404|NoSuchBucket' bad2 \
    -- --pool p --s3 "${URL%/*}/its3-no-such-bucket-$RANDOM/$PREFIX"
closed_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
try_add "closed port" 'connect|refused|unreachable|reach' bad3 \
    -- --pool p --s3 "http://127.0.0.1:$closed_port/tessera-test/$PREFIX"
try_add "no credentials at all" 'AWS_|credential' bad4 \
    AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= -- --pool p --s3 "$URL/$PREFIX/bad4"

CREDS=$T_WORK/creds
printf 'access_key_id = %s\nsecret_access_key = %s\n' "$AWS_ACCESS_KEY_ID" "$SECRET" > "$CREDS"
chmod 0644 "$CREDS"
try_add "--credentials FILE with mode 0644" '0644|644|permission|mode|group|other|readable|protect' bad5 \
    AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= -- --pool p --s3 "$URL/$PREFIX/bad5" --credentials "$CREDS"
[ "$(s3u count "$PREFIX")" = 0 ] || problem "refused store adds left objects under the prefix"

# placement is weighted by free space: give the s3 store the room the dir store has, so both get chunks
d1_free_m=$(( $(tcli store list --json | json '[s["free"] for s in d if s["name"] == "d1"][0]') / M ))
must tcli store add s3a --pool p --s3 "$URL/$PREFIX/a" --size "${d1_free_m}M"
[ -f "$DATA/credentials/s3a" ] || fail "store add --s3 did not write DATA/credentials/s3a"
assert_eq "$(file_mode "$DATA/credentials/s3a")" 600 "mode of DATA/credentials/s3a"
# a protected --credentials file works, and the environment is not needed with it
chmod 0600 "$CREDS"
must tcli pool create zp --chunk-size 1M
must env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY TESSERA_DATA="$DATA" "$TESSERA_BIN" store add z --pool zp \
    --s3 "$URL/$PREFIX/z" --credentials "$CREDS"

check_catalog_secret() {   # WHEN
    local hits
    hits=$(secret_in_files "$DATA"/catalog*)
    [ -z "$hits" ] || problem "$1: the secret is in the catalog files: $hits"
    # strings(1) as an admin would look, and a full SQL dump (WAL contents included)
    if strings -a "$DATA"/catalog* 2>/dev/null | grep -F -- "$SECRET" >/dev/null; then problem "$1: strings DATA/catalog* shows the secret"; fi
    if sqlite3 "file:$DATA/catalog.db?mode=ro" .dump 2>/dev/null | grep -F -- "$SECRET" >/dev/null; then problem "$1: sqlite3 .dump of the catalog shows the secret"; fi
    return 0
}
check_catalog_secret "after store add"
sl=$(tcli store list --json)
grep -qF -- "$SECRET" <<<"$sl" && problem "store list --json shows the secret"
for s in s3a z d1; do
    grep -qF -- "$SECRET" <<<"$(tcli store show "$s" --json)" && problem "store show $s shows the secret"
done

# ---------------------------------------------------------------------------------------------------------
info "(c) compression settings in store list"
comp() { json "[s['compression'] for s in d if s['name'] == '$1'][0]" <<<"$sl"; }
assert_eq "$(comp s3a)" "zstd:3" "compression of the s3 store s3a (default)"
assert_eq "$(comp z)" "zstd:3" "compression of the s3 store z (default)"
assert_eq "$(comp d1)" "none" "compression of the dir store d1 (default)"
tl=$(tcli store list)
grep -E '^s3a[[:space:]].*zstd:3' <<<"$tl" >/dev/null || problem "store list (text) does not show zstd:3 for s3a:"$'\n'"$tl"

# ---------------------------------------------------------------------------------------------------------
info "(b) fio on a pool of a dir store and an s3 store, mount --cache-size 64M"
T_CACHE_SIZE=64M
start_tessera --no-init
args=$(ps -eo args)
grep -qF -- "$SECRET" <<<"$args" && problem "the secret is in the process list (ps -eo args) during a mount"
tr '\0' ' ' < "/proc/$TESSERA_PID/cmdline" | grep -F -- "$SECRET" >/dev/null && problem "the secret is in the daemon's command line"

must tcli volume create fio --size 128M --pool p
img=$MNT/fio.img
job_args() {
    case "$1" in
        aio) echo --name=aio --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --bs=4k --offset=0 --size=48M ;;
        sync) echo --name=sync --ioengine=psync --direct=0 --rw=randrw --rwmixread=30 --bs=64k --offset=64M --size=64M ;;
    esac
}
common=(--filename="$img" --verify=crc32c --verify_fatal=1 --verify_dump=1 --randrepeat=1 --randseed=9898
        --do_verify=1 --verify_state_save=1 --group_reporting --output-format=normal)
for j in aio sync; do
    t0=$(date +%s)
    # shellcheck disable=SC2046
    run_fio "fio-$j.log" "${common[@]}" $(job_args "$j")
    info "  fio $j: $(( $(date +%s) - t0 )) s"
done
alloc=$(volume_field fio allocated)
[ "$alloc" -ge $((64 * M)) ] || fail "after fio the volume has only $alloc bytes allocated"
info "remount, fio --verify_only"
restart_tessera
for j in aio sync; do
    # shellcheck disable=SC2046
    run_fio "fio-$j-verify.log" "${common[@]}" $(job_args "$j") --verify_only --verify_state_load=1
    grep -qE 'READ: .*io=[1-9]' "fio-$j-verify.log" || fail "fio --verify_only ($j) read nothing back"
done
n_obj=$(s3u count "$PREFIX/a/chunks")
n_files=$(find "$T_WORK/d1" -path '*chunks*' -type f | wc -l)
info "  chunks: $n_obj objects on s3a, $n_files chunk files on d1"
[ "$n_obj" -ge 10 ] || problem "the s3 store holds only $n_obj chunk objects after writing $((alloc / M)) MiB (data not spread)"
[ "$n_files" -ge 10 ] || problem "the dir store holds only $n_files chunk files after writing $((alloc / M)) MiB (data not spread)"

# ---------------------------------------------------------------------------------------------------------
info "(c) compressible data on the s3-only pool zp"
must tcli volume create zv --size 32M --pool zp
py '
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
line = b"".join(b"volume %08d: the quick brown fox jumps over the lazy dog; tessera compresses this.\n" % i for i in range(4096))
buf = (line * ((16 << 20) // len(line) + 1))[:16 << 20]
os.pwrite(fd, buf, 0); os.fsync(fd); os.close(fd)
' "$MNT/zv.img"
zs=$(tcli store show z --json)
ratio=$(json '(d[0] if isinstance(d, list) else d).get("sampledLogical", 0) / max(1, (d[0] if isinstance(d, list) else d).get("sampledStored") or 0)' <<<"$zs")
info "  store z: $(tcli store show z | sed -n 3p)"
py 'import sys; sys.exit(0 if float(sys.argv[1]) > 2 else 1)' "$ratio" || problem "compression ratio of store z is $ratio (want > 2): $zs"
[ "$(s3u count "$PREFIX/z/chunks")" -ge 1 ] || problem "no chunk objects on the s3 store z after writing 16 MiB"

# ---------------------------------------------------------------------------------------------------------
info "(d) bitrot on the s3 store"
must tcli volume create rot --size 8M --pool p
write_random "$MNT/rot.img" 0 $((8 * M)) 77
rot_id=$(volume_field rot id)
stop_tessera
mapfile -t rot_objs < <(s3u list "$PREFIX/a/chunks" --meta | awk -v v="$rot_id" '{ split($3, l, "."); if (l[1] == v) print }')
[ "${#rot_objs[@]}" -ge 1 ] || fail "no object of volume rot (id $rot_id) on the s3 store (objects: $(s3u list "$PREFIX/a/chunks" --meta | head -5))"
read -r rkey rsize rlabel <<<"${rot_objs[0]}"
ridx=$(cut -d. -f2 <<<"$rlabel")
roff=$((ridx * M))
info "  flipping a byte in the middle of $rkey ($rsize bytes, label $rlabel: volume bytes $roff..+1M)"
s3u flip "$rkey" $((rsize / 2)) >/dev/null || fail "could not rewrite $rkey"
start_tessera --no-init
rot_read() {   # OFFSET LENGTH SEED -> prints "eio=N wrong=N ok=N" reading 4 KiB blocks with O_DIRECT
    py '
import errno, mmap, os, random, sys
img, off, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
want = random.Random(seed).randbytes(8 << 20)   # what write_random wrote at 0 (1 MiB pieces of one stream)
fd = os.open(img, os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)
c = dict(eio=0, wrong=0, ok=0, other=0)
for o in range(off, off + n, 4096):
    try:
        k = os.preadv(fd, [m], o)
    except OSError as e:
        c["eio" if e.errno == errno.EIO else "other"] += 1
        continue
    c["ok" if k == 4096 and m[:] == want[o:o + 4096] else "wrong"] += 1
print(" ".join(f"{k}={v}" for k, v in c.items()))
' "$MNT/rot.img" "$@"
}
r=$(rot_read "$roff" "$M" 77)
info "  reading the damaged chunk: $r"
[[ $r == *" wrong=0 "* ]] || problem "bitrot: the damaged chunk returned WRONG BYTES: $r"
[[ $r == *"other=0" ]] || problem "bitrot: the damaged chunk failed with an errno other than EIO: $r"
[[ $r != eio=0* ]] || problem "bitrot: reading the damaged chunk gave no EIO: $r"
r2=$(rot_read 0 $((8 * M)) 77)
info "  reading all of rot: $r2"
[[ $r2 =~ wrong=([0-9]+) && ${BASH_REMATCH[1]} -eq 0 ]] || problem "bitrot: volume rot returned wrong bytes: $r2"
[[ $r2 =~ ok=([0-9]+) && ${BASH_REMATCH[1]} -ge $((7 * 256)) ]] || problem "bitrot: undamaged chunks of rot do not read back: $r2"
errs=$(json '(d[0] if isinstance(d, list) else d)["checksumErrors"]' <<<"$(tcli store show s3a --json)")
[ "$errs" -ge 1 ] || problem "bitrot: store show s3a counts $errs checksum errors after an EIO read of a damaged chunk"
# the log names the store (by name or id) and the chunk (hex as on the store, or decimal)
s3a_id=$(tcli store list --json | json '[s["id"] for s in d if s["name"] == "s3a"][0]')
rhex=$(basename "$rkey" | sed 's/^0*//')
# (no grep -q at the end of a pipe: under pipefail the writer's SIGPIPE would fail a match)
grep -E "s3a|store #$s3a_id" "$DATA/tessera.log" | grep -iE "$rhex|$((16#$rhex))" >/dev/null ||
    problem "bitrot: tessera.log does not name the store and chunk of the damaged read"

rc=0
tcli scrub --json > scrub1.json 2> scrub1.err || rc=$?
info "  scrub (mounted): exit $rc: $(cat scrub1.err)"
[ "$rc" = 7 ] || problem "bitrot: scrub exited $rc, expected 7"
py '
import json, sys
r = json.load(open(sys.argv[1]))
key_hex, vol, off = sys.argv[2].rsplit("/", 1)[-1], sys.argv[3], int(sys.argv[4])
fs = r["findings"]
f = [x for x in fs if x["store"] == "s3a" and int(x["chunk"], 16) == int(key_hex, 16)]
if not f: sys.exit("scrub does not report chunk %s of store s3a: %r" % (key_hex, fs))
x = f[0]
errs = []
if x["problem"] != "corrupt": errs.append("problem is %r, expected corrupt (%r)" % (x["problem"], x.get("detail")))
if x.get("volume") != vol: errs.append("volume %r, expected %s" % (x.get("volume"), vol))
if x.get("volumeOffset") != off: errs.append("volumeOffset %r, expected %d" % (x.get("volumeOffset"), off))
if len(fs) != 1: errs.append("%d findings, expected 1: %r" % (len(fs), fs))
if errs: sys.exit("; ".join(errs))
' scrub1.json "$rkey" rot "$roff" 2> scrub1.check || problem "bitrot: scrub report: $(cat scrub1.check)"
tcli scrub > scrub1.txt 2>/dev/null || true
grep -q 's3a' scrub1.txt || problem "bitrot: scrub's text output does not name the store: $(cat scrub1.txt)"

info "  rewriting the damaged range"
py '
import mmap, os, random, sys
img, off = sys.argv[1], int(sys.argv[2])
want = random.Random(77).randbytes(8 << 20)
fd = os.open(img, os.O_WRONLY | os.O_DIRECT)
m = mmap.mmap(-1, 1 << 20); m[:] = want[off:off + (1 << 20)]
assert os.pwritev(fd, [m], off) == 1 << 20
os.fsync(fd); os.close(fd)
' "$MNT/rot.img" "$roff" 2> rewrite.err || problem "bitrot: rewriting the damaged chunk failed: $(cat rewrite.err)"
r3=$(rot_read 0 $((8 * M)) 77)
info "  rot after the rewrite: $r3"
[[ $r3 == "eio=0 wrong=0 ok=2048 other=0" ]] || problem "bitrot: after rewriting the range, rot reads: $r3"
rc=0
tcli scrub > scrub2.txt 2> scrub2.err || rc=$?
[ "$rc" = 0 ] || problem "bitrot: scrub after the rewrite exited $rc: $(cat scrub2.txt scrub2.err)"
restart_tessera
r4=$(rot_read 0 $((8 * M)) 77)
[[ $r4 == "eio=0 wrong=0 ok=2048 other=0" ]] || problem "bitrot: after the rewrite and a remount, rot reads: $r4"

# ---------------------------------------------------------------------------------------------------------
info "(e) qemu-img convert into a volume on the s3 pool"
py '
import os, random, sys
r = random.Random(5)
with open(sys.argv[1], "wb") as f:
    f.truncate(64 << 20)
    for i in range(0, 64, 3):                    # data every third MiB, zeros elsewhere, partial MiBs too
        f.seek(i << 20); f.write(r.randbytes((1 << 20) - (i % 2) * 4096 * 17))
' src.img
must tcli volume create q --size 64M --pool p
must timeout 300 qemu-img convert -n -f raw -O raw src.img "$MNT/q.img"
must qemu-img compare -f raw -F raw src.img "$MNT/q.img"
restart_tessera
must qemu-img compare -f raw -F raw src.img "$MNT/q.img"

# ---------------------------------------------------------------------------------------------------------
info "secrets after the run"
check_catalog_secret "at the end"
hits=$(secret_in_files "$DATA/tessera.log")
{ [ -z "$hits" ] && ! strings -a "$DATA/tessera.log" | grep -F -- "$SECRET" >/dev/null; } || problem "the secret is in DATA/tessera.log"
# nothing in DATA but the credentials file holds it
hits=$(secret_in_files "$DATA" | grep -vxF "$DATA/credentials/s3a" || true)
[ -z "$hits" ] || problem "the secret is in files of DATA other than credentials/s3a: $hits"
stop_tessera

n=$(s3u delete "$PREFIX")
info "deleted $n objects under $PREFIX"
[ "$(s3u count "$PREFIX")" = 0 ] || problem "objects left under $PREFIX after deleting them"

if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    printf '  %s\n' "${PROBLEMS[@]}" >&2
    fail "${#PROBLEMS[@]} problems"
fi
pass

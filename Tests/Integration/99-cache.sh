#!/usr/bin/env bash
# The RAM cache (mount --cache-size) end to end, on a dir pool, then on an s3 pool (TESSERA_TEST_S3_URL;
# the test fails, after the dir parts, when it is not set).
#
#   (a) crash with write-back on: crashwriter.py logs every fdatasync-acknowledged write, the daemon is
#       SIGKILLed at a random moment, and after a remount ackcheck.py finds every acknowledged write
#       (3 rounds on a dir pool; 2 rounds on an s3 pool in (e)).
#   (b) `status` shows one cache line per pool with a hit rate; reading the same 16M twice raises the
#       hits of `status --json` by about 16M of blocks, not the misses.
#   (c) scan resistance: with --cache-size 32M, a hot 8M region read several times survives one
#       sequential read of 200M of other data: reading it again is all hits.
#   (d) a slow store (strace delays every pwrite64 to the chunk files being written back by 200 ms) does
#       not slow reads of cached data: p50 well under 200 ms, no errors.
#   (e) crash rounds on a pool of one s3 store.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_reliability.sh"
need python3 strace

M=$((1024 * 1024))
SEED=${CRASH_SEED:-$RANDOM}
RANDOM=$SEED
info "seed $SEED (rerun with CRASH_SEED=$SEED)"
CW=$T_DIR/crashwriter.py
ACK=$T_DIR/ackcheck.py
PROBLEMS=()
problem() { PROBLEMS+=("$*"); warn "PROBLEM: $*"; }
s3u() { python3 "$T_DIR/s3util.py" "$@"; }
defer strace_stop

# stats POOL: "hits misses" of POOL's cache from status --json
stats() {
    local j
    j=$(tcli status --json) || fail "tessera status --json failed"
    json "' '.join(str(c['stats'][k]) for c in d['caches'] if c['pool'] == '$1' for k in ('hits', 'misses'))" <<<"$j"
}

# dread IMG OFFSET LENGTH [TIMES]: read the range with O_DIRECT in 1 MiB pieces, TIMES times; fails on error
dread() {
    py '
import mmap, os, sys
img, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = int(sys.argv[4]) if len(sys.argv) > 4 else 1
fd = os.open(img, os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 1 << 20)
for _ in range(times):
    o = off
    while o < off + n:
        k = os.preadv(fd, [m], o)
        if k <= 0: sys.exit(f"short read at {o}")
        o += k
' "$@" || fail "O_DIRECT read of $1 failed"
}

# crash_rounds IMG ROUNDS WHAT MIN_MS: the 80-crash loop on IMG with ackcheck after each remount; the
# daemon is killed MIN_MS + 0..3 s after the writer starts.
crash_rounds() {
    local img=$1 rounds=$2 what=$3 min_ms=$4 log=$T_WORK/crash-$3.log round ms pid wpid wrc acked total_before=0 out rc i
    : > "$log"
    local size
    size=$(file_size "$MNT/$img")
    for round in $(seq 1 "$rounds"); do
        local direct=()
        [ $((round % 2)) -eq 0 ] && direct=(--direct)
        python3 "$CW" write "$MNT/$img" "$log" --seed "$SEED" --batch 8 --max-seconds 60 "${direct[@]}" \
            2> "writer-$what-$round.err" &
        wpid=$!
        defer kill -KILL "$wpid"
        ms=$((min_ms + RANDOM % 3000))
        sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
        # A crash with nothing acknowledged tests nothing: on a busy machine the first fsync to the object
        # store can take longer than the planned delay, so wait (up to 30 s more) for one.
        for (( i=0; i<300; i++ )); do
            [ "$(grep -vc '^#' "$log" || true)" -gt "$total_before" ] && break
            kill -0 "$wpid" 2>/dev/null || break
            sleep 0.1
            ms=$((ms + 100))
        done
        kill -0 "$wpid" 2>/dev/null || fail "$what round $round: the writer died before the crash: $(cat "writer-$what-$round.err")"
        pid=$TESSERA_PID
        info "$what round $round: SIGKILL daemon $pid after ${ms} ms (writer ${direct[*]:-buffered})"
        kill_tessera
        for i in $(seq 1 100); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$wpid" 2>/dev/null; then
            kill -KILL "$wpid"
            fail "$what round $round: the writer still runs 10 s after the daemon was killed (stuck I/O)"
        fi
        wrc=0; wait "$wpid" || wrc=$?
        [ "$wrc" -eq 3 ] || warn "$what round $round: writer exit $wrc: $(cat "writer-$what-$round.err")"
        acked=$(grep -vc '^#' "$log" || true)
        info "$what round $round: $((acked - total_before)) writes acknowledged this round, $acked in total"
        [ $((acked - total_before)) -gt 0 ] || fail "$what round $round: no write acknowledged in ${ms} ms: $(cat "writer-$what-$round.err")"
        total_before=$acked
        start_tessera --no-init
        assert_eq "$(file_size "$MNT/$img")" "$size" "$img size after crash $round"
        rc=0
        out=$(timeout 300 python3 "$ACK" verify "$MNT/$img" "$log" --seed "$SEED" 2>&1) || rc=$?
        indent "[$T_NAME]   " "$out"
        [ "$rc" -eq 0 ] || problem "$what: after crash $round acknowledged writes are lost or damaged (seed $SEED)"
    done
    restart_tessera
    rc=0
    out=$(timeout 300 python3 "$ACK" verify "$MNT/$img" "$log" --seed "$SEED" 2>&1) || rc=$?
    indent "[$T_NAME]   " "$out"
    [ "$rc" -eq 0 ] || problem "$what: after a clean remount acknowledged writes are lost or damaged (seed $SEED)"
    return 0
}

# ---------------------------------------------------------------------------------------------------------
info "(a) crash with the write-back cache on (dir pool, --cache-size 64M)"
T_CACHE_SIZE=64M
new_data_dir
DATA=$(realpath "$DATA")
mkdir -p "$T_WORK/d2"
must tcli pool create p2
must tcli store add d2 --pool p2 --dir "$T_WORK/d2"
start_tessera --no-init
truncate -s 128M "$MNT/crash.img"
crash_rounds crash.img 3 dir 1000

# ---------------------------------------------------------------------------------------------------------
info "(b) status: a cache line per pool; re-reading 16M raises hits"
st=$(tcli status)
indent "[$T_NAME]   " "$st"
for p in default p2; do
    grep -qE "^cache $p: .*hit rate [0-9.]+%" <<<"$st" || problem "status shows no cache line with a hit rate for pool $p"
done
n_caches=$(tcli status --json | json 'len(d["caches"])')
assert_eq "$n_caches" 2 "number of caches in status --json (two pools)"
must tcli volume create h --size 64M
write_random "$MNT/h.img" 0 $((16 * M)) 3
restart_tessera
read -r h0 m0 <<<"$(stats default)"
dread "$MNT/h.img" 0 $((16 * M))
read -r h1 m1 <<<"$(stats default)"
dread "$MNT/h.img" 0 $((16 * M))
read -r h2 m2 <<<"$(stats default)"
info "  first read: +$((h1 - h0)) hits +$((m1 - m0)) misses; second read: +$((h2 - h1)) hits +$((m2 - m1)) misses"
[ $((h1 - h0 + m1 - m0)) -ge 3500 ] || problem "status: the first read of 16M counted only $((h1 - h0)) hits + $((m1 - m0)) misses (4096 blocks)"
[ $((h2 - h1)) -ge 3700 ] || problem "status: the second read of 16M raised hits by only $((h2 - h1)) (4096 blocks read; cache 32M)"
[ $((m2 - m1)) -le 200 ] || problem "status: the second read of 16M (cached) still counted $((m2 - m1)) misses"
hr=$(tcli status | sed -n 's/^cache default: .*hit rate \([0-9.]*\)%.*/\1/p')
info "  hit rate now: ${hr}%"
py 'import sys; sys.exit(0 if float(sys.argv[1] or 0) > 0 else 1)' "$hr" || problem "status: hit rate of pool default is '$hr' after cached reads"
stop_tessera

# ---------------------------------------------------------------------------------------------------------
info "(c) scan resistance (--cache-size 32M, one pool)"
T_CACHE_SIZE=32M
DATA=; MNT=
new_data_dir
DATA=$(realpath "$DATA")
start_tessera --no-init
must tcli volume create s --size 256M
write_random "$MNT/s.img" 0 $((8 * M)) 11
write_random "$MNT/s.img" $((16 * M)) $((200 * M)) 12
restart_tessera
dread "$MNT/s.img" 0 $((8 * M)) 4
read -r h1 m1 <<<"$(stats default)"
dread "$MNT/s.img" $((16 * M)) $((200 * M))
read -r h2 m2 <<<"$(stats default)"
dread "$MNT/s.img" 0 $((8 * M))
read -r h3 m3 <<<"$(stats default)"
info "  hot 8M x4: $h1 hits $m1 misses; scan of 200M: +$((h2 - h1)) hits +$((m2 - m1)) misses; hot again: +$((h3 - h2)) hits +$((m3 - m2)) misses"
[ $((m2 - m1 + h2 - h1)) -ge $((51200 * 9 / 10)) ] || problem "scan: the 200M scan counted only $((h2 - h1 + m2 - m1)) block lookups (51200 blocks)"
[ $((h3 - h2)) -ge $((2048 * 9 / 10)) ] || problem "scan: after a 200M scan the hot 8M gave only $((h3 - h2)) hits of 2048 blocks (scan pushed out the working set)"
[ $((m3 - m2)) -le $((2048 / 10)) ] || problem "scan: after a 200M scan the hot 8M missed $((m3 - m2)) of 2048 blocks"

# ---------------------------------------------------------------------------------------------------------
info "(d) a slow store does not slow cached reads"
must tcli volume create w --size 32M
find "$DATA/stores/default/chunks" -type f | sort > before-w
write_random "$MNT/w.img" 0 $((32 * M)) 21
mapfile -t WF < <(comm -13 before-w <(find "$DATA/stores/default/chunks" -type f | sort))
[ "${#WF[@]}" -ge 16 ] || fail "expected 32 chunk files for w, found ${#WF[@]}"
dread "$MNT/s.img" 0 $((8 * M)) 2      # hot data stays hot
read -r _ m4 <<<"$(stats default)"
strace_inject "$TESSERA_PID" pwrite64 delay_enter=200000 "${WF[@]}"
# the writer: rewrite w (1 MiB buffered pwrites, fsync every 8 MiB) for 12 s; more than the dirty limit
# (8M), so write-back runs against the slow store the whole time
py '
import os, random, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
r = random.Random(22); end = time.monotonic() + 12; n = 0
while time.monotonic() < end:
    off = (n % 32) << 20
    os.pwrite(fd, r.randbytes(1 << 20), off); n += 1
    if n % 8 == 0: os.fsync(fd)
os.fsync(fd); os.close(fd)
print(n)
' "$MNT/w.img" > writer-d.out 2> writer-d.err &
wpid=$!
defer kill -KILL "$wpid"
sleep 2
py '
import mmap, os, random, statistics, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096); r = random.Random(1); lat = []
end = time.monotonic() + 8
while time.monotonic() < end:
    o = r.randrange(0, 8 << 20, 4096)
    t = time.monotonic(); k = os.preadv(fd, [m], o); lat.append(time.monotonic() - t)
    if k != 4096: sys.exit(f"short read {k}")
    time.sleep(0.02)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"{len(lat)} {q(0.5):.2f} {q(0.9):.2f} {q(0.99):.2f} {lat[-1] * 1000:.2f}")
' "$MNT/s.img" > reads-d.out 2> reads-d.err || problem "slow store: cached reads failed: $(cat reads-d.err)"
read -r nreads p50 p90 p99 pmax < reads-d.out || true
info "  $nreads cached 4K reads during write-back to a slow store: p50 ${p50} ms, p90 ${p90} ms, p99 ${p99} ms, max ${pmax} ms"
wrc=0
wait "$wpid" || wrc=$?
delayed=$(grep -c 'pwrite64' "$ST_OUT" || true)
strace_stop
info "  writer: exit $wrc, $(cat writer-d.out) MiB written; $delayed pwrite64 delayed by strace"
[ "$wrc" = 0 ] || problem "slow store: the writer failed (exit $wrc): $(tail -n 3 writer-d.err)"
[ "$delayed" -ge 5 ] || problem "slow store: only $delayed pwrite64 went through the delay (the test did not exercise write-back)"
py 'import sys; sys.exit(0 if float(sys.argv[1]) < 50 else 1)' "${p50:-999}" || problem "slow store: p50 of cached reads is ${p50:-?} ms (want < 50 ms; store delay 200 ms)"
read -r _ m5 <<<"$(stats default)"
[ $((m5 - m4)) -le $(( ${nreads:-0} / 10 + 5 )) ] || problem "slow store: the hot reads missed $((m5 - m4)) times (they were not cached)"
# w holds the writer's last data, s is intact
must py '
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
r = random.Random(22); n = int(sys.argv[2]); last = {}
for i in range(n): last[i % 32] = r.randbytes(1 << 20)
for c, b in last.items():
    if os.pread(fd, 1 << 20, c << 20) != b: sys.exit(f"w: MiB {c} is not the last data written")
' "$MNT/w.img" "$(cat writer-d.out)"
[ "$(range_md5 "$MNT/s.img" 0 $((8 * M)))" = "$(py 'import hashlib, random; print(hashlib.md5(random.Random(11).randbytes(8 << 20)).hexdigest())')" ] ||
    problem "slow store: the hot region of s reads back wrong"
stop_tessera

# ---------------------------------------------------------------------------------------------------------
info "(e) crash with the write-back cache on an s3 pool"
if [ -z "${TESSERA_TEST_S3_URL:-}" ]; then
    printf '  %s\n' "${PROBLEMS[@]}" >&2
    fail "TESSERA_TEST_S3_URL is not set: the s3 part of this test needs an S3 endpoint (Scripts/test starts Ceph RGW and sets it, with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
fi
[[ -n ${AWS_ACCESS_KEY_ID:-} && -n ${AWS_SECRET_ACCESS_KEY:-} ]] || fail "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set"
s3u check 2>s3check.err || fail "the S3 endpoint/bucket $TESSERA_TEST_S3_URL does not answer: $(tail -n 3 s3check.err)"
PREFIX=its3-99-$(date +%s)-$RANDOM$RANDOM
defer s3u delete "$PREFIX"
T_CACHE_SIZE=64M
DATA=; MNT=
new_data_dir
DATA=$(realpath "$DATA")
must tcli pool create s3p
must tcli store add s3c --pool s3p --s3 "${TESSERA_TEST_S3_URL%/}/$PREFIX"
start_tessera --no-init
must tcli volume create crash --size 64M --pool s3p
# new chunks on s3 cost a GET and two PUTs each: give the writer longer to get writes acknowledged
crash_rounds crash.img 2 s3 4000
n_obj=$(s3u count "$PREFIX/chunks")
info "  $n_obj chunk objects on the s3 store"
[ "$n_obj" -ge 1 ] || problem "s3 crash: no chunk objects on the s3 store"
stop_tessera
s3u delete "$PREFIX" >/dev/null
[ "$(s3u count "$PREFIX")" = 0 ] || problem "objects left under $PREFIX after deleting them"

if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    printf '  %s\n' "${PROBLEMS[@]}" >&2
    fail "${#PROBLEMS[@]} problems"
fi
pass

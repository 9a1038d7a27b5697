# Shared helpers for Tessera's integration tests. Sourced, never executed.
#
# Every test runs as:  TESSERA_BIN=/path/to/tessera bash Tests/Integration/NN-name.sh
# with a fresh temporary working directory as its CWD. Each test:
#   - sources this file right after `set -euo pipefail`,
#   - registers anything it sets up with `defer CMD...` (run in reverse order at exit, even on failure),
#   - calls `fail MSG` (or an assert_* helper) on any wrong outcome,
#   - calls `pass` at the very end.
#
# Knobs: T_TIMEOUT (seconds, default 600): the watchdog aborts the test's FUSE connections and kills the
# test if it runs longer. T_KEEP=1 keeps the scratch directories even on success.

: "${TESSERA_BIN:?TESSERA_BIN must name the tessera binary}"
[ -x "$TESSERA_BIN" ] || { echo "FAIL: TESSERA_BIN=$TESSERA_BIN is not executable" >&2; exit 1; }
TESSERA_BIN=$(realpath "$TESSERA_BIN")
export TESSERA_BIN

T_NAME=$(basename "$0" .sh)
# shellcheck disable=SC2034  # used by the tests that source this file
T_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)   # Tests/Integration, for crashwriter.py etc.
T_WORK=$(mktemp -d "$PWD/$T_NAME.XXXXXX")              # scratch for this test; also its CWD
cd "$T_WORK" || exit 1
T_TIMEOUT=${T_TIMEOUT:-600}
T_FAILED=0
T_DEFERRED=()
T_MOUNTS=()        # "MNT|DATA" of every mount this test started
T_START=$(date +%s)
# The system's python3 (the tests use only its standard library): a version manager's shim in PATH costs
# about 0.25 s per start, and the tests start python thousands of times.
# T_PYTHON_SITE is the python3 PATH named before (with whatever the admin installed by pip), for optional
# checks such as 22-api's OpenAPI validation.
T_PYTHON_SITE=$(command -v python3 || true)
export T_PYTHON_SITE
if [ -x /usr/bin/python3 ] && [ "$T_PYTHON_SITE" != /usr/bin/python3 ]; then
    mkdir -p "$T_WORK/.bin" && ln -sf /usr/bin/python3 "$T_WORK/.bin/python3" && PATH="$T_WORK/.bin:$PATH"
fi
[ "$(id -u)" = 0 ] || { echo "FAIL [$T_NAME]: integration tests must run as root (FUSE, losetup, libvirt)" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------------
# reporting

info() { echo "[$T_NAME +$(( $(date +%s) - T_START ))s] $*"; }
warn() { echo "[$T_NAME] WARNING: $*" >&2; }

# indent PREFIX TEXT: TEXT with PREFIX before each of its lines.
indent() { printf '%s%s\n' "$1" "${2//$'\n'/$'\n'$1}"; }

# fail MSG: print the message and exit non-zero (the EXIT trap cleans up).
fail() {
    T_FAILED=1
    echo "FAIL [$T_NAME]: $*" >&2
    exit 1
}

pass() {
    echo "PASS [$T_NAME] ($(( $(date +%s) - T_START ))s)"
}

# need CMD...: fail unless each command exists (tests name what they need; Scripts/test installs it).
need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || fail "required command '$c' is not installed"
    done
}

# ---------------------------------------------------------------------------------------------------------
# cleanup

# defer CMD ARGS...: run at exit (last registered runs first). Errors in deferred commands are ignored.
defer() {
    local q
    q=$(printf '%q ' "$@")
    T_DEFERRED+=("$q")
}

_t_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    [ "$rc" -ne 0 ] && T_FAILED=1
    [ -n "${T_WATCHDOG:-}" ] && kill "$T_WATCHDOG" 2>/dev/null && wait "$T_WATCHDOG" 2>/dev/null
    local i
    for (( i=${#T_DEFERRED[@]}-1; i>=0; i-- )); do
        eval "${T_DEFERRED[$i]}" >/dev/null 2>&1
    done
    # Every mount this test started, even if the test forgot to defer it.
    local m
    for m in "${T_MOUNTS[@]}"; do
        _t_force_stop "${m%%|*}" "${m#*|}"
    done
    if [ "$T_FAILED" -ne 0 ]; then
        for m in "${T_MOUNTS[@]}"; do
            local d=${m#*|}
            if [ -s "$d/tessera.log" ]; then
                echo "---- last lines of $d/tessera.log ----" >&2
                tail -n 40 "$d/tessera.log" >&2
            fi
        done
        echo "[$T_NAME] scratch kept in $T_WORK" >&2
    elif [ "${T_KEEP:-0}" != 1 ]; then
        rm -rf "$T_WORK"
    fi
    exit "$rc"
}
trap _t_cleanup EXIT

# Watchdog: after T_TIMEOUT seconds abort our FUSE connections (so nothing stays stuck in the kernel)
# and terminate the test; the TERM trap reports the timeout and the EXIT trap cleans up. It sleeps in
# one-second steps so that killing it leaves no long-lived child holding the test's output open.
_t_watchdog() {
    local i c
    for (( i=0; i<T_TIMEOUT; i++ )); do sleep 1; done
    touch "$T_WORK/.timed-out"
    mountpoint -q /sys/fs/fuse/connections || mount -t fusectl none /sys/fs/fuse/connections
    if [ -f "$T_WORK/.fuse-conns" ]; then
        while read -r c; do
            echo 1 > "/sys/fs/fuse/connections/$c/abort"
        done < "$T_WORK/.fuse-conns"
    fi
    kill -TERM $$
    for (( i=0; i<60; i++ )); do sleep 1; done
    kill -KILL $$
}
_t_watchdog </dev/null >/dev/null 2>&1 &
T_WATCHDOG=$!
trap '[ -e "$T_WORK/.timed-out" ] && fail "timed out after ${T_TIMEOUT}s (FUSE connections aborted)"; fail "interrupted by signal"' INT TERM

# ---------------------------------------------------------------------------------------------------------
# assertions

# expect_fail [--code N[,M...]] CMD ARGS...: CMD must exit non-zero (not by a signal), print a message on
# stderr, and, if --code is given, exit with one of the listed codes. Codes 2-9 (Tessera's own errors)
# must come with exactly one line on stderr. Sets EF_ERR to CMD's stderr.
expect_fail() {
    local codes=""
    if [ "$1" = --code ]; then codes=$2; shift 2; fi
    local out="$T_WORK/.ef.out" err="$T_WORK/.ef.err" rc=0
    "$@" >"$out" 2>"$err" </dev/null || rc=$?
    EF_ERR=$(cat "$err")
    local shown
    shown=$(printf '%q ' "$@")
    [ "$rc" -ne 0 ] || fail "expected failure but it succeeded: $shown (stdout: $(head -c 300 "$out"))"
    [ "$rc" -lt 128 ] || fail "killed by signal $((rc-128)) (crash?): $shown; stderr: $(head -c 600 "$err")"
    [ -n "$EF_ERR" ] || fail "failed (exit $rc) without a message on stderr: $shown"
    if [ -n "$codes" ] && [[ ",$codes," != *",$rc,"* ]]; then
        fail "expected exit code in {$codes}, got $rc: $shown; stderr: $EF_ERR"
    fi
    if [ "$rc" -ge 2 ] && [ "$rc" -le 9 ] && [ "$(wc -l <"$err")" -gt 1 ]; then
        fail "expected one line on stderr (exit $rc), got $(wc -l <"$err"): $shown:"$'\n'"$EF_ERR"
    fi
    if grep -qiE 'fatal error|stack dump|backtrace|Swift runtime failure' "$err"; then
        fail "error looks like a crash: $shown:"$'\n'"$EF_ERR"
    fi
}

# must CMD ARGS...: run CMD; on failure, fail with its exit code and stderr.
must() {
    local err="$T_WORK/.must.err" rc=0
    "$@" 2>"$err" || rc=$?
    if [ "$rc" -ne 0 ]; then
        fail "command failed (exit $rc): $(printf '%q ' "$@"):"$'\n'"$(head -c 2000 "$err")"
    fi
    cat "$err" >&2
}

assert_eq() {  # assert_eq ACTUAL EXPECTED WHAT
    [ "$1" == "$2" ] || fail "$3: expected '$2', got '$1'"
}

assert_le() {  # assert_le A B WHAT  (integers)
    [ "$1" -le "$2" ] || fail "$3: expected $1 <= $2"
}

# file_size PATH / file_blocks PATH (512-byte units) / file_mode PATH (octal) / file_owner PATH (uid:gid)
file_size()   { stat -c %s "$1"; }
file_blocks() { stat -c %b "$1"; }
file_mode()   { stat -c %a "$1"; }
file_owner()  { stat -c %u:%g "$1"; }

# py CODE ARGS...: run python3 with CODE (sys.argv[1:] = ARGS).
py() { local code=$1; shift; python3 -c "$code" "$@"; }

# json EXPR: read JSON on stdin as `d`, print eval(EXPR) (strings raw, others as JSON).
json() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
v = eval(sys.argv[1])
print(v if isinstance(v, str) else json.dumps(v, sort_keys=True))
' "$1"
}

# is_zero PATH OFFSET LENGTH: exit 0 iff the range reads as zeros.
is_zero() {
    py '
import sys
p, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(p, "rb") as f:
    f.seek(off)
    left = n
    while left:
        b = f.read(min(left, 1 << 20))
        if not b: sys.exit("short read")
        if b.count(0) != len(b): sys.exit(1)
        left -= len(b)
' "$@"
}

# range_md5 PATH OFFSET LENGTH
range_md5() {
    py '
import hashlib, sys
p, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = hashlib.md5()
with open(p, "rb") as f:
    f.seek(off)
    left = n
    while left:
        b = f.read(min(left, 1 << 20))
        if not b: break
        h.update(b); left -= len(b)
print(h.hexdigest())
' "$@"
}

# write_random PATH OFFSET LENGTH [SEED]: write pseudo-random bytes in place (no truncation).
write_random() {
    py '
import os, random, sys
p, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else None)
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
try:
    done = 0
    while done < n:
        k = min(n - done, 1 << 20)
        b = r.randbytes(k)
        w = os.pwrite(fd, b, off + done)
        if w != k: sys.exit("short write")
        done += k
    os.fsync(fd)
finally:
    os.close(fd)
' "$@"
}

# ---------------------------------------------------------------------------------------------------------
# tessera

# tcli ARGS...: the CLI against the current data directory ($DATA).
tcli() { TESSERA_DATA="$DATA" "$TESSERA_BIN" "$@"; }

# new_data_dir [INIT-OPTION...]: create and init a fresh data directory; sets DATA.
# shellcheck disable=SC2120  # the options are optional: most tests take init's defaults
new_data_dir() {
    DATA=$(mktemp -d "$T_WORK/data.XXXXXX")
    must tcli init "$@"
    [ -f "$DATA/catalog.db" ] || fail "init did not create $DATA/catalog.db"
}

_t_is_mounted() {
    local mp
    mp=$(realpath -m "$1")
    awk -v mp="$mp" '$5 == mp { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# fuse connection id of a mountpoint (its minor device number), from mountinfo (no syscall into FUSE).
_t_fuse_conn() {
    local mp
    mp=$(realpath -m "$1")
    awk -v mp="$mp" '$5 == mp { split($3, d, ":"); c = d[2] } END { if (c != "") print c }' /proc/self/mountinfo
}

# daemon_pid [DATA]: the pid of the mount daemon owning DATA (from DATA/lock, which holds it).
daemon_pid() {
    local d=${1:-$DATA} pid
    pid=$(tr -dc '0-9' < "$d/lock" 2>/dev/null || true)
    if [ -n "$pid" ] && [ -d "/proc/$pid" ]; then echo "$pid"; return 0; fi
    return 1
}

# start_tessera [--allow-other] [--no-init] [--api HOST:PORT]: mount $DATA (a fresh data directory unless --no-init or
# $DATA is already set) at $MNT (fresh unless set), in the background; waits until mounted.
# Sets DATA, MNT, TESSERA_PID. T_CACHE_SIZE (e.g. 64M), when set, is passed as --cache-size.
start_tessera() {
    local opts=() init=1
    [ -n "${T_CACHE_SIZE:-}" ] && opts+=(--cache-size "$T_CACHE_SIZE")
    while [ $# -gt 0 ]; do
        case "$1" in
            --allow-other) opts+=(--allow-other) ;;
            --no-init) init=0 ;;
            --api) opts+=(--api "$2"); shift ;;
            *) fail "start_tessera: unknown option $1" ;;
        esac
        shift
    done
    if [ -z "${DATA:-}" ]; then
        [ "$init" = 1 ] || fail "start_tessera --no-init without DATA"
        new_data_dir
    fi
    [ -n "${MNT:-}" ] || MNT=$(mktemp -d "$T_WORK/mnt.XXXXXX")
    mkdir -p "$MNT"
    T_MOUNTS+=("$MNT|$DATA")
    defer _t_force_stop "$MNT" "$DATA"
    local rc=0 err="$T_WORK/.mount.err"
    timeout 60 env TESSERA_DATA="$DATA" "$TESSERA_BIN" mount "$MNT" --background "${opts[@]}" 2>"$err" || rc=$?
    [ "$rc" -eq 0 ] || fail "tessera mount $MNT failed (exit $rc): $(cat "$err")"
    local i
    for (( i=0; i<100; i++ )); do
        _t_is_mounted "$MNT" && break
        sleep 0.1
    done
    _t_is_mounted "$MNT" || fail "tessera mount --background returned 0 but $MNT is not mounted"
    _t_fuse_conn "$MNT" >> "$T_WORK/.fuse-conns"
    TESSERA_PID=$(daemon_pid "$DATA") || fail "cannot find the mount daemon's pid in $DATA/lock"
    # the mount must answer
    timeout 20 stat "$MNT" >/dev/null || fail "stat $MNT failed or hung right after mount"
    timeout 20 test -d "$MNT/.snapshots" || fail "$MNT/.snapshots is missing"
}

# stop_tessera: a clean `tessera unmount` (a few retries for a briefly busy mount). Fails the test when
# the mount cannot be unmounted cleanly or the daemon does not exit.
stop_tessera() {
    local i rc err="$T_WORK/.unmount.err" pid=${TESSERA_PID:-}
    sync
    for (( i=0; i<10; i++ )); do
        rc=0
        timeout 60 env TESSERA_DATA="$DATA" "$TESSERA_BIN" unmount "$MNT" 2>"$err" || rc=$?
        [ "$rc" -eq 0 ] && break
        sleep 1
    done
    [ "$rc" -eq 0 ] || fail "tessera unmount $MNT failed (exit $rc) after retries: $(cat "$err")"
    for (( i=0; i<100; i++ )); do
        _t_is_mounted "$MNT" || break
        sleep 0.1
    done
    _t_is_mounted "$MNT" && fail "tessera unmount returned 0 but $MNT is still mounted"
    if [ -n "$pid" ]; then
        for (( i=0; i<300; i++ )); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        [ -d "/proc/$pid" ] && fail "the daemon (pid $pid) did not exit within 30s of tessera unmount"
    fi
    TESSERA_PID=
    return 0
}

# restart_tessera [--allow-other]: stop cleanly and mount the same DATA at the same MNT again.
# shellcheck disable=SC2120  # the option is optional: most tests remount without it
restart_tessera() {
    local ao=()
    [ "${1:-}" = --allow-other ] && ao=(--allow-other)
    stop_tessera
    start_tessera --no-init "${ao[@]}"
}

# _t_force_stop MNT DATA: best effort, for cleanup: unmount however possible and end the daemon.
_t_force_stop() {
    local mnt=$1 data=$2 pid
    pid=$(daemon_pid "$data" 2>/dev/null || true)
    if _t_is_mounted "$mnt"; then
        timeout 20 env TESSERA_DATA="$data" "$TESSERA_BIN" unmount "$mnt" >/dev/null 2>&1 ||
            timeout 20 env TESSERA_DATA="$data" "$TESSERA_BIN" unmount --force "$mnt" >/dev/null 2>&1
        _t_is_mounted "$mnt" && { fusermount3 -u "$mnt" || fusermount3 -uz "$mnt" || umount -l "$mnt"; } >/dev/null 2>&1
    fi
    if [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -qa mount "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        local i
        for (( i=0; i<50; i++ )); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    return 0
}

# kill_tessera: SIGKILL the daemon (a crash), then detach the dead mount. Leaves DATA as the crash left it.
kill_tessera() {
    local pid=${TESSERA_PID:-}
    [ -n "$pid" ] || pid=$(daemon_pid) || fail "kill_tessera: no daemon pid"
    kill -KILL "$pid" || fail "kill -9 $pid failed"
    local i
    for (( i=0; i<100; i++ )); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && fail "daemon $pid still alive after SIGKILL"
    if _t_is_mounted "$MNT"; then
        fusermount3 -uz "$MNT" 2>/dev/null || umount -l "$MNT" || fail "cannot detach the dead mount $MNT"
    fi
    TESSERA_PID=
}

# volume_names: sorted volume names, one per line (offline or via the mount's control socket).
# (Inside $(...) a failure prints FAIL and the caller's assignment fails, which ends the test.)
volume_names() {
    local j
    j=$(tcli volume list --json) || fail "tessera volume list --json failed"
    json '"\n".join(sorted(v["name"] for v in d))' <<<"$j" || fail "volume list --json is not the expected JSON: $j"
}

# has_volume NAME: status 0 if the volume is listed, 1 if not; the test fails if the listing fails.
has_volume() {
    local names
    names=$(volume_names) || fail "cannot list volumes"
    grep -qxF -- "$1" <<<"$names"
}

# run_fio LOG ARGS...: runs fio with ARGS (output to LOG, 300 s at most); fails the test, showing the log's
# tail, when fio exits non-zero or reports a verify failure or an I/O error.
run_fio() {   # LOG ARGS...
    local log=$1 rc=0; shift
    timeout 300 fio "$@" > "$log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ] || grep -qE 'verify: bad|crc32c: verify failed|err= *[1-9]' "$log"; then
        tail -n 40 "$log" >&2
        fail "fio $log failed (exit $rc)"
    fi
}

# has_line TEXT LINE: status 0 if TEXT has LINE as a whole line. (Never `cmd | grep -q` under pipefail:
# grep -q exits early, cmd gets SIGPIPE, and the pipeline fails at random.)
has_line() { grep -qxF -- "$2" <<<"$1"; }

# volume_field NAME FIELD
volume_field() {
    local j
    j=$(tcli volume show "$1" --json) || fail "tessera volume show $1 --json failed"
    json "d[\"$2\"]" <<<"$j" || fail "volume show --json: no field $2 in $j"
}

# chunk_size NAME: the volume's chunk size in bytes
chunk_size() { volume_field "$1" chunkSize; }

# ---------------------------------------------------------------------------------------------------------
# loop devices

# loop_attach FILE [losetup options...]: attach FILE, set LOOP_DEV; detached at exit. Do not call it
# inside $(...): the deferred detach would be registered in the subshell and lost.
loop_attach() {
    local f=$1; shift
    LOOP_DEV=$(losetup -f --show "$@" "$f") || fail "losetup $* $f failed"
    defer losetup -d "$LOOP_DEV"
}

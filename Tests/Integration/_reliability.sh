# Helpers for the reliability scripts (80-crash, 81-crash-points, 82-powercut, 83-faults, 15-bad-input).
# Sourced after lib.sh, never executed (Scripts/test skips _*.sh).
#
#   rel_init CHECK                 name of the JSON check this script reports
#   rel_set KEY VALUE              a counter/field of the JSON line (integers stay numbers)
#   rel_add KEY N                  add N to an integer field
# At exit (pass or fail) one JSON line {"check":CHECK, ..., "ok":true|false} is appended to
# $RELIABILITY_OUT when that variable is set; the line is written by a deferred handler, so a test that
# fails half-way still reports what it counted (and ok=false).
#
#   dead_mount_detach MNT          umount -l a mount whose daemon died (fusermount3 -uz as a fallback)
#   wait_pid_gone PID [TENTHS]     wait until PID is gone (default 10 s); status 1 if still alive
#   sqlite_ok DB                   the catalog opens and passes PRAGMA integrity_check (python3's sqlite3)

: "${TESSERA_BIN:?_reliability.sh is sourced after lib.sh}"

declare -A REL_FIELDS=()
REL_KEYS=()
REL_CHECK=""

rel_init() {
    REL_CHECK=$1
    defer _rel_flush
}

rel_set() {
    [ -n "${REL_FIELDS[$1]+x}" ] || REL_KEYS+=("$1")
    REL_FIELDS[$1]=$2
}

rel_add() {
    local cur=${REL_FIELDS[$1]:-0}
    rel_set "$1" $((cur + $2))
}

rel_get() { echo "${REL_FIELDS[$1]:-0}"; }

_rel_flush() {
    [ -n "${RELIABILITY_OUT:-}" ] || return 0
    [ -n "$REL_CHECK" ] || return 0
    local line k v ok=true
    [ "${T_FAILED:-0}" -ne 0 ] && ok=false
    line="{\"check\":\"$REL_CHECK\""
    for k in "${REL_KEYS[@]}"; do
        v=${REL_FIELDS[$k]}
        if [[ $v =~ ^-?[0-9]+$ ]]; then
            line+=",\"$k\":$v"
        else
            v=${v//\\/\\\\}
            v=${v//\"/\\\"}
            line+=",\"$k\":\"$v\""
        fi
    done
    line+=",\"seconds\":$(( $(date +%s) - T_START )),\"ok\":$ok}"
    echo "$line" >> "$RELIABILITY_OUT"
}

dead_mount_detach() {
    local mnt=$1
    if _t_is_mounted "$mnt"; then
        umount -l "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || fail "cannot detach the dead mount $mnt"
    fi
    _t_is_mounted "$mnt" && fail "$mnt is still mounted after umount -l"
    return 0
}

wait_pid_gone() {
    local pid=$1 n=${2:-100} i
    for (( i=0; i<n; i++ )); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.1
    done
    [ ! -d "/proc/$pid" ]
}

sqlite_ok() {
    py '
import sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
r = c.execute("PRAGMA integrity_check").fetchall()
if r != [("ok",)]:
    sys.exit(f"integrity_check: {r[:5]}")
' "$1"
}

# chunk_file_count DATA: number of chunk files of the default store
chunk_file_count() {
    find "$1/stores/default/chunks" -type f | wc -l
}

# start_fg NAME: mount $DATA at $MNT (fresh if unset) with the daemon in the foreground (its log, including
# any crash report, goes to $T_WORK/NAME.log rather than into DATA); waits until the mount answers.
# Sets MNT, TESSERA_PID, FG_LOG.
start_fg() {
    local name=$1 i
    [ -n "${MNT:-}" ] || MNT=$(mktemp -d "$T_WORK/mnt.XXXXXX")
    mkdir -p "$MNT"
    FG_LOG=$T_WORK/$name.log
    T_MOUNTS+=("$MNT|$DATA")
    TESSERA_DATA="$DATA" setsid "$TESSERA_BIN" mount "$MNT" </dev/null >"$FG_LOG" 2>&1 &
    TESSERA_PID=$!
    disown "$TESSERA_PID"   # no "Killed" job notices when a test kills it on purpose
    defer _t_force_stop "$MNT" "$DATA"
    for (( i=0; i<300; i++ )); do
        _t_is_mounted "$MNT" && break
        [ -d "/proc/$TESSERA_PID" ] || fail "tessera mount exited before mounting: $(tail -n 20 "$FG_LOG")"
        sleep 0.1
    done
    _t_is_mounted "$MNT" || fail "tessera mount $MNT did not mount within 30 s: $(tail -n 20 "$FG_LOG")"
    _t_fuse_conn "$MNT" >> "$T_WORK/.fuse-conns"
    timeout 20 stat "$MNT" >/dev/null || fail "stat $MNT failed or hung right after mount"
}

# crashed_daemon PID LOG: status 0 if the daemon crashed (a Swift runtime crash report in LOG, or a
# swift-backtrace child still running).
crashed_daemon() {
    local pid=$1 log=$2
    grep -qE 'Fatal error|fatal error|Crash|crashed|Swift runtime failure|Thread [0-9]+ crashed|Backtrace' "$log" 2>/dev/null && return 0
    [ -d "/proc/$pid" ] && pgrep -P "$pid" -x swift-backtrace >/dev/null 2>&1 && return 0
    return 1
}

# kill_hard PID MNT: SIGKILL the daemon (and a swift-backtrace child, if it is reporting a crash), wait for
# it, detach its dead mount.
kill_hard() {
    local pid=$1 mnt=$2 c
    if [ -d "/proc/$pid" ]; then
        for c in $(pgrep -P "$pid" 2>/dev/null || true); do kill -KILL "$c" 2>/dev/null || true; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait_pid_gone "$pid" || fail "daemon $pid still alive 10 s after SIGKILL"
    dead_mount_detach "$mnt"
    TESSERA_PID=
}

# process_gone PID: status 0 if PID has exited (gone, or a zombie nobody reaped yet).
process_gone() {
    [ ! -d "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" = Z ]
}

# strace_inject PID SYSCALLS ACTION PATH...: attach strace to every thread of PID (and threads it starts),
# acting on the syscalls in SYSCALLS (comma list) that touch one of the PATHs: ACTION is an inject spec
# such as "signal=KILL:when=3" or "error=EIO". Waits until every thread is traced. Sets ST_PID, ST_OUT.
strace_inject() {
    local pid=$1 calls=$2 action=$3 p i t all
    shift 3
    local args=()
    for p in "$@"; do args+=(-P "$p"); done
    ST_OUT=$(mktemp "$T_WORK/strace.XXXXXX")
    strace -f -qq -p "$pid" -e trace="$calls" -e inject="$calls:$action" "${args[@]}" -o "$ST_OUT" 2>>"$ST_OUT.err" &
    ST_PID=$!
    for (( i=0; i<100; i++ )); do
        all=1
        for t in /proc/"$pid"/task/*; do
            [ "$(awk '/^TracerPid:/ { print $2 }' "$t/status" 2>/dev/null)" = "$ST_PID" ] || { all=0; break; }
        done
        [ "$all" = 1 ] && return 0
        if [ ! -d "/proc/$ST_PID" ]; then
            # The injection may fire as soon as the first threads are traced (a background flush makes
            # the syscall before this loop sees them all): then the daemon is dead and strace done.
            process_gone "$pid" && return 0
            fail "strace exited before attaching to $pid: $(cat "$ST_OUT.err")"
        fi
        sleep 0.05
    done
    fail "strace did not attach to every thread of $pid within 5 s"
}

# strace_stop: detach strace (if still running) and reap it.
strace_stop() {
    [ -n "${ST_PID:-}" ] || return 0
    if [ -d "/proc/$ST_PID" ]; then
        kill -TERM "$ST_PID" 2>/dev/null || true
        wait_pid_gone "$ST_PID" 50 || kill -KILL "$ST_PID" 2>/dev/null || true
    fi
    wait "$ST_PID" 2>/dev/null || true
    ST_PID=
}

# orphan_chunks DATA: chunk files in the default store minus the chunks the catalog says are allocated
# (sum over volumes of allocated/chunkSize); prints the difference (0 when consistent).
orphan_chunks() {
    local files j
    files=$(chunk_file_count "$1")
    j=$(tcli volume list --json) || fail "tessera volume list --json failed"
    json "$files - sum(v['allocated'] // v['chunkSize'] for v in d)" <<<"$j"
}

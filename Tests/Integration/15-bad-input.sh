#!/usr/bin/env bash
# Bad input everywhere. A table of CLI invocations that must be refused — bad names, bad sizes, unknown
# objects, duplicates, missing/conflicting flags, bad store directories — each with a non-zero exit (from
# the expected set), exactly one line on stderr, and no change to `volume list --json`, `pool list --json`
# and `store list --json`. The table runs twice: without a mount (the CLI opens the catalog) and with a
# mount running (the CLI goes through the control socket); the exit codes must be the same both times.
# Then the FUSE surface: truncations past 1 PiB, bad file names, mkdir, links, renames into .snapshots, unaligned
# O_DIRECT, writes past 1 PiB, odd-but-valid names. The daemon must never crash.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_reliability.sh"
need python3
rel_init bad-input
rel_set tried 0
rel_set failures 0
FAILS=()

bad() {   # WHAT
    rel_add failures 1
    FAILS+=("$1")
    warn "$1"
}

new_data_dir
DATA=$(realpath "$DATA")
SDIR=$T_WORK/sdir          # a good, empty store directory
mkdir -p "$SDIR" "$SDIR-offline" "$SDIR-mounted"
touch "$T_WORK/afile"
must tcli volume create v --size 16M
must tcli volume create e-2 --size 1M
must tcli pool create p1
must tcli domain create full --quota-volumes 1 --quota-size 1M --quota-snapshots 0
must tcli volume create fv --size 1M --domain full

# ---------------------------------------------------------------------------------------------------------
# the table: ROWS[i] = "CODES ARGS..." (printf %q-quoted); CODES = allowed exit codes, comma-separated

ROWS=()
row() {   # CODES ARGS...
    local codes=$1 q
    shift
    q=$(printf '%q ' "$@")
    ROWS+=("$codes ${q% }")
}

LONG=$(printf 'n%.0s' $(seq 1 300))
BAD_NAMES=('' 'a/b' '..' '.' '.x' 'x.img' "$LONG" $'a\nb' $'a\x01b' $'del\x7f' $'esc\x1b[31m')
for n in "${BAD_NAMES[@]}"; do
    row 2       volume create "$n" --size 1M
    row 2       volume create "$n" --size 1M --count 2
    row 2,3     volume show "$n"
    row 2,3     volume resize "$n" --size 2M
    row 2,3     volume delete "$n"
    row 2       pool create "$n"
    row 2,3     pool show "$n"
    row 2       store add "$n" --pool default --dir "$SDIR"
    row 2,3     volume create okname --size 1M --pool "$n"
    row 2,3     store add okstore --pool "$n" --dir "$SDIR"
    row 2       domain create "$n"
done

BAD_SIZES=(0 -1 abc 1.5G 1Q 513 2P 99999999999999999999 '' ' ' '1 G' 0x100 1M1 1125899906843136 -512 1e6)
# (a negative number looks like an option to the argument parser: a usage error, exit 64, is fine there)
neg() { [[ $1 == -* ]] && echo 2,64 || echo 2; }
for s in "${BAD_SIZES[@]}"; do
    row "$(neg "$s")" volume create s --size "$s"
    row "$(neg "$s")" volume resize v --size "$s"
done
for c in 0 -1 3K 1000 128M abc 1.5M ''; do
    row "$(neg "$c")" pool create pc --chunk-size "$c"
done
row 2       volume resize v --size 1M                 # smaller than 16M: needs --shrink
row 2       volume resize v --size 1M --force         # --force goes with --shrink
row 2       volume resize v --size 32M --force
row 2       volume create cnt --size 1M --count 0
row 2       volume create cnt --size 1M --count 10001
for c in -1 abc ''; do   # not an integer at all: the argument parser's own error (64) is fine
    row 2,64    volume create cnt --size 1M --count "$c"
done

# unknown objects
row 3       volume show nov
row 3       volume resize nov --size 1M
row 3       volume delete nov
row 3       pool show nop
row 3       volume create x --size 1M --pool nop
row 3       store add s9 --pool nop --dir "$SDIR"
row 6       volume list --data "$T_WORK/nodata"
# domains (the rest of their bad input is in 21-domains.sh)
row 3       volume create x --size 1M --domain nod
row 9       volume create fv2 --size 512 --domain full     # 1 volume at most
row 9       volume resize fv --size 2M --domain full       # 1M at most
row 2       domain delete default
row 5       domain delete full

# duplicates
row 4       volume create v --size 1M
row 4       volume create e --size 1M --count 3       # e-2 exists: all or none
row 4       pool create default
row 4       pool create p1
row 4       store add default --pool default --dir "$SDIR"
row 4       domain create full
row 2,4     store add s2 --pool p1 --dir "$DATA/stores/default"   # a directory another store uses
row 2,4     store add s3 --pool p1 --dir "$DATA"                  # the data directory itself

# missing / conflicting / unknown flags and arguments
row 64      volume create x
row 64      volume create --size 1M
row 64      volume resize v
row 64      volume delete
row 64      volume show
row 64      pool create
row 64      store add s --pool default
row 64      store add s --dir "$SDIR"
row 64      store add --pool default --dir "$SDIR"
row 64      volume create x --size 1M --bogus
row 64      volume create x --size 1M extra
row 64      volume list extra
row 64      pool list --bogus
row 64      bogus
row 64      volume bogus
# (%M becomes the mode, so that a row wrongly accepted in the first run does not decide the second)
row 2,64    volume create x%M --size 1M --size 2M
row 2,64    volume resize v --size 1M --size 2M
row 2,64    store add s%M --pool default --pool p1 --dir "$SDIR-%M"

# store directories
row 2,3     store add s --pool p1 --dir "$T_WORK/missing"
row 2,3     store add s --pool p1 --dir "$T_WORK/afile"
row 2,3     store add s --pool p1 --dir ''
row 2,3     store add s --pool p1 --dir relative/missing

snapshot() {   # the listings, minus what follows the host's statfs (it moves) and when figures were read
    local k
    # (one at a time: without a mount each CLI call holds the catalog's lock)
    for k in volume pool store; do
        tcli "$k" list --json > "$T_WORK/snap.$k" 2>&1 || true
    done
    py '
import json, sys
def strip(x):
    if isinstance(x, dict): return {k: strip(v) for k, v in x.items() if k not in ("capacity", "free", "freeChunks", "filesystemFree", "filesystemUsed", "placementShare", "figuresAt", "healthSince")}
    if isinstance(x, list): return [strip(v) for v in x]
    return x
out = []
for f in sys.argv[1:]:
    try: out.append(strip(json.load(open(f))))
    except ValueError: sys.exit(f"{f}: not JSON: {open(f).read()[:300]}")
print(json.dumps(out, sort_keys=True))
' "$T_WORK/snap.volume" "$T_WORK/snap.pool" "$T_WORK/snap.store" || fail "a listing failed"
}

declare -A OUTCOME=() CLASSES=()
declare -a FAILED_ROWS=()
run_table() {   # MODE
    local mode=$1 i codes args before after rc lines first why
    after=$(snapshot)
    for i in "${!ROWS[@]}"; do
        codes=${ROWS[$i]%% *}
        eval "args=(${ROWS[$i]#* })"
        args=("${args[@]//%M/$mode}")
        before=$after
        rc=0
        TESSERA_DATA="$DATA" timeout 30 "$TESSERA_BIN" "${args[@]}" >"$T_WORK/row.out" 2>"$T_WORK/row.err" </dev/null || rc=$?
        lines=$(wc -l <"$T_WORK/row.err")
        # a last line without a newline counts as a line
        [ -s "$T_WORK/row.err" ] && [ "$(tail -c1 "$T_WORK/row.err" | od -An -tx1 | tr -d ' ')" != 0a ] && lines=$((lines + 1))
        first=$(head -n 1 "$T_WORK/row.err" | cut -c1-160)
        after=$(snapshot)
        rel_add tried 1
        local shown reasons=()
        shown=$(printf '%q ' "${args[@]}" | cut -c1-120)
        if [ "$rc" -eq 0 ]; then
            reasons+=("accepted (exit 0)")
        elif [ "$rc" -ge 124 ]; then
            reasons+=("exit $rc (timeout or signal: crash?)")
        else
            [[ ",$codes," == *",$rc,"* ]] || reasons+=("exit $rc instead of $codes")
            [ "$lines" -eq 1 ] || reasons+=("$lines lines on stderr")
        fi
        grep -qiE 'fatal error|stack dump|backtrace|Swift runtime failure' "$T_WORK/row.err" &&
            reasons+=("crash report on stderr")
        [ "$before" = "$after" ] || reasons+=("changed the catalog")
        if [ -n "${OUTCOME[$i]+x}" ]; then
            # (a row that wrongly succeeded without a mount changed the state the second run starts from)
            [ "${OUTCOME[$i]}" = "$rc" ] || [ "${OUTCOME[$i]}" = 0 ] || reasons+=("exit $rc with a mount but ${OUTCOME[$i]} without")
        else
            OUTCOME[$i]=$rc
        fi
        if [ "${#reasons[@]}" -gt 0 ]; then
            rel_add failures 1
            for why in "${reasons[@]}"; do
                why=${why//[0-9]/N}
                CLASSES[$why]=$(( ${CLASSES[$why]:-0} + 1 ))
            done
            FAILED_ROWS+=("[$mode] tessera $shown: $(IFS=';'; echo "${reasons[*]}"); stderr: $first")
        fi
    done
}

# mount / unmount misuse (outcomes differ between the modes by nature)
cli_case() {   # CODES WHAT ARGS...
    local codes=$1 what=$2 rc=0 lines
    shift 2
    TESSERA_DATA="$DATA" timeout 30 "$TESSERA_BIN" "$@" >/dev/null 2>"$T_WORK/row.err" </dev/null || rc=$?
    lines=$(wc -l <"$T_WORK/row.err")
    rel_add tried 1
    [[ ",$codes," == *",$rc,"* ]] || bad "$what: exit $rc, expected $codes ($(head -c 160 "$T_WORK/row.err"))"
    [ "$rc" -eq 0 ] || [ "$lines" -eq 1 ] || bad "$what: $lines lines on stderr"
}
info "CLI table (${#ROWS[@]} rows) without a mount"
run_table offline
cli_case 4      "init on an initialised data directory" init
info "CLI table with a mount running (control socket)"
start_fg daemon
run_table mounted
info "after the table: $(rel_get failures) failures"

# mount / unmount misuse (outcomes differ between the modes by nature)
cli_case 4,5    "init on a mounted data directory" init
cli_case 5      "a second mount of a mounted data directory" mount "$(mktemp -d "$T_WORK/m2.XXXXXX")" --background
cli_case 2,3,5  "mount on a missing mountpoint" mount "$T_WORK/nowhere"
cli_case 2,3,5  "unmount of a path that is not the mount" unmount /tmp
_t_is_mounted "$MNT" || fail "a bad unmount/mount call took the mount down"

# ---------------------------------------------------------------------------------------------------------
# the FUSE surface

# shellcheck disable=SC2012  # the listing is compared as a whole before and after, never parsed
fs_snapshot() { snapshot; ls -la --time-style=+ "$MNT" | sed 1d; stat -c '%n %s %a' "$MNT/v.img"; }

# fuse_case WHAT ERRNOS CMD...: CMD must fail (python3 snippets print the errno name; shell commands just
# exit non-zero: ERRNOS "*"), and change nothing.
fuse_case() {
    local what=$1 want=$2 rc=0 out
    shift 2
    local before after
    before=$(fs_snapshot)
    out=$( (cd "$MNT" && timeout 30 "$@") 2>&1) || rc=$?
    after=$(fs_snapshot)
    rel_add tried 1
    if [ "$want" = "*" ]; then
        [ "$rc" -ne 0 ] || bad "FUSE: $what: succeeded ($out)"
        [ "$rc" -lt 124 ] || bad "FUSE: $what: timed out or killed (exit $rc)"
    else
        [[ ",$want," == *",$out,"* ]] || bad "FUSE: $what: got '$out', expected one of $want"
    fi
    [ "$before" = "$after" ] || bad "FUSE: $what: changed something:"$'\n'"$(diff <(echo "$before") <(echo "$after") | head -n 10)"
    [ -d "/proc/$TESSERA_PID" ] || fail "FUSE: the daemon died at: $what"
}

# sc CODE: run python CODE (in the mount), print ok or the errno name of the OSError it raised
SC=$T_WORK/sc.py
cat > "$SC" <<'PY'
import errno, os, sys
try:
    exec(sys.argv[1])
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
PY
sc() { python3 "$SC" "$1"; }

P=$((1 << 50))
# (truncate to any byte size up to 1 PiB is valid: 31-odd-sizes.sh; past it, EFBIG as for a write)
fuse_case "truncate to 1P+1"                 EFBIG python3 "$SC" "os.truncate('v.img', $P + 1)"
fuse_case "truncate to 1P+512"               EFBIG python3 "$SC" "os.truncate('v.img', $P + 512)"
fuse_case "ftruncate to 1P+4097"             EFBIG python3 "$SC" "fd = os.open('v.img', os.O_RDWR); os.ftruncate(fd, $P + 4097)"
fuse_case "truncate to 2P"                   EFBIG python3 "$SC" "os.truncate('v.img', 2 * $P)"
fuse_case "create foo.txt"                   "*" touch foo.txt
fuse_case "create foo (no suffix)"           "*" touch foo
fuse_case "create .x.img"                    "*" touch .x.img
fuse_case "create x.img.img"                 "*" touch x.img.img
fuse_case "create .img"                      "*" touch .img
fuse_case "create a 201-byte name + .img"    "*" touch "$(printf 'b%.0s' $(seq 1 201)).img"
fuse_case "create a 255-byte file name"      "*" touch "$(printf 'c%.0s' $(seq 1 251)).img"
fuse_case "create a 256-byte file name"      ENAMETOOLONG python3 "$SC" "open('$(printf 'd%.0s' $(seq 1 252)).img', 'w')"
fuse_case "create with a newline in the name" "*" touch $'new\nline.img'
fuse_case "create with a control char"       "*" touch $'ctl\x01.img'
fuse_case "O_CREAT|O_EXCL on v.img"          EEXIST python3 "$SC" 'os.open("v.img", os.O_CREAT | os.O_EXCL | os.O_RDWR)'
fuse_case "mkdir"                            EPERM python3 "$SC" 'os.mkdir("d")'
fuse_case "mkdir d.img"                      EPERM python3 "$SC" 'os.mkdir("d.img")'
# mkdir .snapshots/NAME is a feature (it takes a snapshot); a bad name or a directory inside one is not
fuse_case "mkdir .snapshots/.hidden"         EINVAL,EPERM python3 "$SC" 'os.mkdir(".snapshots/.hidden")'
fuse_case "mkdir .snapshots/x.img"           EINVAL,EPERM python3 "$SC" 'os.mkdir(".snapshots/x.img")'
fuse_case "create in .snapshots"             "*" touch .snapshots/a.img
fuse_case "mkfifo p.img"                     "*" mkfifo p.img
fuse_case "mknod (device) n.img"             "*" mknod n.img b 7 200
fuse_case "symlink l.img"                    "*" ln -s v.img l.img
fuse_case "hard link h.img"                  "*" ln v.img h.img
fuse_case "rename into .snapshots"           "*" mv v.img .snapshots/
fuse_case "rename to v.txt"                  "*" mv -T v.img v.txt
fuse_case "rename to .h.img"                 "*" mv -T v.img .h.img
fuse_case "rename to a 201-byte name"        "*" mv -T v.img "$(printf 'e%.0s' $(seq 1 201)).img"
fuse_case "rename .snapshots"                "*" mv -T .snapshots snaps.img
fuse_case "rmdir .snapshots"                 "*" rmdir .snapshots
fuse_case "unlink .snapshots"                "*" rm -f .snapshots
fuse_case "truncate the .snapshots dir"      EISDIR,EPERM,EINVAL python3 "$SC" 'os.truncate(".snapshots", 0)'
fuse_case "pwrite at 1P"                     EFBIG python3 "$SC" "fd = os.open('v.img', os.O_RDWR); os.pwrite(fd, b'x' * 4096, $P)"
fuse_case "pwrite at 2^60"                   EFBIG,EINVAL python3 "$SC" "fd = os.open('v.img', os.O_RDWR); os.pwrite(fd, b'x' * 4096, 1 << 60)"
fuse_case "O_DIRECT pwrite at 1P"            EFBIG,EINVAL python3 "$SC" "import mmap; m = mmap.mmap(-1, 4096); fd = os.open('v.img', os.O_RDWR | os.O_DIRECT); os.pwritev(fd, [m], $P)"
fuse_case "fallocate past 1P"                EFBIG,EINVAL,EOPNOTSUPP python3 "$SC" "fd = os.open('v.img', os.O_RDWR); os.posix_fallocate(fd, $P - 4096, 8192)"
fuse_case "setxattr in an unknown namespace" EOPNOTSUPP,ENOTSUP,EPERM python3 "$SC" 'os.setxattr("v.img", "bogus.name", b"1")'
fuse_case "setxattr with an empty name"      EINVAL,ERANGE,EOPNOTSUPP,ENOTSUP python3 "$SC" 'os.setxattr("v.img", "user.", b"1")'
fuse_case "setxattr with a 65537-byte value" E2BIG,ENOSPC,ERANGE python3 "$SC" 'os.setxattr("v.img", "user.big", b"x" * 65537)'
fuse_case "read past the end"                ok python3 "$SC" 'fd = os.open("v.img", os.O_RDONLY); assert os.pread(fd, 4096, 1 << 40) == b""'

# a write crossing 1 PiB: may write up to the limit, never past it
size_before=$(file_size "$MNT/v.img")
r=$(cd "$MNT" && sc "fd = os.open('v.img', os.O_RDWR); n = os.pwrite(fd, b'y' * 8192, $P - 4096); assert n == 4096, n")
rel_add tried 1
[ "$r" = ok ] || [ "$r" = EFBIG ] || bad "FUSE: a write crossing 1 PiB: $r (expected a 4096-byte short write or EFBIG)"
[ "$(file_size "$MNT/v.img")" -le "$P" ] || bad "FUSE: v.img grew past 1 PiB: $(file_size "$MNT/v.img")"
must truncate -s "$size_before" "$MNT/v.img"

# unaligned O_DIRECT: EINVAL is fine; if it is accepted, the bytes must be right
rel_add tried 1
r=$(cd "$MNT" && sc '
import mmap
fd = os.open("v.img", os.O_RDWR | os.O_DIRECT)
buf = bytes(range(256)) * 2
try:
    n = os.pwrite(fd, buf[:300], 100)
except OSError as e:
    if e.errno != 22: raise
    n = None
if n is not None:
    assert n == 300, n
    g = os.open("v.img", os.O_RDONLY)
    assert os.pread(g, 300, 100) == buf[:300], "wrong bytes after an unaligned O_DIRECT write"
    assert os.pread(g, 100, 0) == bytes(100), "unaligned O_DIRECT write clobbered the bytes before it"
')
[ "$r" = ok ] || bad "FUSE: unaligned O_DIRECT write: $r"
[ -d "/proc/$TESSERA_PID" ] || fail "the daemon died after an unaligned O_DIRECT write"

# odd but valid names: accepted, listed exactly, usable, deletable
N200=$(printf 'f%.0s' $(seq 1 200))
for n in "a b" "ünï cødé 😀" "$N200" "tab-less!#%&()+,;=@[]^_{}~" "-dash" "x.img2"; do
    rel_add tried 1
    if ! (cd "$MNT" && touch -- "$n.img") 2>"$T_WORK/odd.err"; then
        bad "FUSE: creating the valid name '$n.img' failed: $(cat "$T_WORK/odd.err")"
        continue
    fi
    has_volume "$n" || bad "FUSE: '$n.img' created but the volume '$n' is not listed"
    write_random "$MNT/$n.img" 0 4096 7 || bad "FUSE: cannot write '$n.img'"
    got=$(tcli volume show --json -- "$n" 2>&1) || true
    [ "$(json 'd["name"]' <<<"$got" 2>/dev/null)" = "$n" ] || bad "CLI: volume show '$n' does not find it: $(head -c 200 <<<"$got")"
    rm -f -- "$MNT/$n.img" || bad "FUSE: cannot delete '$n.img'"
    has_volume "$n" && bad "FUSE: '$n' still listed after rm"
done
rel_add tried 1
if tcli volume create "sp ace" --size 1M >/dev/null 2>"$T_WORK/odd.err"; then
    [ -f "$MNT/sp ace.img" ] || bad "CLI: 'sp ace' created but 'sp ace.img' is not in the mount"
    must tcli volume delete "sp ace"
else
    bad "CLI: creating the valid name 'sp ace' failed: $(cat "$T_WORK/odd.err")"
fi

[ -d "/proc/$TESSERA_PID" ] || fail "the daemon died"
crashed_daemon "$TESSERA_PID" "$FG_LOG" && fail "the daemon reported a crash: $(grep -m5 -iE 'fatal|crash' "$FG_LOG")"
stop_tessera

echo "bad-input: $(rel_get tried) bad inputs tried, $(rel_get failures) failures"
if [ "$(rel_get failures)" -gt 0 ]; then
    if [ "${#FAILED_ROWS[@]}" -gt 0 ]; then
        echo "CLI table rows that misbehaved, by kind (N = a number):" >&2
        for k in "${!CLASSES[@]}"; do printf '  %4d  %s\n' "${CLASSES[$k]}" "$k"; done | sort -rn >&2
        echo "the first of them:" >&2
        printf '%s\n' "${FAILED_ROWS[@]}" > "$T_WORK/failed-rows.txt"
        printf '  %s\n' "${FAILED_ROWS[@]:0:40}" >&2
        [ "${#FAILED_ROWS[@]}" -le 40 ] || echo "  ... and $(( ${#FAILED_ROWS[@]} - 40 )) more (all in $T_WORK/failed-rows.txt)" >&2
    fi
    if [ "${#FAILS[@]}" -gt 0 ]; then
        echo "other failures:" >&2
        printf '  %s\n' "${FAILS[@]}" >&2
    fi
    fail "$(rel_get failures) failures"
fi
pass

#!/usr/bin/env bash
# External fault injection on real stores. Every case injects a fault below the daemon and checks what
# the client sees: an error (EIO, ENOSPC, EROFS as appropriate), never a false success; the daemon stays
# up; other volumes keep working.
#
#   (a) strace -e inject=pwrite64:error=EIO on one volume's chunk files (all of its pwrite64, and only the
#       second one of a write: the checksum slot lands, the data does not) → the write fails with EIO;
#       reads still work; after the injection is removed the volume works, the failed block reads as the
#       old or the new data (never EIO, never garbage); fsync afterwards is reported (documented).
#   (b) a store on a tmpfs of 8 MiB: writing 16 MiB gives ENOSPC (not EIO), the bytes written before stay
#       readable; after deleting another volume / punching a hole, writes work again.
#   (c) a store on an ext4 loop filesystem (errors=remount-ro) forced read-only under open files
#       (/sys/fs/ext4/loopN/trigger_fs_error): an fsync of a write still in the page cache fails, later
#       writes fail with EROFS or EIO, and a second fsync fails too.
#   (d) strace -e inject=fdatasync:error=EIO / fsync on the chunk directories / pwrite64 on the catalog
#       WAL: the client's fsync fails with EIO (twice in a row); after the injection is removed an fsync
#       succeeds and the data is the latest written.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_reliability.sh"
need python3 strace dd fallocate mkfs.ext4 losetup
rel_init faults
rel_set injected 0
rel_set false_success 0
rel_set wrong_errno 0
rel_set daemon_crashes 0
MiB=$((1 << 20))
PROBLEMS=()
NOTES=()

problem() { PROBLEMS+=("$*"); warn "$*"; }
note() { NOTES+=("$*"); info "observed: $*"; }

new_data_dir
DATA=$(realpath "$DATA")
start_fg daemon
PID=$TESSERA_PID
CHUNKS=$DATA/stores/default/chunks

# io OP ARGS...: one client operation in python; prints "ok" or the errno name (EIO, ENOSPC, ...).
#   write  IMG OFFSET LEN SEED [direct]   pwrite (O_DIRECT with an aligned buffer if "direct")
#   fsync  IMG | fdatasync IMG
#   wfsync IMG OFFSET LEN SEED            write then fsync on the same fd: "ok", "write:ERR" or "fsync:ERR"
#   read   IMG OFFSET LEN                 prints the md5 or the errno name
io() {
    py '
import errno, hashlib, mmap, os, random, sys
op, img = sys.argv[1], sys.argv[2]
def data(n, seed): return random.Random(seed).randbytes(n)
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
try:
    if op in ("write", "wfsync"):
        off, n, seed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        direct = len(sys.argv) > 6 and sys.argv[6] == "direct"
        fd = os.open(img, os.O_RDWR | (os.O_DIRECT if direct else 0))
        b = data(n, seed)
        try:
            # like any client: a short write is retried for the rest; the error (if any) comes then
            done = 0
            while done < n:
                if direct:
                    m = mmap.mmap(-1, n); m[:] = b; w = os.pwritev(fd, [m], off)
                    if w != n: print(f"short:{w}"); sys.exit(0)
                else:
                    w = os.pwrite(fd, b[done:], off + done)
                    if w <= 0: print(f"short:{done}"); sys.exit(0)
                done += w
        except OSError as e:
            print(("write:" if op == "wfsync" else "") + name(e)); sys.exit(0)
        if op == "wfsync":
            try: os.fsync(fd)
            except OSError as e: print("fsync:" + name(e)); sys.exit(0)
        print("ok")
    elif op in ("fsync", "fdatasync"):
        fd = os.open(img, os.O_RDWR)
        (os.fsync if op == "fsync" else os.fdatasync)(fd)
        print("ok")
    elif op == "read":
        off, n = int(sys.argv[3]), int(sys.argv[4])
        fd = os.open(img, os.O_RDONLY)
        b = os.pread(fd, n, off)
        print(hashlib.md5(b).hexdigest() if len(b) == n else f"short:{len(b)}")
    elif op == "md5of":
        n, seed = int(sys.argv[3]), int(sys.argv[4])
        print(hashlib.md5(data(n, seed)).hexdigest())
except OSError as e:
    print(name(e))
' "$@"
}
md5of() { io md5of - "$1" "$2"; }

# expect_err WHAT GOT ALLOWED...: the outcome GOT must be one of ALLOWED (errno names, "write:EIO", ...).
# "ok" where an error was expected is a false success; another error is a wrong errno.
expect_err() {
    local what=$1 got=$2 a
    shift 2
    rel_add injected 1
    for a in "$@"; do [ "$got" = "$a" ] && { info "$what: $got (expected)"; return 0; }; done
    if [ "$got" = ok ] || [[ $got == short:* ]]; then
        rel_add false_success 1
        problem "$what: FALSE SUCCESS ($got), expected one of: $*"
    else
        rel_add wrong_errno 1
        problem "$what: got $got, expected one of: $*"
    fi
}

expect_ok() {   # WHAT GOT
    [ "$2" = ok ] || problem "$1: expected success, got $2"
}

alive() {   # WHERE
    if [ ! -d "/proc/$PID" ] || crashed_daemon "$PID" "$FG_LOG"; then
        rel_add daemon_crashes 1
        sed -n '1,80p' "$FG_LOG" >&2
        fail "the daemon died or crashed ($1)"
    fi
}

# other_volume_works NAME SEED: write+fsync+read back 64 KiB on another volume
other_volume_works() {
    local img=$MNT/$1.img r
    r=$(io wfsync "$img" $((5 * MiB)) 65536 "$2")
    [ "$r" = ok ] || problem "another volume ($1) failed during a fault elsewhere: $r"
    [ "$(io read "$img" $((5 * MiB)) 65536)" = "$(md5of 65536 "$2")" ] || problem "another volume ($1) reads back wrong data"
}

new_files_since() {   # BEFORE-LIST-FILE: chunk files (any store under DATA) not in the list
    comm -13 "$1" <(find "$CHUNKS" -type f | sort)
}

# ---------------------------------------------------------------------------------------------------------
info "(a) EIO on pwrite64 to one volume's chunk files"
must tcli volume create other --size 16M
must tcli volume create va --size 16M
find "$CHUNKS" -type f | sort > "$T_WORK/before-a"
[ "$(io wfsync "$MNT/va.img" 0 $((2 * MiB)) 11)" = ok ] || fail "setup write to va failed"
mapfile -t FA < <(new_files_since "$T_WORK/before-a")
[ "${#FA[@]}" -eq 2 ] || fail "expected 2 chunk files for va, got ${#FA[@]}"
old_md5=$(io read "$MNT/va.img" 12288 4096)

strace_inject "$PID" pwrite64 error=EIO "${FA[@]}"
out=$(dd if=/dev/zero of="$MNT/va.img" bs=4k count=1 seek=3 oflag=direct conv=notrunc 2>&1) && r=ok || r=EIO
grep -q 'Input/output error' <<<"$out" || [ "$r" = ok ] || r="other($out)"
expect_err "a: dd oflag=direct into a failing chunk" "$r" EIO
expect_err "a: buffered pwrite into a failing chunk" "$(io write "$MNT/va.img" 8192 4096 21)" EIO
expect_err "a: O_DIRECT pwrite into a failing chunk" "$(io write "$MNT/va.img" 65536 4096 22 direct)" EIO
expect_err "a: a write across two failing chunks" "$(io write "$MNT/va.img" $((MiB - 4096)) 8192 23)" EIO
expect_err "a: write+fsync into a failing chunk" "$(io wfsync "$MNT/va.img" 131072 4096 24)" write:EIO
[ "$(io read "$MNT/va.img" 12288 4096)" = "$old_md5" ] || problem "a: reading va during the fault gave wrong data or an error"
alive "after EIO on pwrite64"
other_volume_works other 31
r=$(io fsync "$MNT/va.img")
note "a: fsync of va while its pwrite64 fail (nothing was accepted): $r"
strace_stop

# only the second pwrite64 of a write fails (the checksum slot is written, the data is not)
strace_inject "$PID" pwrite64 error=EIO:when=2 "${FA[@]}"
expect_err "a: write whose data pwrite64 fails after its slot was written" "$(io write "$MNT/va.img" 12288 4096 25 direct)" EIO
strace_stop
got=$(io read "$MNT/va.img" 12288 4096)
if [ "$got" = "$old_md5" ]; then
    info "a: the half-written block reads as its old data"
elif [ "$got" = "$(md5of 4096 25)" ]; then
    info "a: the half-written block reads as the new data"
else
    problem "a: after a failed write (slot written, data not), the block reads as '$got' (neither old nor new data)"
fi
r=$(io fsync "$MNT/va.img")
note "a: fsync of va after the injection was removed: $r"
expect_ok "a: write+fsync on va after the fault is gone" "$(io wfsync "$MNT/va.img" 12288 4096 26)"
[ "$(io read "$MNT/va.img" 12288 4096)" = "$(md5of 4096 26)" ] || problem "a: va reads back wrong data after the fault is gone"
alive "after (a)"

# ---------------------------------------------------------------------------------------------------------
info "(d) fsync failures: fdatasync of chunk files, fsync of chunk directories, pwrite64 on the catalog WAL"
must tcli volume create vd --size 16M
find "$CHUNKS" -type f | sort > "$T_WORK/before-d"
[ "$(io wfsync "$MNT/vd.img" 0 $((2 * MiB)) 41)" = ok ] || fail "setup write to vd failed"
mapfile -t FD < <(new_files_since "$T_WORK/before-d")
[ "${#FD[@]}" -eq 2 ] || fail "expected 2 chunk files for vd, got ${#FD[@]}"

strace_inject "$PID" fdatasync,fsync error=EIO "${FD[@]}"
expect_err "d: write+fsync, fdatasync of the chunk fails" "$(io wfsync "$MNT/vd.img" 4096 4096 42)" fsync:EIO
expect_err "d: a second fsync (the data is still not durable)" "$(io fsync "$MNT/vd.img")" EIO
expect_err "d: O_DIRECT write + fsync, fdatasync fails" "$(io wfsync "$MNT/vd.img" 8192 4096 43 direct)" fsync:EIO
expect_err "d: fdatasync(2) by the client" "$(io fdatasync "$MNT/vd.img")" EIO
alive "after EIO on fdatasync"
other_volume_works other 44
strace_stop
r=$(io fsync "$MNT/vd.img")
note "d: fsync of vd after the fdatasync injection was removed: $r (the data was still in the page cache)"
expect_ok "d: fsync after the fault is gone" "$r"
[ "$(io read "$MNT/vd.img" 4096 4096)" = "$(md5of 4096 42)" ] || problem "d: vd lost the write whose fsync failed, although a later fsync succeeded"

# a new chunk whose directory fsync fails: the file's name is not durable, so fsync must fail
DIRS=()
for d in "$CHUNKS"/*/; do DIRS+=("${d%/}"); done
strace_inject "$PID" fsync error=EIO "${DIRS[@]}" "$CHUNKS"
expect_err "d: write to a new chunk + fsync, fsync of its directory fails" "$(io wfsync "$MNT/vd.img" $((7 * MiB)) 4096 45)" fsync:EIO
expect_err "d: a second fsync after the directory fsync failed" "$(io fsync "$MNT/vd.img")" EIO
strace_stop
expect_ok "d: fsync after the directory fault is gone" "$(io fsync "$MNT/vd.img")"

# the catalog's WAL cannot be written: the map commit of a new chunk fails, so fsync must fail
strace_inject "$PID" pwrite64 error=EIO "$DATA/catalog.db-wal"
expect_err "d: write to a new chunk + fsync, the catalog WAL write fails" "$(io wfsync "$MNT/vd.img" $((9 * MiB)) 4096 46)" fsync:EIO
expect_err "d: a second fsync after the catalog commit failed" "$(io fsync "$MNT/vd.img")" EIO
alive "after EIO on the catalog WAL"
strace_stop
expect_ok "d: fsync after the catalog fault is gone" "$(io fsync "$MNT/vd.img")"
[ "$(io read "$MNT/vd.img" $((9 * MiB)) 4096)" = "$(md5of 4096 46)" ] || problem "d: vd lost the write whose catalog commit failed first"
alive "after (d)"

# ---------------------------------------------------------------------------------------------------------
info "(b) a store on a full tmpfs: ENOSPC"
TMPFS=$T_WORK/tmpfs
mkdir -p "$TMPFS"
mount -t tmpfs -o size=8m tmpfs "$TMPFS" || fail "cannot mount a tmpfs"
defer umount -l "$TMPFS"
mkdir "$TMPFS/s1"
must tcli pool create small
must tcli store add s1 --pool small --dir "$TMPFS/s1"
must tcli volume create vb --size 64M --pool small
must tcli volume create wb --size 16M --pool small
expect_ok "b: 3 MiB into wb" "$(io wfsync "$MNT/wb.img" 0 $((3 * MiB)) 51)"
# 16 MiB in 1 MiB O_DIRECT writes: the first ones fit, then ENOSPC
py '
import errno, mmap, os, random, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
m = mmap.mmap(-1, 1 << 20)
done, err = 0, "ok"
for i in range(16):
    m[:] = random.Random(100 + i).randbytes(1 << 20)
    try:
        if os.pwritev(fd, [m], i << 20) != 1 << 20: err = "short"; break
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno)); break
    done += 1
try:
    os.fsync(fd); fs = "ok"
except OSError as e:
    fs = errno.errorcode.get(e.errno, str(e.errno))
print(done, err, fs)
' "$MNT/vb.img" > "$T_WORK/fill.out"
read -r filled fill_err fill_fsync < "$T_WORK/fill.out"
info "b: $filled MiB written before: $fill_err; fsync then: $fill_fsync"
expect_err "b: writing 16 MiB into an 8 MiB store" "$fill_err" ENOSPC
[ "$filled" -ge 1 ] || problem "b: not even 1 MiB fit on the 8 MiB store"
note "b: fsync after ENOSPC: $fill_fsync"
# Chunk files are sparse: what is left of the tmpfs still takes small writes. Top it off with 4 KiB
# writes to fresh pages until one fails; that one must fail with ENOSPC.
py '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for i in range(4096):
    try:
        os.pwrite(fd, b"\xa5" * 4096, (48 << 20) + i * 8192)
    except OSError as e:
        print(i, errno.errorcode.get(e.errno, str(e.errno))); sys.exit(0)
print(4096, "ok")
' "$MNT/vb.img" > "$T_WORK/topoff.out"
read -r topped top_err < "$T_WORK/topoff.out"
info "b: $topped more 4 KiB blocks fit, then: $top_err"
expect_err "b: topping off the store with 4 KiB writes" "$top_err" ENOSPC
expect_err "b: a buffered 4 KiB write into a fresh page of the full store" "$(io write "$MNT/vb.img" $((13 * MiB + 4096)) 4096 52)" ENOSPC
expect_err "b: an O_DIRECT 4 KiB write into a fresh page of the full store" "$(io write "$MNT/vb.img" $((14 * MiB + 8192)) 4096 57 direct)" ENOSPC
alive "after ENOSPC"
other_volume_works other 53
for (( i=0; i<filled; i++ )); do
    [ "$(io read "$MNT/vb.img" $((i * MiB)) "$MiB")" = "$(md5of "$MiB" $((100 + i)))" ] ||
        problem "b: MiB $i of vb, written before the store filled up, reads back wrong"
done
# free space by deleting another volume of the pool
rm "$MNT/wb.img" || problem "b: cannot delete wb.img"
expect_ok "b: a write after deleting another volume" "$(io wfsync "$MNT/vb.img" $((filled * MiB)) "$MiB" 54)"
[ "$(io read "$MNT/vb.img" $((filled * MiB)) "$MiB")" = "$(md5of "$MiB" 54)" ] || problem "b: the write after freeing space reads back wrong"
# fill again (the client retries short writes, like dd), then free space by punching a hole
r=$(io wfsync "$MNT/vb.img" $((20 * MiB)) $((8 * MiB)) 55)
expect_err "b: filling the store again" "$r" write:ENOSPC fsync:ENOSPC
fallocate -p -o 0 -l $((4 * MiB)) "$MNT/vb.img" || problem "b: punching a hole failed on the full store"
[ "$(io read "$MNT/vb.img" 0 $((4 * MiB)))" = "$(py 'import hashlib; print(hashlib.md5(bytes(4 << 20)).hexdigest())')" ] ||
    problem "b: the punched range does not read as zeros"
expect_ok "b: a write after punching a hole" "$(io wfsync "$MNT/vb.img" $((40 * MiB)) "$MiB" 56)"
[ "$(io read "$MNT/vb.img" $((40 * MiB)) "$MiB")" = "$(md5of "$MiB" 56)" ] || problem "b: the write after the punch reads back wrong"
alive "after (b)"

# ---------------------------------------------------------------------------------------------------------
info "(c) a store forced read-only under open files"
RO_IMG=$T_WORK/ro.img
RO=$T_WORK/ro
mkdir -p "$RO"
truncate -s 128M "$RO_IMG"
mkfs.ext4 -q -F "$RO_IMG" || fail "mkfs.ext4 failed"
RO_DEV=$(losetup -f --show "$RO_IMG") || fail "losetup failed"
defer losetup -d "$RO_DEV"
mount -t ext4 -o errors=remount-ro "$RO_DEV" "$RO" || fail "cannot mount $RO_DEV"
defer umount -l "$RO"
RO_SYS=/sys/fs/ext4/$(basename "$RO_DEV")/trigger_fs_error
[ -w "$RO_SYS" ] || fail "no $RO_SYS (the kernel's ext4 lacks trigger_fs_error)"
mkdir "$RO/s"
must tcli pool create ropool
must tcli store add r1 --pool ropool --dir "$RO/s"
must tcli volume create vc --size 32M --pool ropool
expect_ok "c: setup write" "$(io wfsync "$MNT/vc.img" 0 $((2 * MiB)) 61)"
c_md5=$(io read "$MNT/vc.img" $((MiB + 8192)) 4096)
# a write still in the daemon's / page cache when the filesystem turns read-only
expect_ok "c: a write just before the error (not yet synced)" "$(io write "$MNT/vc.img" 4096 4096 62)"
echo 1 > "$RO_SYS"
ro=$(awk -v m="$RO" '$2 == m { print $4 }' /proc/mounts)
# older kernels remount read-only ("ro"); newer ones flag "emergency_ro" and keep "rw" in the options
[[ $ro == ro* || ,$ro, == *,emergency_ro,* ]] || fail "c: $RO did not turn read-only (options: $ro)"
info "c: $RO is now: $ro"
expect_err "c: fsync of a write the read-only store could not write back" "$(io fsync "$MNT/vc.img")" EIO EROFS
expect_err "c: a second fsync" "$(io fsync "$MNT/vc.img")" EIO EROFS
expect_err "c: a new write into an existing chunk" "$(io write "$MNT/vc.img" 8192 4096 63)" EIO EROFS
expect_err "c: an O_DIRECT write into an existing chunk" "$(io write "$MNT/vc.img" 16384 4096 64 direct)" EIO EROFS
expect_err "c: a write into a new chunk" "$(io wfsync "$MNT/vc.img" $((10 * MiB)) 4096 65)" write:EIO write:EROFS fsync:EIO fsync:EROFS
r=$(io read "$MNT/vc.img" $((MiB + 8192)) 4096)
[ "$r" = "$c_md5" ] || problem "c: synced data on the read-only store no longer reads back: $r"
# a shrink that must free a chunk on the read-only store: done, or refused with nothing changed
rel_add injected 1
rc=0
tcli volume resize vc --size 1M --shrink --force > /dev/null 2> "$T_WORK/resize.err" || rc=$?
got=$(volume_field vc size)
if [ "$rc" -eq 0 ]; then
    [ "$got" = "$MiB" ] || problem "c: resize to 1M returned 0 but vc has size $got"
    note "c: shrinking vc on the read-only store succeeded"
else
    [ "$got" = $((32 * MiB)) ] || problem "c: resize to 1M failed (exit $rc: $(cat "$T_WORK/resize.err")) but vc's size changed to $got"
    note "c: shrinking vc on the read-only store: exit $rc ($(cat "$T_WORK/resize.err"))"
fi
[ "$(file_size "$MNT/vc.img")" = "$got" ] || problem "c: vc.img has size $(file_size "$MNT/vc.img"), the catalog says $got"
alive "after the store turned read-only"
other_volume_works other 66

# ---------------------------------------------------------------------------------------------------------
# teardown: the daemon cannot flush vc; a clean unmount may refuse. Note what happens, then make sure
# the daemon ends.
rc=0
timeout 60 env TESSERA_DATA="$DATA" "$TESSERA_BIN" unmount "$MNT" > "$T_WORK/unmount.out" 2>&1 || rc=$?
note "unmount with a read-only store: exit $rc: $(head -c 300 "$T_WORK/unmount.out")"
if [ -d "/proc/$PID" ]; then
    wait_pid_gone "$PID" 100 || { kill_hard "$PID" "$MNT"; note "the daemon had to be killed after unmount"; }
fi
crashed_daemon "$PID" "$FG_LOG" && { rel_add daemon_crashes 1; problem "the daemon crashed: $(grep -m5 -iE 'fatal|crash' "$FG_LOG")"; }
_t_is_mounted "$MNT" && dead_mount_detach "$MNT"

echo "faults: $(rel_get injected) faults injected, $(rel_get false_success) false successes, $(rel_get wrong_errno) wrong errnos, $(rel_get daemon_crashes) daemon crashes"
for n in "${NOTES[@]}"; do echo "  observed: $n"; done
if [ "${#PROBLEMS[@]}" -gt 0 ]; then
    printf '  %s\n' "${PROBLEMS[@]}" >&2
    fail "${#PROBLEMS[@]} problems"
fi
pass

#!/usr/bin/env bash
# Unmount is honest. An image held open from another mount namespace (as libvirt's qemu holds it) makes
# `tessera unmount` refuse at once, naming the image and the process, with nothing detached: the mount
# stays usable here and `status` still tells the truth. `--force` detaches and says what is still open;
# the daemon serves it until the last close. A copy of the mount left in another namespace with nothing
# open does not keep the daemon alive.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need unshare md5sum

start_tessera
must tcli volume create v --size 32M
write_random "$MNT/v.img" 0 $((4 << 20))
sum=$(md5sum <"$MNT/v.img")

# hold_open: hold MNT/v.img open from a private mount namespace, as libvirt's qemu does; sets holder
hold_open() {
    local ready="$T_WORK/held.$RANDOM"
    # shellcheck disable=SC2016  # $1 and $2 are the inner shell's arguments
    unshare -m --propagation private bash -c 'exec 3<"$1"; touch "$2"; exec sleep 600' _ "$MNT/v.img" "$ready" \
        </dev/null >/dev/null 2>&1 &
    holder=$!
    defer kill -KILL "$holder"
    local i
    for (( i=0; i<100; i++ )); do [ -e "$ready" ] && break; sleep 0.1; done
    [ -e "$ready" ] || fail "the holder did not open the image"
}

info "an image open in another mount namespace: unmount refused, nothing detached"
hold_open
start=$(date +%s)
expect_fail --code 5 tcli unmount
(( $(date +%s) - start < 10 )) || fail "the refusal took $(( $(date +%s) - start )) s"
grep -qF "v.img" <<<"$EF_ERR" || fail "the refusal does not name the image: $EF_ERR"
grep -qF "sleep pid $holder" <<<"$EF_ERR" || fail "the refusal does not name the process: $EF_ERR"
_t_is_mounted "$MNT" || fail "the mount was detached although unmount was refused"
[ "$(md5sum <"$MNT/v.img")" = "$sum" ] || fail "the image does not read back after the refusal"
out=$(tcli status)
grep -qF "$MNT (pid $TESSERA_PID)" <<<"$out" || fail "status after the refusal: $out"
grep -qF "open: v.img (sleep pid $holder)" <<<"$out" || fail "status does not list the open image: $out"

info "the holder exits: unmount works and the daemon ends"
kill -KILL "$holder"
wait "$holder" 2>/dev/null || true
stop_tessera

info "a copy of the mount in another namespace with nothing open does not keep the daemon alive"
start_tessera --no-init
ready="$T_WORK/ns.ready"
# shellcheck disable=SC2016  # $1 is the inner shell's argument
unshare -m --propagation private bash -c 'touch "$1"; exec sleep 600' _ "$ready" </dev/null >/dev/null 2>&1 &
nsholder=$!
defer kill -KILL "$nsholder"
while [ ! -e "$ready" ]; do sleep 0.1; done
pid=$TESSERA_PID
start=$(date +%s)
stop_tessera   # fails unless unmount returns 0 and the daemon exits within 30 s
info "   unmount with a namespace copy took $(( $(date +%s) - start )) s"
[ -d "/proc/$pid" ] && fail "the daemon lives on"
kill -KILL "$nsholder"

info "--force detaches and says what is still open; the daemon exits at the last close"
start_tessera --no-init
hold_open
pid=$TESSERA_PID
out=$(tcli unmount --force) || fail "unmount --force failed"
grep -qF "still open: v.img" <<<"$out" || fail "unmount --force did not say what is open: $out"
_t_is_mounted "$MNT" && fail "unmount --force left the mount here"
[ -d "/proc/$pid" ] || fail "the daemon exited while an image was still open"
kill -KILL "$holder"
for (( i=0; i<300; i++ )); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
[ -d "/proc/$pid" ] && fail "the daemon did not exit after the last close"
TESSERA_PID=
start_tessera --no-init
[ "$(md5sum <"$MNT/v.img")" = "$sum" ] || fail "data differs after the forced unmount"
stop_tessera
pass

#!/usr/bin/env bash
# A daemon killed with SIGKILL leaves a dead FUSE mount ("Transport endpoint is not connected"). Through the
# CLI alone there must be a way back: `status` names the dead mount, `tessera mount` clears it and mounts
# again with the data intact, `tessera unmount` clears one too. The mount point must be an empty directory
# (files there would be hidden), and systemd's Type=notify hears READY=1 once the mount answers.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 md5sum

start_tessera
must tcli volume create v --size 64M

# the admin's command, as typed (start_tessera would mkdir the dead mount point first)
mount_again() {
    must tcli mount "$MNT" --background
    TESSERA_PID=$(daemon_pid) || fail "no daemon after tessera mount"
}
write_random "$MNT/v.img" 0 $((8 << 20))
sync "$MNT/v.img"
sum=$(md5sum <"$MNT/v.img")

info "version"
version=$(tcli --version) || fail "tessera --version failed"
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || fail "tessera --version printed '$version'"

info "kill -9: status names the dead mount"
kill -KILL "$TESSERA_PID"
while [ -d "/proc/$TESSERA_PID" ]; do sleep 0.1; done
_t_is_mounted "$MNT" || fail "the killed daemon's mount is gone already (nothing to test)"
stat "$MNT" 2>/dev/null && fail "stat on the dead mount succeeded"
out=$(tcli status) || fail "status failed after kill -9"
grep -qF "dead mount at $MNT" <<<"$out" || fail "status does not name the dead mount: $out"
dead=$(tcli status --json | json 'd.get("deadMount") or ""')
assert_eq "$dead" "$MNT" "status --json deadMount"

info "mount clears the dead mount and mounts again"
mount_again
[ "$(md5sum <"$MNT/v.img")" = "$sum" ] || fail "data differs after kill -9 and mount"
out=$(tcli status)
grep -qF "dead mount" <<<"$out" && fail "status still reports a dead mount: $out"

info "kill -9: unmount clears the dead mount"
kill -KILL "$TESSERA_PID"
while [ -d "/proc/$TESSERA_PID" ]; do sleep 0.1; done
out=$(tcli unmount) || fail "unmount of the dead mount failed"
grep -qF "cleared the dead mount at $MNT" <<<"$out" || fail "unmount said: $out"
_t_is_mounted "$MNT" && fail "$MNT is still mounted after unmount cleared it"
expect_fail --code 3 tcli unmount
grep -qF "no mount is running" <<<"$EF_ERR" || fail "second unmount said: $EF_ERR"
tcli status | grep -qF "not mounted" || fail "status after clearing: $(tcli status)"

info "a dead mount given by path, with no record in DATA"
mount_again
kill -KILL "$TESSERA_PID"
while [ -d "/proc/$TESSERA_PID" ]; do sleep 0.1; done
rm -f "$DATA/mountpoint"
out=$(tcli unmount "$MNT") || fail "unmount MOUNTPOINT of a dead mount failed"
grep -qF "cleared" <<<"$out" || fail "unmount MOUNTPOINT said: $out"

info "the mount point must exist, be empty and not be mounted already"
touch "$MNT/stray.img"
expect_fail --code 2 tcli mount "$MNT" --background
grep -qF "not empty" <<<"$EF_ERR" || fail "non-empty mount point: $EF_ERR"
[ -f "$MNT/stray.img" ] || fail "the stray file went away"
rm "$MNT/stray.img"
expect_fail --code 3 tcli mount "$T_WORK/nowhere" --background
grep -qF "does not exist" <<<"$EF_ERR" || fail "missing mount point: $EF_ERR"
start_tessera --no-init
other=$(mktemp -d "$T_WORK/other.XXXXXX")
must env TESSERA_DATA="$other" "$TESSERA_BIN" init
expect_fail --code 5 env TESSERA_DATA="$other" "$TESSERA_BIN" mount "$MNT" --background
grep -qF "already a mount point" <<<"$EF_ERR" || fail "mount over a live mount: $EF_ERR"
[ "$(md5sum <"$MNT/v.img")" = "$sum" ] || fail "data differs after the refused mounts"
stop_tessera

info "systemd Type=notify: READY=1 once the mount answers"
sock="$T_WORK/notify.sock"
py 'import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(60)
open(sys.argv[1] + ".bound", "w").close()
print(s.recv(4096).decode())' "$sock" >"$T_WORK/notify.out" &
listener=$!
while [ ! -e "$sock.bound" ]; do sleep 0.1; done
NOTIFY_SOCKET="$sock" TESSERA_DATA="$DATA" "$TESSERA_BIN" mount "$MNT" >"$T_WORK/fg.log" 2>&1 &
fg=$!
T_MOUNTS+=("$MNT|$DATA")
wait "$listener" || fail "no notification reached NOTIFY_SOCKET: $(cat "$T_WORK/fg.log")"
grep -qx "READY=1" "$T_WORK/notify.out" || fail "notification was: $(cat "$T_WORK/notify.out")"
_t_is_mounted "$MNT" || fail "READY=1 came before the mount"
[ "$(md5sum <"$MNT/v.img")" = "$sum" ] || fail "data differs in the foreground mount"
must tcli unmount
wait "$fg" || fail "the foreground mount exited non-zero: $(cat "$T_WORK/fg.log")"
[ -e "$DATA/mountpoint" ] && fail "a clean exit left DATA/mountpoint behind"
pass

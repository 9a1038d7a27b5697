#!/usr/bin/env bash
# Snapshot schedules, run by the mount daemon (it checks every 20 s):
#   - set while nothing is mounted (`snapshot schedule v --every 1m --keep 2`, w --keep 1, --all --keep 3);
#     on mount each missed run is taken once at start-up (within ~30 s), named VOL-YYYYMMDD-HHMMSS /
#     all-YYYYMMDD-HHMMSS (UTC, close to now), flagged scheduled, holding the volume as it was;
#   - a restart keeps the schedules and does not take a run that is not due;
#   - a minute later the next runs come; retention deletes only that schedule's oldest (w keeps 1), never
#     another schedule's or a manual snapshot;
#   - --list/--json, --remove, errors.
# About 100 s (it waits for the second round).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/_snap.sh"
need python3 cmp
snap_init snapshot-schedule

M=$((1024 * 1024))
new_data_dir --chunk-size 1M
start_tessera --no-init
must tcli volume create v --size 8M
must tcli volume create w --size 8M
write_random "$MNT/v.img" 0 $((3 * M)) 1
write_random "$MNT/w.img" $M $M 2
cp "$MNT/v.img" v.before
stop_tessera

# scheduled snapshot names (NAME-PREFIX): "name" per line, oldest first
sched_names() {
    json '"\n".join(s["name"] for s in sorted(d, key=lambda s: s["createdAt"]) if s["scheduled"] and s["name"].startswith("'"$1"'-"))' <<<"$(snap_json)"
}
count_of() {
    local n
    n=$(sched_names "$1")
    if [ -z "$n" ]; then echo 0; else wc -l <<<"$n"; fi
}

case_begin "schedules set while not mounted; errors"
expect_fail --code 2,64 tcli snapshot schedule v --every 30s --keep 2
expect_fail --code 2,64 tcli snapshot schedule v --every 1m --keep 0
expect_fail --code 2,64 tcli snapshot schedule v --every 1x --keep 2
expect_fail --code 3 tcli snapshot schedule nosuch --every 1m --keep 2
must tcli snapshot schedule v --every 1m --keep 2
must tcli snapshot schedule w --every 1m --keep 1
must tcli snapshot schedule --all --every 1m --keep 3
j=$(tcli snapshot schedule --list --json) || fail "schedule --list --json"
# (the --all schedule's target shows as "*")
check_eq "$(json 'sorted((s["target"], s["everySeconds"], s["keep"]) for s in d)' <<<"$j")" \
    '[["*", 60, 3], ["v", 60, 2], ["w", 60, 1]]' "schedule --list --json (target, everySeconds, keep)"
check_eq "$(json '[s.get("lastRun") for s in d]' <<<"$j")" '[null, null, null]' "lastRun before any mount"
check_eq "$(json '[s["name"] for s in d]' <<<"$(snap_json)")" '[]' "no snapshot before anything is mounted"

case_begin "missed runs taken at start-up"
start_tessera --no-init
t0=$(date +%s)
for (( i = 0; i < 40; i++ )); do
    [ "$(count_of v)" -ge 1 ] && [ "$(count_of w)" -ge 1 ] && [ "$(count_of all)" -ge 1 ] && break
    sleep 1
done
waited=$(( $(date +%s) - t0 ))
info "  start-up runs after ${waited}s: v=$(count_of v) w=$(count_of w) all=$(count_of all)"
check_eq "$(count_of v)" 1 "scheduled snapshots of v after mount"
check_eq "$(count_of w)" 1 "scheduled snapshots of w after mount"
check_eq "$(count_of all)" 1 "scheduled --all snapshots after mount"
for p in v w all; do
    n=$(sched_names "$p" | head -n1)
    [ -n "$n" ] || continue
    [[ $n =~ ^$p-([0-9]{8})-([0-9]{6})$ ]] || bad "scheduled snapshot name '$n' is not $p-YYYYMMDD-HHMMSS"
    ts=$(py '
import sys, datetime, time
d, t = sys.argv[1], sys.argv[2]
x = datetime.datetime.strptime(d + t, "%Y%m%d%H%M%S").replace(tzinfo=datetime.timezone.utc).timestamp()
print(int(abs(time.time() - x)))' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")
    [ "$ts" -le 120 ] || bad "scheduled snapshot $n is named for a time ${ts}s away from now (want UTC now)"
    check_eq "$(snap_field "$n" scheduled)" true "$n scheduled flag"
done
nv=$(sched_names v | head -n1)
if [ -n "$nv" ]; then
    check_eq "$(snap_field "$nv" volumes)" '["v"]' "$nv volumes"
    cmp v.before "$MNT/.snapshots/$nv/v.img" || bad "$nv does not hold v as it was at mount"
fi
na=$(sched_names all | head -n1)
[ -z "$na" ] || check_eq "$(snap_field "$na" volumes)" '["v", "w"]' "$na volumes"
# a manual snapshot the retention must never touch
must tcli snapshot create v w --name manual
first_w=$(sched_names w | head -n1)

case_begin "restart keeps the schedules; no run that is not due"
before=$(json '[s["name"] for s in d]' <<<"$(snap_json)")
restart_tessera
j=$(tcli snapshot schedule --list --json) || fail "schedule --list --json after restart"
check_eq "$(json 'len(d)' <<<"$j")" 3 "schedules after restart"
check_eq "$(json 'sorted(s["target"] for s in d)' <<<"$j")" '["*", "v", "w"]' "schedule targets after restart"
check_eq "$(json 'all(isinstance(s.get("lastRun"), (int, float)) for s in d)' <<<"$j")" true "every schedule has a lastRun after the start-up runs"
sleep 3
check_eq "$(json '[s["name"] for s in d]' <<<"$(snap_json)")" "$before" "snapshots right after a restart (nothing was due)"

case_begin "the next round a minute later; retention per schedule"
t0=$(date +%s)
for (( i = 0; i < 110; i++ )); do
    [ "$(count_of v)" -ge 2 ] && [ "$(count_of all)" -ge 2 ] && [ "$(sched_names w)" != "$first_w" ] && break
    sleep 1
done
info "  second round after another $(( $(date +%s) - t0 ))s: v=$(count_of v) w=$(count_of w) all=$(count_of all)"
check_eq "$(count_of v)" 2 "scheduled snapshots of v after the second round (keep 2)"
check_eq "$(count_of all)" 2 "scheduled --all snapshots after the second round (keep 3)"
check_eq "$(count_of w)" 1 "scheduled snapshots of w after the second round (keep 1)"
[ "$(sched_names w)" != "$first_w" ] || bad "w's schedule did not run a second time (or retention deleted the new one)"
has_snapshot "$first_w" && bad "retention (keep 1) did not delete w's oldest scheduled snapshot $first_w"
has_snapshot manual || bad "retention deleted the manual snapshot"
[ -n "$nv" ] && { has_snapshot "$nv" || bad "retention of v (keep 2) deleted $nv with only 2 taken"; }
[ -n "$na" ] && { has_snapshot "$na" || bad "retention deleted $na"; }

case_begin "--remove"
must tcli snapshot schedule w --remove
must tcli snapshot schedule --all --remove
j=$(tcli snapshot schedule --list --json) || fail "schedule --list --json"
check_eq "$(json '[s["target"] for s in d]' <<<"$j")" '["v"]' "schedules after --remove of w and --all"
expect_fail --code 3 tcli snapshot schedule w --remove
stop_tessera
fsck_clean "after the schedule cases"
finish

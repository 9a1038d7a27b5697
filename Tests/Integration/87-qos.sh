#!/usr/bin/env bash
# QoS caps on a real mount, measured with fio (libaio, O_DIRECT, 4K, queue depth 16):
#   - bad input: one line, exit 2 (3 for an unknown volume or pool, 64 for a command of the wrong
#     shape), nothing changed;
#   - a volume capped at 500 IOPS measures 500 ± 10 %;
#   - data written and read through the deferred (throttled) path is intact (fio verify);
#   - with --burst a short burst runs faster, then settles at the cap;
#   - a cap set on a running mount applies at once (per-second IOPS log);
#   - a capped volume, its requests waiting at depth 16, does not slow an uncapped neighbour;
#   - qos show and status report settings, rate and time throttled; settings survive a remount and
#     work on an unmounted data directory too.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need fio

# iops JSON: the IOPS (reads + writes) of a fio JSON report.
iops() { json 'int(d["jobs"][0]["read"]["iops"] + d["jobs"][0]["write"]["iops"])' < "$1"; }

# fio_run NAME VOLUME SECONDS [FIO-OPTION...]: 4K random reads on MNT/VOLUME.img, a JSON report in
# NAME.json and a per-second IOPS log in NAME_iops.1.log.
fio_run() {
    local name=$1 vol=$2 secs=$3; shift 3
    run_fio "$name.log" --name="$name" --filename="$MNT/$vol.img" --ioengine=libaio --direct=1 --iodepth=16 \
        --bs=4k --rw=randread --size=256M --time_based --runtime="$secs" --output-format=json \
        --output="$name.json" --write_iops_log="$name" --log_avg_msec=1000 "$@"
}

# per_second NAME FROM TO: the mean of the per-second IOPS log entries FROM..TO (0-based, inclusive).
per_second() {
    py '
import sys
vals = [int(l.split(",")[1]) for l in open(sys.argv[1] + "_iops.1.log") if l.strip()]
lo, hi = int(sys.argv[2]), int(sys.argv[3])
part = vals[lo:hi + 1]
if len(part) != hi - lo + 1: sys.exit("only %d per-second entries: %s" % (len(vals), vals))
print(sum(part) // len(part))
' "$@"
}

# within VALUE LOW HIGH WHAT
within() {
    if [ "$1" -lt "$2" ] || [ "$1" -gt "$3" ]; then fail "$4: $1, expected $2..$3"; fi
}

start_tessera
for v in capped bursty live free; do must tcli volume create "$v" --size 1G; done

info "bad input changes nothing"
expect_fail --code 2 tcli qos set capped --iops 0
expect_fail --code 2 tcli qos set capped --iops -5
expect_fail --code 2 tcli qos set capped --iops abc
expect_fail --code 2 tcli qos set capped --read-iops 1.5
expect_fail --code 2 tcli qos set capped --bps 12Q
expect_fail --code 2 tcli qos set capped --write-bps 0
expect_fail --code 2 tcli qos set capped --burst 0
expect_fail --code 2 tcli qos set capped --burst abc
expect_fail --code 2 tcli qos set capped --burst 5
expect_fail --code 2 tcli qos set capped --iops 100 --min-iops 200
expect_fail --code 2 tcli qos set capped --bps 1M --min-bps 2M
expect_fail --code 2 tcli qos set capped --weight 0
expect_fail --code 2 tcli qos set capped --weight 1001
expect_fail --code 2 tcli qos set capped
expect_fail --code 2 tcli qos set --pool default --min-iops 5
expect_fail --code 2 tcli qos set --all --weight 5
expect_fail --code 3 tcli qos set nosuch --iops 5
expect_fail --code 3 tcli qos set capped nosuch --iops 5
expect_fail --code 3 tcli qos set --pool nosuch --iops 5
expect_fail --code 3 tcli qos show nosuch
expect_fail --code 3 tcli qos clear nosuch
expect_fail --code 64 tcli qos set --iops 5
expect_fail --code 64 tcli qos set capped --pool default --iops 5
assert_eq "$(tcli qos show --json | json 'len(d["groups"]) + sum(v.get("settings") is not None for v in d["volumes"])')" \
    0 "settings after the bad-input table"

info "a volume capped at 500 IOPS"
must tcli qos set capped --iops 500
fio_run capped capped 8
n=$(iops capped.json)
info "capped at 500: $n IOPS"
within "$n" 450 550 "IOPS of a volume capped at 500"
shown=$(tcli qos show capped --json)
assert_eq "$(json 'd["volumes"][0]["settings"]["iops"]' <<<"$shown")" 500 "qos show: iops"
throttled=$(json 'int(d["volumes"][0]["stats"]["throttledSeconds"])' <<<"$shown")
[ "$throttled" -ge 4 ] || fail "qos show: a volume held at its cap for 8 s was throttled ${throttled}s"
status=$(tcli status)
grep -q '^qos capped: iops=500; ' <<<"$status" || fail "status does not show the cap: $status"

info "data written and read while throttled is intact (fio verify, writes and reads deferred)"
must tcli qos set live --bps 8M
run_fio verify.log --name=verify --filename="$MNT/live.img" --ioengine=libaio --direct=1 --iodepth=16 \
    --rw=randwrite --bsrange=4k-64k --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 --randrepeat=1
grep -qE 'READ: .*io=[1-9]' verify.log || fail "fio verify read nothing back"
[ "$(tcli qos show live --json | json 'd["volumes"][0]["stats"]["throttledRequests"] > 100')" = true ] ||
    fail "the verify job was not throttled"
must tcli qos clear live

info "--burst: faster at first, then the cap"
must tcli qos set bursty --iops 200 --burst 5
fio_run bursty bursty 7
first=$(per_second bursty 0 0)
settled=$(per_second bursty 3 6)
info "bursty: first second $first IOPS, seconds 4-7 $settled IOPS"
[ "$first" -ge 600 ] || fail "a 1000-operation burst allowance ran only $first IOPS in the first second"
within "$settled" 180 220 "IOPS after the burst (cap 200)"

info "a cap set on the running mount applies at once"
fio_run live live 8 &
fio_pid=$!
sleep 3
must tcli qos set live --iops 300
wait "$fio_pid" || fail "fio on live failed"
before=$(per_second live 0 1)
after=$(per_second live 5 7)
info "live: $before IOPS before the cap, $after after"
[ "$before" -ge 1000 ] || fail "live ran only $before IOPS before any cap"
within "$after" 270 330 "IOPS once the cap of 300 applied"

info "a capped volume does not slow an uncapped neighbour"
fio_run alone free 4
alone=$(iops alone.json)
must tcli qos set capped --iops 100
fio_run held capped 8 &
held_pid=$!
sleep 1
fio_run neighbour free 4
wait "$held_pid" || fail "fio on capped failed"
beside=$(iops neighbour.json)
info "free alone: $alone IOPS; beside capped (100 IOPS at depth 16): $beside IOPS"
[ "$beside" -ge $((alone / 2)) ] || fail "the uncapped neighbour fell from $alone to $beside IOPS"
[ "$beside" -ge 2000 ] || fail "the uncapped neighbour ran only $beside IOPS"

info "settings survive a remount"
must tcli qos set --pool default --bps 1G
restart_tessera
shown=$(tcli qos show --json)
assert_eq "$(json '[v["settings"]["iops"] for v in d["volumes"] if v.get("settings")]' <<<"$shown")" \
    "[100, 200, 300]" "caps after remount"
assert_eq "$(json 'd["groups"][0]["group"]' <<<"$shown")" "pool default" "group after remount"
fio_run remounted live 3
n=$(iops remounted.json)
within "$n" 240 360 "IOPS of live (cap 300) after the remount"

info "clear, and an unmounted data directory"
expect_fail --code 64 tcli qos clear live --pool default
must tcli qos clear --pool default
must tcli qos clear live
stop_tessera
must tcli qos set free --write-iops 42
shown=$(tcli qos show --json)
assert_eq "$(json '{v["volume"]: v["settings"] for v in d["volumes"] if v.get("settings")}' <<<"$shown" | json 'sorted(d)')" \
    '["bursty", "capped", "free"]' "volumes with settings, unmounted"
assert_eq "$(json 'len(d["groups"])' <<<"$shown")" 0 "groups after clear"

info "a volume of another domain"
must tcli domain create blue
must tcli volume create free --size 16M --domain blue
must tcli qos set free --domain blue --iops 77
shown=$(tcli qos show --domain blue --json)
assert_eq "$(json '[(v["volume"], v.get("domain"), v["settings"]["iops"]) for v in d["volumes"]]' <<<"$shown")" \
    '[["free", "blue", 77]]' "qos show --domain blue"
assert_eq "$(json '[v["settings"]["writeIops"] for v in d["volumes"] if v["volume"] == "free"]' <<<"$(tcli qos show --json)")" \
    "[42]" "the default domain's free keeps its own setting"
expect_fail --code 3 tcli qos set nothere --domain blue --iops 5
expect_fail --code 3 tcli qos show free --domain nowhere
must tcli qos clear free --domain blue
pass

#!/usr/bin/env bash
# Store replace as a job (issue 12), through a real mount and real clients:
#
#   1. dd of random data into an image, then `store replace default --dir NEW --rate 4M/s`: while the
#      job copies, dd overwrites old chunks and writes new ones (fsync), and the whole image reads back
#      as expected (sha256) mid-job; `status` shows the job.
#   2. kill -9 of the daemon mid-job: offline the job shows as running with its progress recorded
#      (`job show --wait` exits 5: nothing mounted); at the remount it resumes from its cursor and finishes
#      (`job show --wait`); the image reads back as expected, also after another remount; `job list`
#      (text and --json) shows it done; the store keeps its name, now on NEW, with every chunk there,
#      and the old directory is no longer a store (no store.json).
#   3. bad input changes nothing: an unknown store (3), a location in use (4), a bad --rate (2), an
#      unknown job (3), cancelling a finished job (2).
#   4. `job cancel` mid-job: the store stays where it was, the new directory is no store, data intact.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 dd sha256sum
T_TIMEOUT=${T_TIMEOUT:-300}

M=$((1024 * 1024))

job_json() {  # job_json ID EXPR: EXPR over the job `j` in `job show ID --json`
    local out
    out=$(tcli job show "$1" --json) || fail "job show $1 --json failed"
    py 'import json, sys; j = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$out" "$2"
}
img_sha() { sha256sum <"$MNT/v.img" | cut -d' ' -f1; }
want_sha() { sha256sum <expect.img | cut -d' ' -f1; }
# put FILE OFFSET_MIB: the same bytes into the image (fsync) and into the expected copy.
put() {
    must dd if="$1" of="$MNT/v.img" bs=1M seek="$2" conv=notrunc,fsync status=none
    must dd if="$1" of=expect.img bs=1M seek="$2" conv=notrunc status=none
}

start_tessera
DATA=$(realpath "$DATA")
must tcli volume create v --size 48M
truncate -s 48M expect.img
head -c $((24 * M)) /dev/urandom >a.bin
head -c $((4 * M)) /dev/urandom >b.bin
head -c $((8 * M)) /dev/urandom >c.bin
put a.bin 0
OLD=$DATA/stores/default
NEW=$T_WORK/new
mkdir -p "$NEW" "$T_WORK/new2"

info "1. replace under writes and reads"
out=$(tcli store replace default --dir "$NEW" --rate 4M/s) || fail "store replace failed"
grep -q '^job #1: replacing store default' <<<"$out" || fail "unexpected output: $out"
put b.bin 2    # chunks the copier has or has not reached yet
put c.bin 30   # new chunks (written to both stores)
[ "$(job_json 1 'j["state"]')" = running ] || fail "the job ended too early to test anything: $(tcli job show 1)"
assert_eq "$(img_sha)" "$(want_sha)" "image read mid-job"
tcli status | grep -q '^job #1 replace store default' || fail "status does not show the job: $(tcli status)"
sleep 1

info "2. kill -9 mid-job, remount, resume"
kill_tessera
# Offline, the catalog shows what the crash left: the job unfinished, with its progress recorded.
state=$(job_json 1 'j["state"]')
[ "$state" = running ] || fail "after the crash the job is $state, not running"
recorded=$(job_json 1 'j["doneChunks"]')
[ "$recorded" -ge 1 ] || fail "no progress recorded before the crash: $(tcli job show 1)"
expect_fail --code 5 tcli job show 1 --wait
start_tessera --no-init
must timeout 60 env TESSERA_DATA="$DATA" "$TESSERA_BIN" job show 1 --wait >wait.log
grep -q '^job #1 done' wait.log || fail "job show --wait did not end with done: $(cat wait.log)"
assert_eq "$(img_sha)" "$(want_sha)" "image after the job"
tcli job list | grep -qE '^1 +replace +done +100%' || fail "job list: $(tcli job list)"
[ "$(tcli job list --json | py 'import json,sys; print([j["state"] for j in json.load(sys.stdin)])')" = "['done']" ] ||
    fail "job list --json: $(tcli job list --json)"
tcli store list --json | py '
import json, sys
s = [x for x in json.load(sys.stdin)]
assert [x["name"] for x in s] == ["default"], s
assert s[0]["path"] == sys.argv[1], s
' "$NEW" || fail "store list after the replace: $(tcli store list)"
[ -f "$NEW/store.json" ] || fail "the new store has no store.json"
[ -f "$OLD/store.json" ] && fail "the old store still has its store.json"
chunks=$(find "$NEW/chunks" -type f | wc -l)
assert_eq "$chunks" 32 "chunks on the new store (24 + 8 MiB of 1 MiB chunks)"
restart_tessera
assert_eq "$(img_sha)" "$(want_sha)" "image after remounting"

info "3. bad input"
expect_fail --code 3 tcli store replace nope --dir "$T_WORK/new2"
expect_fail --code 4 tcli store replace default --dir "$NEW"
expect_fail --code 2 tcli store replace default --dir "$T_WORK/new2" --rate 0
expect_fail --code 2 tcli store replace default --dir "$T_WORK/new2" --rate fast
expect_fail --code 3 tcli job show 99
expect_fail --code 3 tcli job cancel 99
expect_fail --code 2 tcli job cancel 1
[ "$(tcli job list --json | py 'import json,sys; print(len(json.load(sys.stdin)))')" = 1 ] || fail "a refused command made a job"

info "4. cancel mid-job"
must tcli store replace default --dir "$T_WORK/new2" --rate 2M/s >/dev/null
sleep 1
must tcli job cancel 2 >/dev/null
assert_eq "$(job_json 2 'j["state"]')" cancelled "job 2 after cancel"
[ -f "$T_WORK/new2/store.json" ] && fail "the cancelled target is still a store"
tcli store list --json | py 'import json,sys; s=json.load(sys.stdin); assert [(x["name"], x["path"]) for x in s] == [("default", sys.argv[1])], s' "$NEW" ||
    fail "store list after cancel: $(tcli store list)"
assert_eq "$(img_sha)" "$(want_sha)" "image after cancel"
stop_tessera
pass

#!/usr/bin/env bash
# A lost catalog is not a lost pool (issue 9, findings 1 and 3). What the admin did: init, mount, volumes
# with data, a snapshot, a clone, a schedule; unmount; rm catalog.db. Then:
#   - `status` and `mount` are refused (exit 6) with the hint `tessera fsck --rebuild-catalog`, never init;
#   - `init` is refused (exit 4) with the same hint, and not one chunk file is deleted;
#   - `fsck --rebuild-catalog` lists what it rebuilt (volumes, clone, snapshot, schedule) and what it lost;
#   - after mounting, every volume, snapshot image and the clone read byte for byte as before, the
#     snapshot and the schedule are listed, and `fsck` is clean.
# And a garbage collection that would delete most of a store is refused: an older copy of the catalog
# (as restored from a backup) put back over a store written since; the mount and `fsck --repair` leave
# every chunk, say why, and the rebuild gets the data back.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 md5sum

M=$((1024 * 1024))
chunk_files() { find "$DATA/stores" -path '*/chunks/*/*' -type f | wc -l; }
md5() { md5sum < "$1" | cut -d' ' -f1; }

# refused_with_rebuild_hint CODE CMD...: CMD fails with CODE, names fsck --rebuild-catalog, not init
refused_with_rebuild_hint() {
    local code=$1
    shift
    expect_fail --code "$code" "$@"
    [[ "$EF_ERR" == *"tessera fsck --rebuild-catalog"* ]] || fail "$* gave no rebuild hint: $EF_ERR"
    [[ "$EF_ERR" == *"run 'tessera init'"* ]] && fail "$* still says to run init: $EF_ERR"
    info "refused: $EF_ERR"
}

# ---------------------------------------------------------------------------------------------------------
info "the admin's pool: volumes with data, a snapshot, a clone, a schedule"
new_data_dir --chunk-size 256K
start_tessera --no-init
must tcli volume create web --size 8M
must tcli volume create db --size 4M
write_random "$MNT/web.img" 0 $((6 * M)) 1
write_random "$MNT/db.img" 0 $((3 * M)) 2
must tcli snapshot create web db --name before-upgrade
write_random "$MNT/web.img" $((1 * M)) $((2 * M)) 3     # copy-on-write: the snapshot keeps the old chunks
write_random "$MNT/db.img" $((3 * M)) $((512 * 1024)) 4
must tcli clone before-upgrade/web web-test
write_random "$MNT/web-test.img" 0 $((1 * M)) 5
declare -A SUM
for f in web.img db.img web-test.img .snapshots/before-upgrade/web.img .snapshots/before-upgrade/db.img; do
    SUM[$f]=$(md5 "$MNT/$f")
done
[ "${SUM[web.img]}" != "${SUM[.snapshots/before-upgrade/web.img]}" ] || fail "the snapshot of web does not differ from web"
stop_tessera
must tcli snapshot schedule db --every 1h --keep 5       # unmounted: no scheduler takes one meanwhile
SNAPS_BEFORE=$(tcli snapshot list --json | json '[s["name"] for s in d]')
info "snapshots before: $SNAPS_BEFORE"

CHUNKS=$(chunk_files)
info "$CHUNKS chunk files on the stores"
[ "$CHUNKS" -gt 20 ] || fail "only $CHUNKS chunk files after writing 10 MiB"

# ---------------------------------------------------------------------------------------------------------
info "catalog.db removed"
rm -f "$DATA/catalog.db" "$DATA/catalog.db-wal" "$DATA/catalog.db-shm"
refused_with_rebuild_hint 6 tcli status
MNT2=$(mktemp -d "$T_WORK/mnt2.XXXXXX")
T_MOUNTS+=("$MNT2|$DATA")
refused_with_rebuild_hint 6 timeout 60 env TESSERA_DATA="$DATA" "$TESSERA_BIN" mount "$MNT2" --background
_t_is_mounted "$MNT2" && fail "mount without a catalog succeeded"
refused_with_rebuild_hint 6 tcli volume list
refused_with_rebuild_hint 4 tcli init
[ -e "$DATA/catalog.db" ] && fail "a refused command created $DATA/catalog.db"
assert_eq "$(chunk_files)" "$CHUNKS" "chunk files after status, mount and init were refused"

# ---------------------------------------------------------------------------------------------------------
info "fsck --rebuild-catalog"
out=$(tcli fsck --rebuild-catalog 2>&1) || fail "fsck --rebuild-catalog failed: $out"
indent "    " "$out"
grep -q '^rebuilt: .*volumes 3 (0 without manifest, 1 clones)' <<<"$out" || fail "rebuild summary lacks the 3 volumes and the clone"
grep -q 'snapshots 1 (before-upgrade)' <<<"$out" || fail "rebuild summary lacks the snapshot"
grep -q 'schedules 1' <<<"$out" || fail "rebuild summary lacks the schedule"
grep -q 'store settings 1 of 1' <<<"$out" || fail "rebuild summary lacks the store settings"
grep -q '^lost: nothing' <<<"$out" || fail "rebuild lost something: $out"
assert_eq "$(chunk_files)" "$CHUNKS" "chunk files after the rebuild"
expect_fail --code 4 tcli fsck --rebuild-catalog     # a healthy catalog is not rebuilt again

start_tessera --no-init
for f in "${!SUM[@]}"; do
    assert_eq "$(md5 "$MNT/$f")" "${SUM[$f]}" "$f after the rebuild"
done
# (the schedule may already have taken its first snapshot: every earlier one must be there)
missing=$(tcli snapshot list --json | py '
import json, sys
now = [s["name"] for s in json.load(sys.stdin)]
print(" ".join(n for n in json.loads(sys.argv[1]) if n not in now))' "$SNAPS_BEFORE")
assert_eq "$missing" "" "snapshots missing after the rebuild"
assert_eq "$(tcli snapshot schedule --list --json | json '[(s["target"], s["everySeconds"], s["keep"]) for s in d]')" \
    '[["db", 3600, 5]]' "schedules after the rebuild"
assert_eq "$(tcli volume show web-test --json | json 'd["parent"]')" "web" "the clone's parent after the rebuild"
# the rebuilt volumes keep working: a new write to web leaves the snapshot alone
write_random "$MNT/web.img" 0 $((256 * 1024)) 6
assert_eq "$(md5 "$MNT/.snapshots/before-upgrade/web.img")" "${SUM[.snapshots/before-upgrade/web.img]}" "the snapshot after a new write"
stop_tessera
assert_eq "$(chunk_files)" "$((CHUNKS + 1))" "chunk files after the remount and one new chunk"
out=$(tcli fsck 2>&1) || fail "fsck after the rebuild is not clean: $out"

# ---------------------------------------------------------------------------------------------------------
info "an older catalog over a newer store: garbage collection refuses"
new_data_dir --chunk-size 64K
start_tessera --no-init
must tcli volume create v --size 32M
stop_tessera
OLD=$T_WORK/catalog-backup
mkdir -p "$OLD"
cp -a "$DATA"/catalog.db* "$OLD/"
start_tessera --no-init
write_random "$MNT/v.img" 0 $((16 * M)) 7
V_SUM=$(md5 "$MNT/v.img")
stop_tessera
CHUNKS=$(chunk_files)
info "$CHUNKS chunk files; the catalog from before they were written is put back"
[ "$CHUNKS" -ge 256 ] || fail "only $CHUNKS chunk files after writing 16 MiB in 64K chunks"
rm -f "$DATA"/catalog.db*
cp -a "$OLD"/catalog.db* "$DATA/"
: > "$DATA/tessera.log"
start_tessera --no-init
grep -q 'garbage collection refused on store default' "$DATA/tessera.log" || fail "the mount did not say it refused: $(cat "$DATA/tessera.log")"
info "mount: $(grep -o 'garbage collection refused.*of its [0-9]* chunks' "$DATA/tessera.log")"
stop_tessera
assert_eq "$(chunk_files)" "$CHUNKS" "chunk files after mounting the older catalog"
rc=0
out=$(tcli fsck --repair 2>&1) || rc=$?
assert_eq "$rc" 1 "fsck --repair exit status (not clean)"
grep -q 'unreferenced chunk(s) this catalog has no record of freeing' <<<"$out" || fail "fsck --repair did not explain: $out"
info "fsck --repair: $(grep -m1 'no record of freeing' <<<"$out")"
assert_eq "$(chunk_files)" "$CHUNKS" "chunk files after fsck --repair"
info "the way back: move the old catalog aside and rebuild"
mkdir -p "$T_WORK/aside"
mv "$DATA"/catalog.db* "$T_WORK/aside/"
must tcli fsck --rebuild-catalog
start_tessera --no-init
assert_eq "$(md5 "$MNT/v.img")" "$V_SUM" "v.img after the rebuild"
stop_tessera

pass

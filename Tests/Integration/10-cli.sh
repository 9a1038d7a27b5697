#!/usr/bin/env bash
# The CLI: init, pools, stores, volumes, --json, bad input that changes nothing, the CLI talking to a
# running mount, and mount refusing a missing or damaged catalog.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3

G=$((1024 * 1024 * 1024))
M=$((1024 * 1024))

# snapshot: everything the catalog says, as one JSON document (for "changes nothing" checks); leaves out
# the backing filesystem's capacity/free space, which move with unrelated activity on the disk
snapshot() {
    {
        tcli volume list --json
        tcli pool list --json
        tcli store list --json
    } | python3 -c '
import json, sys
docs, dec, s = [], json.JSONDecoder(), sys.stdin.read()
i = 0
while i < len(s):
    if s[i].isspace(): i += 1; continue
    o, i = dec.raw_decode(s, i); docs.append(o)
def strip(x):
    if isinstance(x, dict): return {k: strip(v) for k, v in x.items() if k not in ("free", "capacity", "freeChunks", "filesystemFree", "filesystemUsed", "placementShare", "figuresAt", "healthSince")}
    if isinstance(x, list): return [strip(v) for v in x]
    return x
print(json.dumps(strip(docs), sort_keys=True, indent=1))'
}

# same_snapshot BEFORE WHAT: the catalog must still be exactly BEFORE
same_snapshot() {
    local now
    now=$(snapshot) || fail "cannot list the catalog"
    if [ "$now" != "$1" ]; then
        diff <(echo "$1") <(echo "$now") >&2 || true
        fail "$2: the catalog changed (diff above)"
    fi
}

# ---------------------------------------------------------------------------------------------------------
info "init"
new_data_dir
[ -d "$DATA/stores/default" ] || fail "init did not create $DATA/stores/default"
expect_fail tcli init
info "second init refused: $EF_ERR"
# init on a data dir that does not exist yet is fine (creates it)
DATA0=$DATA
DATA=$T_WORK/fresh/sub
must tcli init
[ -f "$DATA/catalog.db" ] || fail "init did not create a missing data dir"
DATA=$DATA0

info "pool and store listings"
pools=$(tcli pool list --json)
assert_eq "$(echo "$pools" | json '[p["name"] for p in d]')" '["default"]' "pool list after init"
[[ "$(echo "$pools" | json 'd[0]["chunkSize"]')" =~ ^[0-9]+$ ]] || fail "pool chunkSize is not a number: $pools"
[ "$(echo "$pools" | json 'd[0]["capacity"] > 0')" = true ] || fail "default pool capacity is not > 0: $pools"
stores=$(tcli store list --json)
assert_eq "$(echo "$stores" | json '[(s["name"], s["pool"], s["kind"] != "") for s in d]')" '[["default", "default", true]]' "store list after init"
assert_eq "$(tcli pool show default --json | json 'd["name"]')" default "pool show default"
assert_eq "$(tcli status --json | json 'd["mounted"]')" false "status --json mounted before any mount"

# ---------------------------------------------------------------------------------------------------------
info "volume create/list/show/resize/delete"
must tcli volume create v1 --size 1G
must tcli volume create tiny --size 512
must tcli volume create huge --size 64T
must tcli volume create suffixes --size 1536K
vl=$(tcli volume list --json)
assert_eq "$(echo "$vl" | json 'sorted(v["name"] for v in d)')" '["huge", "suffixes", "tiny", "v1"]' "volume names"
assert_eq "$(echo "$vl" | json '{v["name"]: v["size"] for v in d}["v1"]')" "$G" "v1 size"
assert_eq "$(echo "$vl" | json '{v["name"]: v["size"] for v in d}["tiny"]')" 512 "tiny size"
assert_eq "$(echo "$vl" | json '{v["name"]: v["size"] for v in d}["huge"]')" $((64 * 1024 * G)) "huge size"
assert_eq "$(echo "$vl" | json '{v["name"]: v["size"] for v in d}["suffixes"]')" $((1536 * 1024)) "1536K size"
for k in id name pool size allocated chunkSize uid gid mode open; do
    [ "$(echo "$vl" | json "all('$k' in v for v in d)")" = true ] || fail "volume list --json lacks field '$k': $vl"
done
show=$(tcli volume show v1 --json)
assert_eq "$(echo "$show" | json 'd["name"]')" v1 "show name"
assert_eq "$(echo "$show" | json 'd["pool"]')" default "show pool"
assert_eq "$(echo "$show" | json 'd["size"]')" "$G" "show size"
assert_eq "$(echo "$show" | json 'd["allocated"]')" 0 "new volume allocated"
# mode: a number or an octal string ("0600")
assert_eq "$(echo "$show" | json '(d["uid"], d["gid"], (int(d["mode"], 8) if isinstance(d["mode"], str) else d["mode"]) & 0o7777)')" "[0, 0, 384]" "new CLI volume is 0600 root:root"
out=$(tcli volume list) || fail "plain volume list failed"
[[ "$out" == *v1* ]] || fail "plain 'volume list' does not mention v1"
out=$(tcli volume show v1) || fail "plain volume show failed"
[[ "$out" == *v1* ]] || fail "plain 'volume show v1' does not mention v1"

must tcli volume resize v1 --size 2G
assert_eq "$(volume_field v1 size)" $((2 * G)) "size after grow"
expect_fail --code 2 tcli volume resize v1 --size 512M      # shrinking needs --shrink
assert_eq "$(volume_field v1 size)" $((2 * G)) "size after a shrink without --shrink"
must tcli volume resize v1 --size 512M --shrink
assert_eq "$(volume_field v1 size)" $((512 * M)) "size after shrink"
must tcli volume delete tiny
has_volume tiny && fail "tiny still listed after delete"
expect_fail --code 3 tcli volume show tiny

info "--count"
must tcli volume create c --size 10M --count 3
assert_eq "$(volume_names | grep '^c-' | tr '\n' ' ')" "c-1 c-2 c-3 " "--count 3 names"
for n in 1 2 3; do assert_eq "$(volume_field c-$n size)" $((10 * M)) "c-$n size"; done
# a count that collides with an existing name creates none of them (one transaction)
must tcli volume create d-2 --size 1M
before=$(snapshot)
expect_fail --code 4 tcli volume create d --size 1M --count 3
same_snapshot "$before" "catalog after a colliding --count"

info "pools and stores"
mkdir -p "$T_WORK/store2"
must tcli pool create p2 --chunk-size 4M
assert_eq "$(tcli pool show p2 --json | json 'd["chunkSize"]')" $((4 * M)) "p2 chunk size"
must tcli store add s2 --pool p2 --dir "$T_WORK/store2"
assert_eq "$(tcli store list --json | json '[s["name"] for s in d if s["pool"] == "p2"]')" '["s2"]' "stores of pool p2"
must tcli volume create inp2 --size 8M --pool p2
assert_eq "$(volume_field inp2 pool)" p2 "inp2 pool"
assert_eq "$(volume_field inp2 chunkSize)" $((4 * M)) "inp2 chunk size"

# ---------------------------------------------------------------------------------------------------------
info "bad input changes nothing"
before=$(snapshot)
long=$(printf 'n%.0s' $(seq 1 201))
for name in '' 'a/b' '..' '.' '.x' 'x.img' $'a\nb' $'tab\there' "$long"; do
    expect_fail --code 2,64 tcli volume create "$name" --size 1M
done
for size in 0 -1 abc 1Q 513 99999T 2P '' 1.5G ' ' 0x100 18446744073709551616; do
    expect_fail --code 2,64 tcli volume create okname --size "$size"
    expect_fail --code 2,64,3 tcli volume resize v1 --size "$size"
done
expect_fail --code 2,64 tcli volume create okname --size 1M --count 0
expect_fail --code 2,64 tcli volume create okname --size 1M --count -2
expect_fail --code 2,64 tcli volume create okname            # no size
expect_fail --code 3 tcli volume create okname --size 1M --pool nosuchpool
expect_fail --code 3 tcli volume show nosuch
expect_fail --code 3 tcli volume resize nosuch --size 1M
expect_fail --code 3 tcli volume delete nosuch
expect_fail --code 3 tcli pool show nosuch
expect_fail --code 4 tcli volume create v1 --size 1M
expect_fail --code 4 tcli pool create default
expect_fail --code 2,64 tcli pool create 'a/b'
expect_fail --code 2,64 tcli pool create p3 --chunk-size 0
expect_fail --code 2,64 tcli pool create p3 --chunk-size abc
expect_fail --code 2,3 tcli store add s3 --pool default --dir "$T_WORK/does-not-exist"
info "store add with a missing dir: $EF_ERR"
[ -e "$T_WORK/does-not-exist" ] && fail "store add created the missing directory"
touch "$T_WORK/a-file"
expect_fail --code 2,3 tcli store add s3 --pool default --dir "$T_WORK/a-file"
expect_fail --code 3 tcli store add s3 --pool nosuchpool --dir "$T_WORK/store2"
expect_fail --code 4 tcli store add default --pool default --dir "$T_WORK/store2"
expect_fail --code 64 tcli volume frobnicate
same_snapshot "$before" "catalog after bad input"

# ---------------------------------------------------------------------------------------------------------
info "with a mount running, CLI changes appear in the mount at once"
start_tessera --no-init
[ "$(tcli status --json | json 'd["mounted"]')" = true ] || fail "status --json: mounted should be true while mounted"
assert_eq "$(tcli status --json | json 'd["mountpoint"]')" "$(realpath "$MNT")" "status mountpoint"
# the control socket is root-only
sock_mode=$(stat -c %a "$DATA/control.sock") || fail "no control socket at $DATA/control.sock while mounted"
[ $(( 8#$sock_mode & 8#077 )) -eq 0 ] || fail "control.sock has mode $sock_mode: group/other may connect"
# listing of the mount
assert_eq "$(find "$MNT" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | tr '\n' ' ')" ".snapshots c-1.img c-2.img c-3.img d-2.img huge.img inp2.img suffixes.img v1.img " "mount listing"
assert_eq "$(file_size "$MNT/v1.img")" $((512 * M)) "v1.img size in the mount"
assert_eq "$(file_size "$MNT/huge.img")" $((64 * 1024 * G)) "huge.img size in the mount"
assert_eq "$(file_owner "$MNT/v1.img") $(file_mode "$MNT/v1.img")" "0:0 600" "owner/mode of a CLI-made image"
must tcli volume create x --size 3M
assert_eq "$(file_size "$MNT/x.img")" $((3 * M)) "x.img right after volume create"
must tcli volume resize x --size 5M
assert_eq "$(file_size "$MNT/x.img")" $((5 * M)) "x.img right after volume resize"
must tcli volume create m --size 1M --count 2
[[ -f $MNT/m-1.img && -f $MNT/m-2.img ]] || fail "--count volumes not visible in the mount"
must tcli volume delete x
[ -e "$MNT/x.img" ] && fail "x.img still in the mount after volume delete"
has_line "$(ls "$MNT")" x.img && fail "x.img still listed by readdir after volume delete"
# and the other way: a file gesture shows in the CLI
touch "$MNT/fromfs.img"
has_volume fromfs || fail "touch MOUNT/fromfs.img did not create volume fromfs"
# bad input while mounted also changes nothing
before=$(snapshot)
expect_fail --code 2,64 tcli volume create 'a/b' --size 1M
expect_fail --code 2,64 tcli volume create ok2 --size 513
expect_fail --code 4 tcli volume create v1 --size 1M
expect_fail --code 3 tcli volume delete nosuch
same_snapshot "$before" "catalog after bad input while mounted"
# a second mount of the same data directory is refused
MNT2=$(mktemp -d "$T_WORK/mnt2.XXXXXX")
T_MOUNTS+=("$MNT2|$DATA")
expect_fail --code 5 timeout 30 env TESSERA_DATA="$DATA" "$TESSERA_BIN" mount "$MNT2" --background
_t_is_mounted "$MNT2" && fail "a second mount of the same data dir succeeded at $MNT2"
# unmount refuses while an image is open
exec 7<"$MNT/v1.img"
expect_fail --code 5 tcli unmount "$MNT"
_t_is_mounted "$MNT" || fail "unmount refused (busy) but the mount is gone"
exec 7<&-
sleep 0.5   # release reaches the daemon asynchronously
stop_tessera
[ "$(tcli status --json | json 'd["mounted"]')" = false ] || fail "status --json: mounted should be false after unmount"
assert_eq "$(volume_names | tr '\n' ' ')" "c-1 c-2 c-3 d-2 fromfs huge inp2 m-1 m-2 suffixes v1 " "volumes after unmount"

# ---------------------------------------------------------------------------------------------------------
info "mount refuses a missing or damaged catalog"
try_mount_refused() {   # DATA-DIR WHAT
    local d=$1 what=$2 mp
    mp=$(mktemp -d "$T_WORK/mnt-refuse.XXXXXX")
    T_MOUNTS+=("$mp|$d")
    expect_fail --code 6 timeout 30 env TESSERA_DATA="$d" "$TESSERA_BIN" mount "$mp" --background
    info "mount with $what refused: $EF_ERR"
    _t_is_mounted "$mp" && fail "mount with $what succeeded"
    expect_fail --code 6 env TESSERA_DATA="$d" "$TESSERA_BIN" volume list
    return 0
}
empty=$(mktemp -d "$T_WORK/empty.XXXXXX")
try_mount_refused "$empty" "an empty data dir (no catalog)"
[ -e "$empty/catalog.db" ] && fail "a refused mount created $empty/catalog.db"

nocat=$(mktemp -d "$T_WORK/nocat.XXXXXX")
cp -a "$DATA/." "$nocat/"
rm -f "$nocat"/catalog.db*
try_mount_refused "$nocat" "the catalog deleted (stores left)"

garbage=$(mktemp -d "$T_WORK/garbage.XXXXXX")
cp -a "$DATA/." "$garbage/"
rm -f "$garbage"/catalog.db-wal "$garbage"/catalog.db-shm "$garbage/control.sock"
head -c 65536 /dev/urandom > "$garbage/catalog.db"
try_mount_refused "$garbage" "a catalog overwritten with garbage"

zero=$(mktemp -d "$T_WORK/zero.XXXXXX")
cp -a "$DATA/." "$zero/"
rm -f "$zero"/catalog.db-wal "$zero"/catalog.db-shm "$zero/control.sock"
: > "$zero/catalog.db"
try_mount_refused "$zero" "an empty (0-byte) catalog file"

trunc=$(mktemp -d "$T_WORK/trunc.XXXXXX")
cp -a "$DATA/." "$trunc/"
rm -f "$trunc"/catalog.db-wal "$trunc"/catalog.db-shm "$trunc/control.sock"
truncate -s 1024 "$trunc/catalog.db"   # header intact, pages gone
try_mount_refused "$trunc" "a truncated catalog"

# a sqlite database that is not Tessera's
foreign=$(mktemp -d "$T_WORK/foreign.XXXXXX")
cp -a "$DATA/." "$foreign/"
rm -f "$foreign"/catalog.db*  "$foreign/control.sock"
python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("create table t(x)"); c.commit()' "$foreign/catalog.db"
try_mount_refused "$foreign" "a foreign SQLite database as catalog"

# mountpoint problems
expect_fail timeout 30 env TESSERA_DATA="$DATA" "$TESSERA_BIN" mount "$T_WORK/no-such-mountpoint" --background

# the original is untouched by all this and still mounts
start_tessera --no-init
assert_eq "$(file_size "$MNT/v1.img")" $((512 * M)) "v1.img after remount"
stop_tessera

pass

#!/usr/bin/env bash
# Domains for real: `tessera domain` and `--domain` on the CLI (offline and through the mount), the
# same volume name in two domains, MOUNT/D/VOL.img and MOUNT/D/.snapshots/SNAP/VOL.img, file gestures
# inside MOUNT/D/ (cp, truncate, qemu-img create, mkdir/rmdir of snapshots, rename, unlink), qemu-img and
# qemu-io on a domain's image, quotas refused with EDQUOT (file gestures) and exit 9 (CLI) changing
# nothing, the pools policy, bad input, and that everything is still there after a remount.
set -euo pipefail
T_TIMEOUT=${T_TIMEOUT:-180}
source "$(dirname "$0")/lib.sh"
need python3 qemu-img qemu-io truncate cmp md5sum
M=$((1024 * 1024))

# errno_of PYTHON-STATEMENT ARGS...: runs the statement (sys.argv[1:] = ARGS) and prints the errno name it
# failed with, or "ok".
errno_of() {
    local code=$1
    shift
    py "import errno, os, sys
try:
    $code
    print('ok')
except OSError as e:
    print(errno.errorcode[e.errno])" "$@"
}

# names_in DOMAIN: volume names of DOMAIN, sorted, space-separated.
names_in() {
    local j
    j=$(tcli volume list --domain "$1" --json) || fail "volume list --domain $1 failed"
    json '" ".join(sorted(v["name"] for v in d))' <<<"$j"
}

# entries DIR: the names in DIR (readdir), sorted, space-separated.
entries() { py 'import os, sys; print(" ".join(sorted(os.listdir(sys.argv[1]))))' "$1"; }

domain_field() {   # DOMAIN FIELD
    local j
    j=$(tcli domain show "$1" --json) || fail "domain show $1 failed"
    json "d[\"$2\"]" <<<"$j"
}

new_data_dir
info "domain commands and bad input, no mount"
must tcli domain create red --quota-volumes 3 --quota-size 64M --quota-snapshots 1
must tcli domain create blue
expect_fail --code 4 tcli domain create red
expect_fail --code 4 tcli domain create default
for n in '' 'a/b' '.snapshots' 'x.img' '..' $'a\nb'; do
    expect_fail --code 2 tcli domain create "$n"
done
expect_fail --code 3 tcli domain show nowhere
expect_fail --code 3 tcli domain delete nowhere
expect_fail --code 2 tcli domain delete default
expect_fail --code 3 tcli domain create green --pools nowhere
expect_fail --code 2 tcli domain create green --pools default,,x
expect_fail --code 2 tcli domain create green --quota-size 12Q
expect_fail --code 2,64 tcli domain create green --quota-volumes -1
expect_fail --code 2 tcli domain set red
expect_fail --code 2 tcli domain set red --quota-volumes 3 --no-quota-volumes
expect_fail --code 2 tcli domain set red --pools default --any-pool
expect_fail --code 2 tcli domain create green --pools default,default
expect_fail --code 3 tcli domain set nowhere --quota-volumes 1
expect_fail --code 3 tcli snapshot create vm --name s --domain nowhere
expect_fail --code 3 tcli clone vm x --domain nowhere
expect_fail --code 2 tcli volume list --all-domains --domain red
expect_fail --code 3 tcli volume create v --size 1M --domain nowhere
expect_fail --code 3 tcli volume list --domain nowhere
expect_fail --code 2 tcli volume create v --size 1M --domain .x
[ "$(tcli domain list --json | json '" ".join(x["name"] for x in d)')" = "default red blue" ] ||
    fail "domain list after refusals: $(tcli domain list)"

info "the same name in three domains (offline)"
must tcli volume create vm --size 8M
must tcli volume create vm --size 16M --domain red
must tcli volume create vm --size 4M --domain blue
expect_fail --code 4 tcli volume create vm --size 1M --domain red
assert_eq "$(tcli volume list --all-domains --json | json '" ".join(v["domain"] + "/" + v["name"] for v in d)')" \
    "default/vm red/vm blue/vm" "volume list --all-domains"
expect_fail --code 3 tcli volume show nothere --domain red

start_tessera --no-init
info "mount layout"
for d in red blue red/.snapshots blue/.snapshots; do
    [ -d "$MNT/$d" ] || fail "no directory MOUNT/$d: $(ls -a "$MNT")"
done
[ ! -e "$MNT/default" ] || fail "the default domain has a directory of its own"
assert_eq "$(file_size "$MNT/vm.img")" $((8 * M)) "MOUNT/vm.img"
assert_eq "$(file_size "$MNT/red/vm.img")" $((16 * M)) "MOUNT/red/vm.img"
assert_eq "$(file_size "$MNT/blue/vm.img")" $((4 * M)) "MOUNT/blue/vm.img"
ino_root=$(stat -c %i "$MNT/vm.img")
ino_red=$(stat -c %i "$MNT/red/vm.img")
ino_dir=$(stat -c %i "$MNT/red")
if [ "$ino_root" = "$ino_red" ] || [ "$ino_dir" = "$(stat -c %i "$MNT/blue")" ]; then
    fail "inode numbers collide"
fi
assert_eq "$(entries "$MNT")" ".snapshots blue red vm.img" "the root's entries"

info "qemu-img and qemu-io on MOUNT/red/vm.img"
must qemu-img info -f raw "$MNT/red/vm.img" >qinfo
grep -q 'virtual size: 16 MiB' qinfo || fail "qemu-img info: $(cat qinfo)"
must qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 15M 1M' "$MNT/red/vm.img" >/dev/null
must qemu-io -f raw -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 15M 1M' "$MNT/red/vm.img" >qio
grep -q 'Pattern verification failed' qio && fail "qemu-io read back the wrong pattern"
is_zero "$MNT/vm.img" 0 $((8 * M)) || fail "a write to red/vm.img showed in the default domain's vm.img"
is_zero "$MNT/blue/vm.img" 0 $((4 * M)) || fail "a write to red/vm.img showed in blue/vm.img"
red_md5=$(md5sum <"$MNT/red/vm.img")

info "file gestures in MOUNT/blue and MOUNT/red"
must qemu-img create -f raw "$MNT/blue/made.img" 8M >/dev/null
truncate -s 2M src.img
write_random src.img 0 $((2 * M)) 5
cp src.img "$MNT/red/copied.img" || fail "cp into MOUNT/red failed"
cmp src.img "$MNT/red/copied.img" || fail "MOUNT/red/copied.img differs from its source"
assert_eq "$(names_in blue)" "made vm" "blue's volumes"
assert_eq "$(names_in red)" "copied vm" "red's volumes"
assert_eq "$(names_in default)" "vm" "the default domain's volumes"
must mv "$MNT/blue/made.img" "$MNT/blue/renamed.img"
assert_eq "$(errno_of 'os.rename(sys.argv[1], sys.argv[2])' "$MNT/blue/renamed.img" "$MNT/red/x.img")" EXDEV \
    "rename into another domain"
assert_eq "$(errno_of 'os.rename(sys.argv[1], sys.argv[2])' "$MNT/blue/renamed.img" "$MNT/x.img")" EXDEV \
    "rename into the default domain"
assert_eq "$(errno_of 'os.mkdir(sys.argv[1])' "$MNT/newdomain")" EPERM "mkdir of a domain directory"
assert_eq "$(errno_of 'os.rmdir(sys.argv[1])' "$MNT/blue")" EPERM "rmdir of a domain directory"
truncate -s 6M "$MNT/blue/renamed.img"
assert_eq "$(tcli volume show renamed --domain blue --json | json 'd["size"]')" $((6 * M)) "size after truncate"
rm "$MNT/blue/renamed.img"
assert_eq "$(names_in blue)" "vm" "blue's volumes after rm"

info "quotas: EDQUOT for file gestures, exit 9 for the CLI, nothing changed"
# red: quota 3 volumes, 64M, 1 snapshot; holds vm (16M) and copied (2M), so copied may grow to 48M.
assert_eq "$(errno_of 'os.truncate(sys.argv[1], 48 * 2**20 + 1)' "$MNT/red/copied.img")" EDQUOT "truncate past 64M"
assert_eq "$(errno_of 'f = os.open(sys.argv[1], os.O_WRONLY); os.pwrite(f, b"x", 50 * 2**20)' "$MNT/red/copied.img")" \
    EDQUOT "write past the end, past 64M"
assert_eq "$(errno_of 'os.posix_fallocate(os.open(sys.argv[1], os.O_WRONLY), 0, 60 * 2**20)' "$MNT/red/copied.img")" \
    EDQUOT "fallocate past 64M"
assert_eq "$(file_size "$MNT/red/copied.img")" $((2 * M)) "copied.img after refused growth"
cmp src.img "$MNT/red/copied.img" || fail "a refused growth changed copied.img"
expect_fail --code 9 tcli volume resize copied --size 60M --domain red
grep -q quota <<<"$EF_ERR" || fail "over-quota message does not say so: $EF_ERR"
expect_fail --code 9 tcli volume create big --size 50M --domain red
truncate -s 46M "$MNT/red/copied.img"   # 16M + 46M = 62M: within the quota
assert_eq "$(errno_of 'open(sys.argv[1], "w").close()' "$MNT/red/third.img")" ok "the third volume"
assert_eq "$(errno_of 'open(sys.argv[1], "w").close()' "$MNT/red/fourth.img")" EDQUOT "a fourth volume"
expect_fail --code 9 tcli volume create fourth --size 1M --domain red
expect_fail --code 9 tcli clone vm fourth --domain red
assert_eq "$(names_in red)" "copied third vm" "red's volumes after refusals"
assert_eq "$(domain_field red provisioned)" $((62 * M)) "red's provisioned size"

info "snapshots under MOUNT/red/.snapshots and MOUNT/blue/.snapshots"
must tcli snapshot create vm --name s1 --domain red
[ -f "$MNT/red/.snapshots/s1/vm.img" ] || fail "no MOUNT/red/.snapshots/s1/vm.img: $(ls -R "$MNT/red/.snapshots")"
[ ! -e "$MNT/.snapshots/s1" ] || fail "red's snapshot shows in the default domain's .snapshots"
assert_eq "$(errno_of 'os.mkdir(sys.argv[1])' "$MNT/red/.snapshots/s2")" EDQUOT "mkdir past the snapshot quota"
expect_fail --code 9 tcli snapshot create vm --name s2 --domain red
must qemu-io -f raw -c 'write -P 0x11 0 1M' "$MNT/red/vm.img" >/dev/null
assert_eq "$(md5sum <"$MNT/red/.snapshots/s1/vm.img")" "$red_md5" "red's snapshot s1"
mkdir "$MNT/blue/.snapshots/b1" || fail "mkdir MOUNT/blue/.snapshots/b1 failed"
[ -f "$MNT/blue/.snapshots/b1/vm.img" ] || fail "no MOUNT/blue/.snapshots/b1/vm.img"
assert_eq "$(tcli snapshot list --domain blue --json | json '" ".join(s["name"] for s in d)')" b1 "blue's snapshots"
assert_eq "$(tcli snapshot list --json | json 'len(d)')" 0 "the default domain's snapshots"
expect_fail --code 3 tcli clone s1/vm fromsnap --domain blue
must tcli snapshot schedule vm --every 1h --keep 2 --domain blue
assert_eq "$(tcli snapshot schedule --list --json | json 'len(d)')" 0 "the default domain's schedules"

info "domain delete is refused while it holds anything"
expect_fail --code 5 tcli domain delete red
expect_fail --code 5 tcli domain delete blue
must tcli snapshot schedule vm --remove --domain blue
rmdir "$MNT/blue/.snapshots/b1" || fail "rmdir MOUNT/blue/.snapshots/b1 failed"
must tcli volume delete vm --domain blue
must tcli domain delete blue
[ ! -e "$MNT/blue" ] || fail "MOUNT/blue is still there after domain delete"

info "pools policy"
mkdir -p "$T_WORK/fast"
must tcli pool create fast
must tcli store add f1 --pool fast --dir "$T_WORK/fast"
must tcli domain create green --pools fast
must tcli volume create g --size 1M --domain green
assert_eq "$(tcli volume show g --domain green --json | json 'd["pool"]')" fast "placement by the policy"
expect_fail --code 2 tcli volume create g2 --size 1M --pool default --domain green
: >"$MNT/green/byfile.img" || fail "creating a file in MOUNT/green failed"
assert_eq "$(tcli volume show byfile --domain green --json | json 'd["pool"]')" fast "a file gesture's placement"
must tcli domain set green --any-pool --quota-volumes 2
assert_eq "$(errno_of 'open(sys.argv[1], "w").close()' "$MNT/green/third.img")" EDQUOT "green's volume quota"

info "remount: everything still there"
restart_tessera
assert_eq "$(entries "$MNT")" ".snapshots green red vm.img" "the root's entries after remount"
assert_eq "$(names_in red)" "copied third vm" "red's volumes after remount"
assert_eq "$(md5sum <"$MNT/red/.snapshots/s1/vm.img")" "$red_md5" "red's snapshot s1 after remount"
cmp -n $((2 * M)) src.img "$MNT/red/copied.img" || fail "copied.img after remount"
assert_eq "$(file_size "$MNT/red/copied.img")" $((46 * M)) "copied.img size after remount"
assert_eq "$(errno_of 'os.truncate(sys.argv[1], 49 * 2**20)' "$MNT/red/copied.img")" EDQUOT "the quota after remount"
assert_eq "$(domain_field green quotaVolumes)" 2 "green's quota after remount"
stop_tessera
pass

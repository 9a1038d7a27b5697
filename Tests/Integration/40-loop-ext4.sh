#!/usr/bin/env bash
# ext4 on a loop device on an image (buffered and --direct-io=on): mkfs, mount, write, fstrim, umount,
# e2fsck -fn clean; again after a Tessera remount, with the files' checksums intact.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need losetup mkfs.ext4 e2fsck fstrim python3 md5sum

M=$((1024 * 1024))

start_tessera
mkdir -p fs

# populate DIR: a big random file, many small ones, a directory tree; records checksums in DIR.sums
populate() {
    local dir=$1 tag=$2
    mkdir -p "$dir/tree/a/b/c"
    head -c $((24 * M)) /dev/urandom > "$dir/big.bin"
    local i
    for i in $(seq 1 200); do head -c $((RANDOM * 4 + i)) /dev/urandom > "$dir/tree/a/f$i"; done
    for i in $(seq 1 20); do echo "$tag $i" > "$dir/tree/a/b/c/n$i.txt"; done
    (cd "$dir" && find . -type f ! -name sums -print0 | sort -z | xargs -0 md5sum) > "$tag.sums"
}

check_sums() {
    local dir=$1 tag=$2
    (cd "$dir" && md5sum --quiet -c "$OLDPWD/$tag.sums") || fail "files on the $tag filesystem changed"
}

fsck_clean() {   # IMAGE WHAT
    local out rc=0
    out=$(timeout 300 e2fsck -fn "$1" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || fail "e2fsck -fn $1 ($2) exit $rc:"$'\n'"$out"
}

for mode in buffered direct; do
    img="$MNT/ext4-$mode.img"
    truncate -s 256M "$img"
    assert_eq "$(volume_field "ext4-$mode" size)" $((256 * M)) "volume size made by truncate"
    if [ "$mode" = direct ]; then
        loop_attach "$img" --direct-io=on; dev=$LOOP_DEV
        dio=$(losetup -n -O DIO "$dev" | tr -d ' ')
        [ "$dio" = 1 ] || warn "losetup --direct-io=on fell back to buffered I/O on $dev (DIO=$dio)"
    else
        loop_attach "$img"; dev=$LOOP_DEV
    fi
    info "$mode: $dev"
    timeout 300 mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 on $dev ($mode) failed"
    mount "$dev" fs || fail "mounting ext4 from $dev failed"
    defer umount -l "$PWD/fs"
    populate fs "$mode"
    sync -f fs/big.bin
    # free space and trim: the image must shrink (PUNCH_HOLE reaches Tessera)
    head -c $((64 * M)) /dev/urandom > fs/trimme.bin
    sync -f fs/trimme.bin
    b_before=$(file_blocks "$img")
    rm fs/trimme.bin
    sync
    fstrim -v fs || fail "fstrim on ext4 over $dev failed"
    sync
    b_after=$(file_blocks "$img")
    [ $(( (b_before - b_after) * 512 )) -ge $((32 * M)) ] ||
        fail "$mode: after deleting 64 MiB and fstrim, st_blocks went only from $b_before to $b_after"
    check_sums fs "$mode"
    umount fs || fail "umount of ext4 ($mode) failed"
    losetup -d "$dev" || fail "losetup -d $dev failed"
    fsck_clean "$img" "$mode, before remount"
done

info "remount tessera; e2fsck again and read the files back"
restart_tessera
for mode in buffered direct; do
    img="$MNT/ext4-$mode.img"
    fsck_clean "$img" "$mode, after remount"
    loop_attach "$img" --read-only; dev=$LOOP_DEV
    mount -o ro "$dev" fs || fail "mounting ext4 ($mode) read-only after remount failed"
    check_sums fs "$mode"
    umount fs
    losetup -d "$dev"
done

# and a direct-io loop device writing after the remount, then fsck once more
loop_attach "$MNT/ext4-direct.img" --direct-io=on; dev=$LOOP_DEV
mount "$dev" fs || fail "mount after remount failed"
head -c $((8 * M)) /dev/urandom > fs/late.bin
late=$(md5sum < fs/late.bin)
umount fs
losetup -d "$dev"
fsck_clean "$MNT/ext4-direct.img" "direct, written after remount"
restart_tessera
loop_attach "$MNT/ext4-direct.img" --read-only; dev=$LOOP_DEV
mount -o ro "$dev" fs
assert_eq "$(md5sum < fs/late.bin)" "$late" "late.bin after another remount"
umount fs
losetup -d "$dev"

stop_tessera
pass

#!/usr/bin/env bash
# qemu-img create/info/convert/compare/resize and qemu-io pattern I/O (buffered, cache=none, aio=native)
# on images in the mount.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need qemu-img qemu-io python3

G=$((1024 * 1024 * 1024))
M=$((1024 * 1024))

# qio ARGS...: qemu-io that fails the test on any failed command or pattern mismatch.
qio() {
    local out rc=0
    out=$(timeout 120 qemu-io "$@" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || grep -qiE 'fail|error|mismatch|denied|not supported' <<<"$out"; then
        fail "qemu-io $* (exit $rc):"$'\n'"$out"
    fi
}

start_tessera

info "qemu-img create -f raw makes a volume"
must qemu-img create -q -f raw "$MNT/a.img" 1G
has_volume a || fail "tessera volume list does not show 'a' after qemu-img create"
assert_eq "$(volume_field a size)" "$G" "volume a size"
assert_eq "$(file_size "$MNT/a.img")" "$G" "a.img size"
infoj=$(qemu-img info --output=json "$MNT/a.img")
assert_eq "$(echo "$infoj" | json 'd["format"]')" raw "qemu-img info format"
assert_eq "$(echo "$infoj" | json 'd["virtual-size"]')" "$G" "qemu-img info virtual-size"
[ "$(echo "$infoj" | json 'd["actual-size"] < 8 * 1024 * 1024')" = true ] || fail "fresh 1G image is not thin: $infoj"
# qemu-img create on an existing image must not lose it silently: it recreates (truncate) — size follows
must qemu-img create -q -f raw "$MNT/a.img" 1G

info "qemu-io pattern writes and reads (buffered)"
qio -f raw -c 'write -P 0xab 0 4M' -c 'read -P 0xab 0 4M' "$MNT/a.img"
qio -f raw -c 'write -P 0x11 1020K 8K' -c 'read -P 0x11 1020K 8K' -c 'read -P 0xab 0 1020K' -c 'read -P 0xab 1028K 3068K' "$MNT/a.img"
qio -f raw -c 'read -P 0 4M 100M' -c 'read -P 0 1023M 1M' "$MNT/a.img"
qio -f raw -c 'write -P 0x5c 1073737728 4096' -c 'read -P 0x5c 1073737728 4096' "$MNT/a.img"   # last 4K

info "qemu-io with cache=none (O_DIRECT)"
qio -f raw -t none -c 'read -P 0xab 0 1020K' -c 'read -P 0x11 1020K 8K' "$MNT/a.img"
qio -f raw -t none -c 'write -P 0xcd 8M 2M' -c 'read -P 0xcd 8M 2M' "$MNT/a.img"
qio -f raw -t none -c 'write -P 0xce 12M 512' -c 'read -P 0xce 12M 512' -c 'read -P 0 12583424 512' "$MNT/a.img"
info "qemu-io with cache=none, aio=native"
qio -f raw -t none -i native -c 'write -P 0xef 16M 4M' -c 'read -P 0xef 16M 4M' -c 'aio_write -P 0x21 32M 64K' -c 'aio_flush' -c 'read -P 0x21 32M 64K' "$MNT/a.img"
qio -f raw -t none -i native -c 'read -P 0xab 0 1020K' -c 'read -P 0xcd 8M 2M' "$MNT/a.img"
info "qemu-io with aio=io_uring"
if qemu-io -f raw -t none -i io_uring -c 'read 0 4K' "$MNT/a.img" >/dev/null 2>&1; then
    qio -f raw -t none -i io_uring -c 'write -P 0x77 40M 1M' -c 'read -P 0x77 40M 1M' "$MNT/a.img"
else
    warn "qemu-io -i io_uring is not available here; skipped"
fi
# a mismatching pattern read must be reported (proves qio can fail)
out=$(qemu-io -f raw -c 'read -P 0x99 0 4K' "$MNT/a.img" 2>&1 || true)
grep -qi 'pattern verification failed' <<<"$out" || fail "qemu-io did not notice a wrong pattern: $out"

info "qemu-img convert qcow2 -> mount -> qcow2, compare"
must qemu-img create -q -f qcow2 local.qcow2 256M
qemu-io -f qcow2 -c 'write -P 0x41 0 3M' -c 'write -P 0x42 100M 1M' -c 'write -P 0x43 255M 1M' local.qcow2 >/dev/null
must qemu-img convert -f qcow2 -O raw local.qcow2 "$MNT/b.img"
has_volume b || fail "qemu-img convert into the mount did not create volume b"
assert_eq "$(file_size "$MNT/b.img")" $((256 * M)) "converted b.img size"
must qemu-img compare -f qcow2 -F raw local.qcow2 "$MNT/b.img"
alloc=$(volume_field b allocated)
[ "$alloc" -le $((32 * M)) ] || fail "converted image allocated $alloc bytes for 5 MiB of data (not thin)"
must qemu-img convert -f raw -O qcow2 "$MNT/b.img" back.qcow2
must qemu-img compare -f qcow2 -F qcow2 local.qcow2 back.qcow2
info "qemu-img convert with cache=none on both sides"
must qemu-img convert -t none -T none -f qcow2 -O raw local.qcow2 "$MNT/c.img"
must qemu-img compare -f qcow2 -F raw local.qcow2 "$MNT/c.img"
# compare must notice a difference (proves the check can fail)
qemu-io -f raw -c 'write -P 0x44 200M 4K' "$MNT/c.img" >/dev/null
rc=0; qemu-img compare -q -f qcow2 -F raw local.qcow2 "$MNT/c.img" || rc=$?
assert_eq "$rc" 1 "qemu-img compare exit code for differing images"

info "qemu-img resize"
must qemu-img resize -q -f raw "$MNT/a.img" 2G
assert_eq "$(volume_field a size)" $((2 * G)) "size after qemu-img resize"
qio -f raw -c 'read -P 0xab 0 1020K' -c 'read -P 0 1G 1G' "$MNT/a.img"
must qemu-img resize -q -f raw --shrink "$MNT/a.img" 64M
assert_eq "$(file_size "$MNT/a.img")" $((64 * M)) "size after qemu-img resize --shrink"
qio -f raw -c 'read -P 0xab 0 1020K' -c 'read -P 0xcd 8M 2M' "$MNT/a.img"

info "a qcow2 image stored on a volume"
must qemu-img create -q -f qcow2 "$MNT/q.img" 1G
qio -f qcow2 -t none -c 'write -P 0x61 0 8M' -c 'write -P 0x62 500M 1M' "$MNT/q.img"
must qemu-img check -q -f qcow2 "$MNT/q.img"
qio -f qcow2 -c 'read -P 0x61 0 8M' -c 'read -P 0x62 500M 1M' -c 'read -P 0 600M 1M' "$MNT/q.img"

info "everything survives unmount + remount"
sums_before=$(cd "$MNT" && md5sum a.img b.img q.img)
restart_tessera
sums_after=$(cd "$MNT" && md5sum a.img b.img q.img)
assert_eq "$sums_after" "$sums_before" "md5sums after remount"
must qemu-img compare -f qcow2 -F raw local.qcow2 "$MNT/b.img"
must qemu-img check -q -f qcow2 "$MNT/q.img"
qio -f raw -t none -i native -c 'read -P 0xab 0 1020K' -c 'read -P 0x11 1020K 8K' "$MNT/a.img"

stop_tessera
pass

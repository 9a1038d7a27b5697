#!/usr/bin/env bash
# A real guest: qemu-system-x86_64 boots a hand-made boot sector from an image in the mount
# (cache=none,aio=native, and other disk setups); the guest reads seeded sectors via BIOS INT 13h,
# writes them back XOR 0x5A elsewhere, re-reads and compares, and exits through isa-debug-exit.
# The host then finds the guest's write in the image, also after a Tessera remount.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need qemu-system-x86_64 python3

BOOT="$T_DIR/bootsector.py"
start_tessera

# run_guest IMAGE DRIVE-OPTS ACCEL SRC DST COUNT
run_guest() {
    local img=$1 drive=$2 accel=$3 src=$4 dst=$5 count=$6 rc=0
    python3 "$BOOT" boot.bin --src "$src" --dst "$dst" --count "$count"
    # boot sector at LBA 0, random data at SRC, zeros at DST
    dd if=boot.bin of="$img" bs=512 conv=notrunc status=none || fail "writing the boot sector into $img failed"
    write_random "$img" $((src * 512)) $((count * 512))
    dd if=/dev/zero of="$img" bs=512 seek="$dst" count="$count" conv=notrunc status=none
    : > serial.log
    timeout 60 qemu-system-x86_64 -accel "$accel" -machine pc -m 64 -nodefaults -display none \
        -serial file:serial.log -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -drive "file=$img,format=raw,$drive" 2> qemu.err || rc=$?
    case "$rc" in
        33) ;;
        3) fail "guest ($drive, $accel) reported a disk error or a read-back mismatch (serial: $(cat serial.log))" ;;
        124) fail "guest ($drive, $accel) did not finish within 60 s (serial: $(cat serial.log); $(cat qemu.err))" ;;
        *) fail "qemu ($drive, $accel) exited $rc: $(cat qemu.err)" ;;
    esac
    assert_eq "$(cat serial.log)" OK "guest serial output ($drive)"
    python3 "$BOOT" expect "$img" --src "$src" --dst "$dst" --count "$count" >/dev/null ||
        fail "host does not see the guest's write ($drive, $accel)"
}

truncate -s 64M "$MNT/g.img"
chmod 0600 "$MNT/g.img"
info "virtio, cache=none, aio=native (TCG)"
run_guest "$MNT/g.img" "if=virtio,cache=none,aio=native" tcg 2049 6136 16
info "virtio, cache=none, aio=io_uring (TCG)"
run_guest "$MNT/g.img" "if=virtio,cache=none,aio=io_uring" tcg 10240 20472 32     # 5 MiB -> 10 MiB - 4 KiB
info "ide, cache=none, aio=native (TCG)"
run_guest "$MNT/g.img" "if=ide,cache=none,aio=native" tcg 30000 40000 32
info "virtio, cache=writeback, aio=threads (TCG)"
run_guest "$MNT/g.img" "if=virtio,cache=writeback,aio=threads" tcg 50000 60000 8
# KVM only when it works here with a local image (so an unusable /dev/kvm is not blamed on Tessera)
kvm_ok=0
if [ -w /dev/kvm ]; then
    python3 "$BOOT" kvmprobe.bin --src 1 --dst 2 --count 1
    truncate -s 1M kvmprobe.img && dd if=kvmprobe.bin of=kvmprobe.img conv=notrunc status=none
    write_random kvmprobe.img 512 512
    rc=0; timeout 30 qemu-system-x86_64 -accel kvm -machine pc -m 64 -nodefaults -display none \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -drive file=kvmprobe.img,format=raw,if=virtio 2>/dev/null || rc=$?
    [ "$rc" = 33 ] && kvm_ok=1
fi
if [ "$kvm_ok" = 1 ]; then
    info "virtio, cache=none, aio=native (KVM)"
    run_guest "$MNT/g.img" "if=virtio,cache=none,aio=native" kvm 70000 80000 32
else
    info "KVM not usable here; TCG only"
fi

info "the guest's last write survives unmount + remount"
sum=$(md5sum < "$MNT/g.img")
restart_tessera
assert_eq "$(md5sum < "$MNT/g.img")" "$sum" "g.img after remount"
python3 "$BOOT" expect "$MNT/g.img" --src 2049 --dst 6136 --count 16 >/dev/null || fail "first guest's write lost after remount"

# a raw image imported with cp boots too (qemu reads what cp wrote)
info "a boot image copied in with cp boots"
truncate -s 16M local.img
python3 "$BOOT" boot.bin --src 100 --dst 200 --count 4
dd if=boot.bin of=local.img conv=notrunc status=none
cp --sparse=always local.img "$MNT/imported.img"
run_guest "$MNT/imported.img" "if=virtio,cache=none,aio=native" tcg 100 200 4

stop_tessera
pass

#!/usr/bin/env bash
# libvirt: a `dir` storage pool over the mount (--allow-other), vol-create-as / vol-list / vol-info /
# vol-delete seen by both virsh and tessera; default_permissions keeps other users out of root's images;
# a transient VM (qemu as libvirt-qemu, cache='none' io='native') does disk I/O on a pool volume.
# Starts virtlogd/libvirtd when they are not running, and stops only what it started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need virsh libvirtd virtlogd qemu-system-x86_64 python3 setpriv

M=$((1024 * 1024))
POOL=tessera-it-$$
DOM=tessera-it-$$
vsh() { virsh -q -c qemu:///system "$@"; }

# --- libvirt daemons (no systemd here) ------------------------------------------------------------------
if ! id libvirt-qemu >/dev/null 2>&1; then
    # libvirt's qemu driver (Debian build) runs guests as libvirt-qemu and will not start without that
    # user; libvirt-daemon-system normally creates it.
    info "creating system user libvirt-qemu (normally made by libvirt-daemon-system)"
    useradd --system --user-group --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu ||
        fail "cannot create user libvirt-qemu"
fi
if [ -c /dev/kvm ] && ! setpriv --reuid=libvirt-qemu --regid=libvirt-qemu --init-groups test -w /dev/kvm 2>/dev/null; then
    # Debian's udev rule makes /dev/kvm 0660 root:kvm and libvirt-daemon-system puts libvirt-qemu in kvm.
    # Without that, libvirt 9.0 finds "KVM was enabled when probing, but it is not available now" and
    # re-probes qemu on every lookup: `virsh create` then takes ~45 s instead of <1 s.
    info "giving libvirt-qemu access to /dev/kvm (group kvm, mode 0660), as Debian's udev/libvirt packages do"
    getent group kvm >/dev/null || groupadd --system kvm
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    usermod -aG kvm libvirt-qemu
fi
mkdir -p /var/log/libvirt /run/libvirt /var/lib/libvirt
# live pids of a command (pgrep also lists zombies, e.g. daemons whose parent never reaped them)
live_pids() { ps -C "$1" -o pid=,stat= | awk '$2 !~ /^Z/ {print $1}'; }
if [ -z "$(live_pids virtlogd)" ]; then
    virtlogd -d || fail "cannot start virtlogd"
    sleep 0.5
    pid=$(live_pids virtlogd | tail -n 1)
    [ -n "$pid" ] || fail "virtlogd did not stay up"
    defer kill "$pid"
    info "started virtlogd (pid $pid)"
fi
if [ -z "$(live_pids libvirtd)" ]; then
    libvirtd -d || fail "cannot start libvirtd"
    sleep 0.5
    pid=$(live_pids libvirtd | tail -n 1)
    [ -n "$pid" ] || fail "libvirtd did not stay up (see /var/log/libvirt/libvirtd.log)"
    defer kill "$pid"
    info "started libvirtd (pid $pid)"
fi
for i in $(seq 1 50); do vsh version >/dev/null 2>&1 && break; sleep 0.2; done
vsh version >/dev/null || fail "libvirtd does not answer: $(tail -3 /var/log/libvirt/libvirtd.log 2>/dev/null)"

# --- mount + pool ---------------------------------------------------------------------------------------
# other users (libvirt-qemu, nobody) must be able to reach the mountpoint, and the test's CWD may be a
# private 0700 directory: mount under /tmp instead
MNT=$(mktemp -d /tmp/tessera-it-mnt.XXXXXX)
chmod 0755 "$MNT"
defer rmdir "$MNT"
start_tessera --allow-other
mi=$(awk -v mp="$(realpath "$MNT")" '$5 == mp' /proc/self/mountinfo)
[[ "$mi" == *allow_other* ]] || fail "--allow-other mount lacks allow_other: $mi"
[[ "$mi" == *default_permissions* ]] || fail "mount lacks default_permissions: $mi"

vsh pool-define-as "$POOL" dir --target "$MNT" >/dev/null || fail "virsh pool-define-as failed"
defer vsh pool-undefine "$POOL"
vsh pool-start "$POOL" >/dev/null || fail "virsh pool-start failed"
defer vsh pool-destroy "$POOL"
pinfo=$(vsh pool-info "$POOL") || fail "pool-info failed"
[[ "$pinfo" =~ State:\ +running ]] || fail "pool not running: $pinfo"
cap=$(vsh pool-info "$POOL" --bytes | awk '/^Capacity/ {print $2}')
[ "${cap:-0}" -gt 0 ] || fail "pool capacity is ${cap:-?} (statfs of the mount)"

info "vol-create-as (sparse and fully allocated)"
vsh vol-create-as "$POOL" v1.img 64M --format raw >/dev/null || fail "virsh vol-create-as v1.img 64M failed"
vsh vol-create-as "$POOL" v2.img 32M --format raw --allocation 0 >/dev/null || fail "virsh vol-create-as --allocation 0 failed"
vols=$(vsh vol-list "$POOL" | awk '{print $1}') || fail "virsh vol-list failed"
has_line "$vols" v1.img || fail "virsh vol-list does not show v1.img: $vols"
has_line "$vols" v2.img || fail "virsh vol-list does not show v2.img: $vols"
has_volume v1 || fail "tessera volume list does not show v1 after vol-create-as"
has_volume v2 || fail "tessera volume list does not show v2 after vol-create-as"
assert_eq "$(volume_field v1 size)" $((64 * M)) "v1 size"
assert_eq "$(volume_field v2 size)" $((32 * M)) "v2 size"
assert_eq "$(vsh vol-info --bytes --pool "$POOL" v1.img | awk '/^Capacity/ {print $2}')" $((64 * M)) "virsh vol-info capacity"
is_zero "$MNT/v1.img" 0 $((64 * M)) || fail "a fresh libvirt volume does not read zeros"

info "a volume made with tessera appears after pool-refresh"
must tcli volume create fromcli --size 16M
vsh pool-refresh "$POOL" >/dev/null || fail "pool-refresh failed"
vols=$(vsh vol-list "$POOL" | awk '{print $1}') || fail "virsh vol-list failed"
has_line "$vols" fromcli.img || fail "vol-list after pool-refresh lacks fromcli.img: $vols"

info "default_permissions: another user cannot read root's 0600 image"
assert_eq "$(file_mode "$MNT/v1.img")" 600 "mode of v1.img"
if setpriv --reuid=nobody --regid=nogroup --clear-groups cat "$MNT/v1.img" >/dev/null 2>&1; then
    fail "user nobody could read the 0600 root image v1.img"
fi
chmod 0644 "$MNT/fromcli.img"
setpriv --reuid=nobody --regid=nogroup --clear-groups head -c 4096 "$MNT/fromcli.img" >/dev/null 2>&1 ||
    fail "user nobody cannot read a 0644 image through an --allow-other mount"
if setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c ": >> '$MNT/fromcli.img'" 2>/dev/null; then
    fail "user nobody could open a 0644 root image for writing"
fi
if setpriv --reuid=nobody --regid=nogroup --clear-groups touch "$MNT/byother.img" 2>/dev/null; then
    fail "user nobody could create an image in the mount"
fi

info "a VM (qemu as libvirt-qemu, cache=none io=native) on a pool volume"
python3 "$T_DIR/bootsector.py" boot.bin --src 2049 --dst 6136 --count 16
dd if=boot.bin of="$MNT/v1.img" conv=notrunc status=none
write_random "$MNT/v1.img" $((2049 * 512)) $((16 * 512))
cat > dom.xml <<EOF
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>$DOM</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff><on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source pool='$POOL' volume='v1.img'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-device'/>
    <qemu:arg value='isa-debug-exit,iobase=0xf4,iosize=0x04'/>
  </qemu:commandline>
</domain>
EOF
defer vsh destroy "$DOM"
vsh create dom.xml >/dev/null || fail "virsh create failed: $(tail -5 "/var/log/libvirt/qemu/$DOM.log" 2>/dev/null)"
for i in $(seq 1 300); do
    vsh domstate "$DOM" >/dev/null 2>&1 || break    # transient domain gone: qemu exited
    sleep 0.2
done
vsh domstate "$DOM" >/dev/null 2>&1 && fail "the guest did not finish within 60 s"
python3 "$T_DIR/bootsector.py" expect "$MNT/v1.img" --src 2049 --dst 6136 --count 16 >/dev/null ||
    fail "the libvirt guest's write is not in the image (log: $(tail -5 "/var/log/libvirt/qemu/$DOM.log" 2>/dev/null))"
grep -q 'qemu-system' "/var/log/libvirt/qemu/$DOM.log" 2>/dev/null || warn "no qemu log for $DOM"
# libvirt restores the owner after the guest ends
assert_eq "$(file_owner "$MNT/v1.img")" "0:0" "v1.img owner after the guest (libvirt restores DAC labels)"

info "unmount while a libvirt guest runs (qemu holds the image from libvirt's mount namespace): refused"
vsh vol-create-as "$POOL" idle.img 16M --format raw >/dev/null || fail "virsh vol-create-as idle.img failed"
# no bootable disk: the guest sits in the firmware, qemu keeps the image open until destroyed
sed -e "s|<name>$DOM</name>|<name>$DOM-idle</name>|" -e "s|volume='v1.img'|volume='idle.img'|" dom.xml > idle.xml
defer vsh destroy "$DOM-idle"
vsh create idle.xml >/dev/null || fail "virsh create (idle guest) failed"
expect_fail --code 5 tcli unmount "$MNT"
grep -qF "idle.img (qemu-system-x86" <<<"$EF_ERR" || fail "the refusal does not name the image and qemu: $EF_ERR"
_t_is_mounted "$MNT" || fail "the mount was detached although unmount was refused"
[ "$(vsh domstate "$DOM-idle")" = running ] || fail "the guest is not running after the refused unmount"
tcli status | grep -qF "open: idle.img (qemu-system-x86" || fail "status does not show the guest's image: $(tcli status)"
vsh destroy "$DOM-idle" >/dev/null || fail "virsh destroy failed"

info "vol-delete"
vsh vol-delete --pool "$POOL" v2.img >/dev/null || fail "virsh vol-delete v2.img failed"
[ -e "$MNT/v2.img" ] && fail "v2.img still in the mount after vol-delete"
has_volume v2 && fail "tessera still lists v2 after vol-delete"
vols=$(vsh vol-list "$POOL" | awk '{print $1}') || fail "virsh vol-list failed"
has_line "$vols" v2.img && fail "vol-list still shows v2.img"

info "vol-resize"
vsh vol-resize --pool "$POOL" v1.img 128M >/dev/null || fail "virsh vol-resize failed"
assert_eq "$(volume_field v1 size)" $((128 * M)) "v1 size after vol-resize"

vsh pool-destroy "$POOL" >/dev/null || fail "pool-destroy failed"
vsh pool-undefine "$POOL" >/dev/null || fail "pool-undefine failed"
stop_tessera
pass

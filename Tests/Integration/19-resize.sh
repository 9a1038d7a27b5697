# 19-resize: shrinking is deliberate.
#   Mounted (control socket): `volume resize` to a smaller size without --shrink is refused (exit 2,
#   one line, size and data unchanged); with --shrink while a process holds the image open (a `sleep`
#   with an fd on it) refused (exit 5, names --force); with --shrink --force it shrinks; with --shrink
#   once closed it shrinks; growing needs no flag; --force without --shrink is bad input.
#   Unmounted (in-process): the same refusal without --shrink, and the shrink with it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need python3 dd md5sum sleep

M=$((1024 * 1024))
size_of() { volume_field "$1" size; }
md5_range() { dd if="$1" bs=64K skip=$(($2 / 65536)) count=$(($3 / 65536)) iflag=direct status=none | md5sum | cut -d' ' -f1; }
# wait_closed NAME: the mount has seen the last close of NAME's image (release is asynchronous)
wait_closed() {
    local i
    for (( i=0; i<100; i++ )); do
        [ "$(volume_field "$1" open)" = false ] && return 0
        sleep 0.1
    done
    fail "volume $1 still open 10 s after its last holder exited"
}

new_data_dir
must tcli volume create r --size 8M
start_tessera --no-init
py 'import random, sys; open("data.bin", "wb").write(random.Random(19).randbytes(2 << 20))'
must dd if=data.bin of="$MNT/r.img" bs=64K conv=notrunc,fsync oflag=direct status=none
want=$(md5sum < data.bin | cut -d' ' -f1)

info "a smaller size without --shrink is refused"
expect_fail --code 2 tcli volume resize r --size 4M
grep -q -- "--shrink" <<<"$EF_ERR" || fail "the refusal does not name --shrink: $EF_ERR"
assert_eq "$(size_of r)" $((8 * M)) "size after a refused shrink"
assert_eq "$(file_size "$MNT/r.img")" $((8 * M)) "image size after a refused shrink"
assert_eq "$(md5_range "$MNT/r.img" 0 $((2 * M)))" "$want" "data after a refused shrink"
expect_fail --code 2 tcli volume resize r --size 4M --force

info "--shrink while the image is held open is refused"
sleep 600 3<>"$MNT/r.img" &
HOLDER=$!
defer kill "$HOLDER" 2>/dev/null
for (( i=0; i<50; i++ )); do [ "$(volume_field r open)" = true ] && break; sleep 0.1; done
assert_eq "$(volume_field r open)" true "r is open while the sleep holds it"
expect_fail --code 5 tcli volume resize r --size 4M --shrink
{ grep -q "open" <<<"$EF_ERR" && grep -q -- "--force" <<<"$EF_ERR"; } || fail "the refusal does not say open / --force: $EF_ERR"
assert_eq "$(size_of r)" $((8 * M)) "size after a shrink refused for an open image"
assert_eq "$(md5_range "$MNT/r.img" 0 $((2 * M)))" "$want" "data after a shrink refused for an open image"

info "--shrink --force shrinks an open image"
must tcli volume resize r --size 4M --shrink --force
assert_eq "$(size_of r)" $((4 * M)) "size after --shrink --force"
assert_eq "$(file_size "$MNT/r.img")" $((4 * M)) "image size after --shrink --force"
assert_eq "$(md5_range "$MNT/r.img" 0 $((2 * M)))" "$want" "data before the new end after --shrink --force"
kill "$HOLDER"
wait "$HOLDER" 2>/dev/null || true
wait_closed r

info "--shrink of a closed image; growing needs no flag"
must tcli volume resize r --size 1M --shrink
assert_eq "$(size_of r)" $M "size after --shrink"
must tcli volume resize r --size 16M
assert_eq "$(size_of r)" $((16 * M)) "size after growing"
assert_eq "$(md5_range "$MNT/r.img" 0 $M)" "$(head -c $M data.bin | md5sum | cut -d' ' -f1)" "data kept below the shrunk end"
assert_eq "$(md5_range "$MNT/r.img" $M $M)" "$(head -c $M /dev/zero | md5sum | cut -d' ' -f1)" "zeros past the old end after growing"
stop_tessera

info "unmounted: the same rules"
expect_fail --code 2 tcli volume resize r --size 8M
assert_eq "$(size_of r)" $((16 * M)) "size after a refused shrink (unmounted)"
must tcli volume resize r --size 8M --shrink
assert_eq "$(size_of r)" $((8 * M)) "size after --shrink (unmounted)"
out=$(tcli volume resize --help) || fail "volume resize --help failed"
{ grep -q -- "--shrink" <<<"$out" && grep -q -- "--force" <<<"$out"; } || fail "volume resize --help does not explain --shrink/--force: $out"
pass

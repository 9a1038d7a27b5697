# shellcheck shell=bash
# Helpers shared by Scripts/run, Scripts/test and Scripts/bench. Source it:
#
#   source "$(dirname "$0")/lib.sh"
#
# tessera_install_deps [PKG...] install the system packages Tessera and its tests need, or just PKG... (only missing ones)
# tessera_ensure_fuse           load the fuse module if /dev/fuse is missing
# tessera_build [debug|release] build the tessera binary; prints its absolute path on stdout
# wait_for_mount MP [TIMEOUT]   wait until MP is a Tessera FUSE mount (default 30 s)
# unmount_retry MP [DATA]       unmount MP, retrying; reports processes holding it if it stays busy
# is_mounted MP / is_tessera_mount MP   true if anything / a Tessera FUSE mount is mounted at MP
# is_live_tessera_mount MP      a Tessera mount whose daemon still answers
#
# Build output and progress messages go to stderr, so `bin=$(tessera_build debug)` works.

set -euo pipefail

TESSERA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESSERA_SWIFT_DIR="${TESSERA_SWIFT_DIR:-/opt/swift/usr/bin}"

TESSERA_PACKAGES=(
    fuse3 libfuse3-dev libzstd-dev libsqlite3-dev
    qemu-utils qemu-system-x86 qemu-system-common
    fio e2fsprogs xfsprogs strace psmisc attr python3 python3-boto3 curl
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
    s3backer shellcheck
)

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- system packages -------------------------------------------------------

package_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

missing_packages() {
    local pkg
    for pkg in "$@"; do
        package_installed "$pkg" || printf '%s\n' "$pkg"
    done
}

tessera_install_deps() {
    local missing
    (($#)) || set -- "${TESSERA_PACKAGES[@]}"
    mapfile -t missing < <(missing_packages "$@")
    if ((${#missing[@]} == 0)); then
        say "system packages: all present"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}); run as root to install them"
    say "system packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

tessera_ensure_fuse() {
    [[ -e /dev/fuse ]] && return 0
    say "/dev/fuse is missing: loading the fuse module"
    modprobe fuse || die "cannot load the fuse kernel module"
    [[ -e /dev/fuse ]] || die "/dev/fuse still missing after modprobe fuse"
}

# --- build -----------------------------------------------------------------

tessera_use_swift() {
    command -v swift >/dev/null && return 0
    [[ -x $TESSERA_SWIFT_DIR/swift ]] || die "swift not found on PATH nor in $TESSERA_SWIFT_DIR"
    export PATH="$TESSERA_SWIFT_DIR:$PATH"
}

tessera_build() {
    local config="${1:-debug}" bin_dir
    [[ $config == debug || $config == release ]] || die "tessera_build: expected debug or release, got '$config'"
    tessera_use_swift
    say "building tessera ($config)"
    (cd "$TESSERA_ROOT" && swift build -c "$config" --product tessera) >&2
    bin_dir="$(cd "$TESSERA_ROOT" && swift build -c "$config" --show-bin-path)"
    [[ -x $bin_dir/tessera ]] || die "build finished but $bin_dir/tessera is missing"
    printf '%s\n' "$bin_dir/tessera"
}

# --- mounts ----------------------------------------------------------------

# Prints the filesystem type mounted at MP (the last entry wins), or nothing.
# /proc/mounts escapes spaces in paths as \040. realpath may fail on a mount
# whose daemon died (ENOTCONN); then take the path without resolving symlinks.
mount_fstype() {
    local mp
    mp="$(realpath -m "$1" 2>/dev/null || realpath -ms "$1")"
    mp="${mp// /\\040}"
    MP="$mp" awk '$2 == ENVIRON["MP"] { type = $3 } END { if (type) print type }' /proc/mounts
}

is_mounted() {
    [[ -n $(mount_fstype "$1") ]]
}

# True if MP is a Tessera mount, alive or not (the daemon mounts with
# subtype=tessera, so the type reads fuse.tessera).
is_tessera_mount() {
    [[ $(mount_fstype "$1") == fuse.tessera ]]
}

# Listed as ours and answering: a mount whose daemon died stays listed, and
# statfs on it fails with ENOTCONN (mountpoint -q only reads the mount table;
# plain stat may be answered from the attribute cache).
is_live_tessera_mount() {
    is_tessera_mount "$1" && stat -f -- "$1" >/dev/null 2>&1
}

wait_for_mount() {
    local mp="$1" timeout="${2:-30}" tenths=0
    until is_live_tessera_mount "$mp"; do
        if ((tenths >= timeout * 10)); then
            say "timed out after ${timeout}s waiting for a Tessera mount at $mp"
            return 1
        fi
        sleep 0.1
        tenths=$((tenths + 1))
    done
}

tessera_cli() {
    local bin="${TESSERA_BIN:-}"
    [[ -n $bin ]] || bin="$(command -v tessera || true)"
    [[ -n $bin && -x $bin ]] || return 1
    "$bin" "$@"
}

# One round of polite unmounts: the daemon first (it flushes), then the kernel
# (the daemon flushes then too, as its FUSE loop ends). `tessera unmount` finds
# the daemon through the data directory: DATA if given, else $TESSERA_DATA.
try_unmount() {
    local mp="$1" data="${2:-}"
    if [[ -n $data ]]; then
        tessera_cli unmount --data "$data" "$mp" >/dev/null 2>&1 || true
    else
        tessera_cli unmount "$mp" >/dev/null 2>&1 || true
    fi
    is_mounted "$mp" || return 0
    fusermount3 -u "$mp" >/dev/null 2>&1 || true
    ! is_mounted "$mp"
}

report_holders() {
    say "$1 is busy; processes holding it:"
    # fuser also complains about every process it may not inspect; keep the table.
    fuser -vm "$1" 2>&1 | grep -v '^Cannot stat' >&2 || true
}

# Returns 0 after a clean unmount (or if nothing was mounted), 1 if only a
# lazy unmount got rid of it: something still held it, a leak the caller
# should treat as a failure.
unmount_retry() {
    local mp="$1" data="${2:-}" attempt
    for attempt in 1 2 3 4 5; do
        is_mounted "$mp" || return 0
        try_unmount "$mp" "$data" && return 0
        sleep "$attempt"
    done
    report_holders "$mp"
    say "lazy-unmounting $mp"
    umount -l "$mp" || fusermount3 -uz "$mp" || true
    return 1
}

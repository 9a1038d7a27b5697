# shellcheck shell=bash
# Helpers for the snapshot scripts (90-96). Sourced after lib.sh, never executed (Scripts/test skips _*.sh).
#
#   snap_init CHECK      name of the check reported to $RELIABILITY_OUT; defers the JSON line
#   case_begin NAME      start a numbered case (counted in the summary)
#   bad MSG              a failed assertion: recorded, printed, the script goes on; `finish` fails the
#                        test if any were recorded (use `fail` where going on makes no sense)
#   finish               print the summary line; fail when `bad` was called, else pass
#   chunk_files          number of chunk files in the default store (space truth: 1 file = 1 chunk)
#   snap_json            `snapshot list --json`
#   snap_field SNAP KEY  a field of one snapshot from `snapshot list --json` (fails if not listed)
#   has_snapshot SNAP    status 0 if listed
#   snap_ms OUTPUT       the milliseconds in "snapshot NAME of ... (X ms)"
#   fsck_clean WHAT      `tessera fsck` (no mount running) must exit 0 and say "clean"
#   chunks_of_volumes    sum of allocated chunks over `volume list --json` (live volumes only)

SNAP_CHECK=""
SNAP_CASES=0
SNAP_CASE=""
SNAP_BAD=()

snap_init() {
    SNAP_CHECK=$1
    defer _snap_flush
}

case_begin() {
    SNAP_CASES=$((SNAP_CASES + 1))
    SNAP_CASE=$1
    info "case $SNAP_CASES: $1"
}

bad() {
    SNAP_BAD+=("[$SNAP_CASE] $*")
    echo "BAD [$T_NAME] [$SNAP_CASE]: $*" >&2
}

_snap_flush() {
    [ -n "${RELIABILITY_OUT:-}" ] && [ -n "$SNAP_CHECK" ] || return 0
    local nf=${#SNAP_BAD[@]}
    [ "${T_FAILED:-0}" -ne 0 ] && [ "$nf" -eq 0 ] && nf=1
    printf '{"check":"%s","cases":%d,"failures":%d,"seconds":%d%s}\n' "$SNAP_CHECK" "$SNAP_CASES" "$nf" \
        $(( $(date +%s) - T_START )) "${SNAP_EXTRA:-}" >> "$RELIABILITY_OUT"
}

finish() {
    local n=${#SNAP_BAD[@]}
    echo "SUMMARY [$T_NAME]: $SNAP_CASES cases, $n failed assertions${SNAP_SUMMARY:+; $SNAP_SUMMARY}"
    if [ "$n" -gt 0 ]; then
        local m
        m=$(printf '  %s\n' "${SNAP_BAD[@]}")
        fail "$n failed assertions:"$'\n'"$m"
    fi
    pass
}

chunk_files() { find "$DATA/stores/default/chunks" -type f | wc -l; }

snap_json() { tcli snapshot list --json || fail "tessera snapshot list --json failed"; }

snap_field() {
    local j
    j=$(snap_json) || fail "snapshot list failed"
    json "[s for s in d if s['name'] == '$1'][0]['$2']" <<<"$j" || fail "snapshot $1 not listed (or no field $2): $j"
}

has_snapshot() {
    local j
    j=$(snap_json) || fail "snapshot list failed"
    [ "$(json "'$1' in [s['name'] for s in d]" <<<"$j")" = true ]
}

snap_ms() { sed -nE 's/.*\(([0-9.]+) ms\).*/\1/p' <<<"$1" | head -n 1; }

fsck_clean() {
    local out rc=0
    out=$(timeout 300 env TESSERA_DATA="$DATA" "$TESSERA_BIN" fsck 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || ! grep -qx clean <<<"$out"; then
        bad "fsck ($1) exit $rc, not clean:"$'\n'"$out"
        return 1
    fi
    return 0
}

chunks_of_volumes() {
    local j
    j=$(tcli volume list --json) || fail "volume list --json failed"
    json "sum(v['allocated'] // v['chunkSize'] for v in d)" <<<"$j"
}

# check_eq ACTUAL EXPECTED WHAT: like assert_eq, but records the failure (bad) and goes on
check_eq() { [ "$1" == "$2" ] || bad "$3: expected '$2', got '$1'"; }

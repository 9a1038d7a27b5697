#!/usr/bin/env bash
# The HTTP API for real: `tessera mount --api 127.0.0.1:PORT`, users and tokens from `tessera user`
# (offline and through the mount), and with curl: /v1/openapi.json lists every route used here; 401
# without or with a bad, rotated or removed token; 403 for a role that may not (auditor writes, operator
# deletes, non-admins on users); 404 for another domain's volume; 201/200/204 for what is allowed; JSON
# errors of one shape; malformed and oversized bodies refused, and a bounded fuzz of them changes nothing. A volume created over the API is
# MOUNT/VOL.img or MOUNT/D/VOL.img and takes writes; deleting it over the API removes the file.
set -euo pipefail
T_TIMEOUT=${T_TIMEOUT:-120}
source "$(dirname "$0")/lib.sh"
need python3 curl cmp
M=$((1024 * 1024))

PORT=$(py 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT/v1"

# api TOKEN METHOD PATH [JSON]: prints "STATUS BODY" (TOKEN "-" sends no Authorization header).
api() {
    local token=$1 method=$2 path=$3 body=${4:-} args=(-s -S -o "$T_WORK/.api.body" -w '%{http_code}' -X "$2")
    [ "$token" = - ] || args+=(-H "Authorization: Bearer $token")
    [ -z "$body" ] || args+=(-H 'Content-Type: application/json' --data-binary "$body")
    local code
    code=$(curl "${args[@]}" "$URL$path") || fail "curl $method $path failed"
    echo "$code $(cat "$T_WORK/.api.body")"
}

# expect_api STATUS [ERROR-CODE] TOKEN METHOD PATH [JSON]: the call answers STATUS (and, for an error,
# the JSON error shape with ERROR-CODE); sets API_BODY.
expect_api() {
    local want=$1 code=""
    shift
    case "$1" in not_found | too_large | invalid | forbidden | unauthorized | exists | busy) code=$1; shift ;; esac
    local out
    out=$(api "$@")
    API_BODY=${out#* }
    [ "${out%% *}" = "$want" ] || fail "$2 $3: expected HTTP $want, got ${out%% *}: $API_BODY"
    # The shape, read without a python per call (the server writes compact JSON with sorted keys).
    if [ -n "$code" ]; then
        [[ $API_BODY =~ ^\{\"error\":\{\"code\":\"([a-z_]+)\",\"message\":\".+\"\}\}$ ]] ||
            fail "$2 $3: not a JSON error: $API_BODY"
        assert_eq "${BASH_REMATCH[1]}" "$code" "$2 $3: the error code"
    fi
}

# token_of OUTPUT: the token line of `user add` / `user token --rotate`.
token_of() { tail -n 1 <<<"$1"; }

info "users offline, bad input changes nothing"
new_data_dir
must tcli domain create red
must tcli domain create blue
ADMIN=$(token_of "$(tcli user add root --role admin)")
AUDITOR=$(token_of "$(tcli user add watcher --role auditor)")
expect_fail --code 2 tcli user add x --role wizard
expect_fail --code 2 tcli user add x --role domain-admin
expect_fail --code 2 tcli user add x --role operator
expect_fail --code 2 tcli user add x --role admin --domain red
expect_fail --code 3 tcli user add x --role operator --domain nowhere
expect_fail --code 4 tcli user add root --role auditor
expect_fail --code 3 tcli user remove nobody
expect_fail --code 3 tcli user token nobody --rotate
expect_fail --code 2 tcli user token root
assert_eq "$(tcli user list --json | json '" ".join(u["name"] + ":" + u["role"] for u in d)')" \
    "root:admin watcher:auditor" "user list after refusals"

info "mount with --api 127.0.0.1:$PORT; users through the mount"
start_tessera --no-init --api "127.0.0.1:$PORT"
REDADMIN=$(token_of "$(tcli user add redadmin --role domain-admin --domain red)")
OPS=$(token_of "$(tcli user add ops --role operator --domain red)")
expect_fail --code 4 tcli user add ops --role auditor
assert_eq "$(tcli user list | awk 'NR > 1 { print $1 ":" $3 }' | tr '\n' ' ')" \
    "ops:red redadmin:red root:(all) watcher:(all) " "user list through the mount"

info "openapi.json and authentication"
expect_api 200 - GET /openapi.json
py 'import json, sys
doc = json.loads(sys.argv[1])
used = ["/v1/status", "/v1/volumes", "/v1/volumes/{name}", "/v1/volumes/{name}/resize", "/v1/snapshots",
        "/v1/snapshots/{name}", "/v1/domains", "/v1/domains/{name}", "/v1/users", "/v1/users/{name}"]
missing = [p for p in used if p not in doc["paths"]]
if missing: sys.exit("openapi.json lacks " + ", ".join(missing))' "$API_BODY" || fail "openapi.json: see above"
if [ -n "$T_PYTHON_SITE" ] && "$T_PYTHON_SITE" -c 'import openapi_spec_validator' 2>/dev/null; then
    "$T_PYTHON_SITE" -c 'import json, sys
from openapi_spec_validator import validate
validate(json.loads(sys.argv[1]))' "$API_BODY" || fail "openapi.json is not a valid OpenAPI document (see above)"
    info "openapi.json validated by openapi-spec-validator"
else
    info "openapi-spec-validator (PyPI) is not installed: openapi.json checked for its paths only"
fi

expect_api 401 unauthorized - GET /volumes
expect_api 401 unauthorized "tsr_$(head -c 32 /dev/zero | base64 | tr -d '=' | tr '+/' '-_')" GET /volumes
expect_api 401 unauthorized "not a token" GET /status
expect_api 200 "$ADMIN" GET /status
assert_eq "$(json 'd["mountpoint"] + " " + d["api"]' <<<"$API_BODY")" "$(realpath "$MNT") 127.0.0.1:$PORT" \
    "status over the API"
tcli status | grep -qxF "HTTP API:       http://127.0.0.1:$PORT/v1" || fail "status does not name the API: $(tcli status)"

info "an admin creates in the default domain, an operator in its own"
expect_api 201 "$ADMIN" POST /volumes '{"name": "web", "size": "8M"}'
assert_eq "$(json 'd["name"] + " " + d["domain"] + " " + str(d["size"])' <<<"$API_BODY")" "web default $((8 * M))" \
    "the created volume"
[ "$(file_size "$MNT/web.img")" = $((8 * M)) ] || fail "MOUNT/web.img is missing or of the wrong size"
write_random "$T_WORK/a.bin" 0 $M
dd if="$T_WORK/a.bin" of="$MNT/web.img" bs=1M seek=2 conv=notrunc,fsync status=none || fail "writing web.img"
cmp -n $M --ignore-initial=0:$((2 * M)) "$T_WORK/a.bin" "$MNT/web.img" || fail "web.img reads back different"
expect_api 201 "$OPS" POST /volumes '{"name": "db", "size": 4194304}'
[ "$(file_size "$MNT/red/db.img")" = $((4 * M)) ] || fail "MOUNT/red/db.img is missing or of the wrong size"
dd if="$T_WORK/a.bin" of="$MNT/red/db.img" conv=notrunc,fsync status=none || fail "writing red/db.img"
cmp -n $M "$T_WORK/a.bin" "$MNT/red/db.img" || fail "red/db.img reads back different"
expect_api 200 "$OPS" GET /volumes
assert_eq "$(json '" ".join(v["name"] for v in d["volumes"])' <<<"$API_BODY")" db "the operator's volume list"
expect_api 200 "$OPS" POST /volumes/db/resize '{"size": "6M"}'
assert_eq "$(file_size "$MNT/red/db.img")" $((6 * M)) "red/db.img after a resize over the API"
expect_api 201 "$OPS" POST /snapshots '{"name": "s1", "volumes": ["db"]}'
cmp -n $M "$T_WORK/a.bin" "$MNT/red/.snapshots/s1/db.img" || fail "the snapshot taken over the API"

info "403 for roles that may not, 404 for another domain"
expect_api 403 forbidden "$OPS" DELETE /volumes/db
expect_api 403 forbidden "$OPS" DELETE /snapshots/s1
expect_api 403 forbidden "$OPS" POST /volumes/db/resize '{"size": "1M", "shrink": true}'
expect_api 403 forbidden "$AUDITOR" POST /volumes '{"name": "x", "size": "1M"}'
expect_api 403 forbidden "$AUDITOR" GET /users
expect_api 403 forbidden "$REDADMIN" GET /users
expect_api 403 forbidden "$REDADMIN" GET /status
expect_api 404 not_found "$OPS" GET "/volumes/web?domain=default"
expect_api 404 not_found "$REDADMIN" DELETE "/volumes/web?domain=default"
expect_api 404 not_found "$REDADMIN" POST /volumes '{"name": "x", "size": "1M", "domain": "blue"}'
expect_api 404 not_found "$OPS" GET /domains/blue
expect_api 200 "$OPS" GET /domains
assert_eq "$(json '" ".join(x["name"] for x in d["domains"])' <<<"$API_BODY")" red "the operator's domain list"
expect_api 200 "$AUDITOR" GET "/volumes?domain=red"
expect_api 404 not_found "$ADMIN" GET /volumes/nothere
if [ -e "$MNT/blue/x.img" ] || [ -e "$MNT/x.img" ]; then fail "a refused create made a volume"; fi

info "bad bodies: one JSON error each, nothing changed"
expect_api 400 invalid "$ADMIN" POST /volumes '{"name": '
expect_api 400 invalid "$ADMIN" POST /volumes '{"name": "x"}'
expect_api 400 invalid "$ADMIN" POST /volumes '{"name": "x", "size": "12Q"}'
expect_api 400 invalid "$ADMIN" POST /volumes '{"name": "a/b", "size": "1M"}'
expect_api 409 exists "$ADMIN" POST /volumes '{"name": "web", "size": "1M"}'
expect_api 413 too_large "$ADMIN" POST /volumes "{\"name\": \"$(head -c 70000 /dev/zero | tr '\0' a)\"}"
expect_api 404 not_found "$ADMIN" GET /nothing
expect_api 400 invalid "$ADMIN" POST /users '{"name": "x", "role": "wizard"}'
expect_api 400 invalid "$ADMIN" POST /users '{"name": "x", "role": "operator"}'
info "a bounded fuzz of malformed requests (loopback): JSON errors only, the mount keeps serving"
py '
import http.client, json, random, sys
port, token = int(sys.argv[1]), sys.argv[2]
r = random.Random(15)
routes = [("POST", "/v1/volumes"), ("POST", "/v1/volumes/web/resize"), ("POST", "/v1/snapshots"), ("POST", "/v1/users"),
          ("GET", "/v1/volumes/%00"), ("DELETE", "/v1/snapshots/.."), ("GET", "/v1/volumes?domain=%ff"),
          ("PUT", "/v1/volumes"), ("POST", "/v1/status")]
bodies = [b"", b"{", b"[]", b"null", b"\xff\xfe", b"{\"name\": 1, \"size\": -1}", b"[" * 5000 + b"]" * 5000,
          b"{\"name\": \"v\", \"size\": 1e400}", b"{\"name\": \"v\", \"size\": \"99999999T\"}",
          b"{\"name\": \"\\u0000\", \"size\": 512}", b"{\"name\": \"x\", \"role\": [\"admin\"]}"]
for i in range(150):
    method, path = r.choice(routes)
    body = r.choice(bodies) if r.random() < 0.8 else bytes(r.randrange(256) for _ in range(r.randrange(64)))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers={"Authorization": "Bearer " + token})
    resp = c.getresponse()
    data = resp.read()
    if resp.status not in (400, 403, 404, 405, 409, 413):
        sys.exit("%s %s %r: HTTP %d %r" % (method, path, body[:60], resp.status, data[:200]))
    if resp.status != 405 and not json.loads(data)["error"]["message"]:
        sys.exit("%s %s: no error message: %r" % (method, path, data[:200]))
    c.close()
' "$PORT" "$ADMIN" || fail "the fuzz got an unexpected answer"
expect_api 200 "$ADMIN" GET /status
assert_eq "$(tcli volume list --all-domains --json | json '" ".join(v["domain"] + "/" + v["name"] for v in d)')" \
    "default/web red/db" "volumes after the refusals and the fuzz"

info "a domain-admin deletes in its domain; users over the API; rotation and removal"
expect_api 204 "$REDADMIN" DELETE /snapshots/s1
expect_api 204 "$REDADMIN" DELETE /volumes/db
[ ! -e "$MNT/red/db.img" ] || fail "MOUNT/red/db.img is still there after DELETE"
expect_api 201 "$ADMIN" POST /users '{"name": "ci", "role": "operator", "domain": "blue"}'
CI=$(json 'd["token"]' <<<"$API_BODY")
expect_api 201 "$CI" POST /volumes '{"name": "job", "size": "1M"}'
[ -e "$MNT/blue/job.img" ] || fail "MOUNT/blue/job.img is missing"
expect_api 200 "$ADMIN" GET /users
assert_eq "$(json '" ".join(u["name"] for u in d["users"])' <<<"$API_BODY")" "ci ops redadmin root watcher" \
    "users over the API"
NEW=$(token_of "$(tcli user token ops --rotate)")
expect_api 401 unauthorized "$OPS" GET /volumes
expect_api 200 "$NEW" GET /volumes
expect_api 204 "$ADMIN" DELETE /users/ci
expect_api 401 unauthorized "$CI" GET /volumes
expect_api 404 not_found "$ADMIN" DELETE /users/ci
expect_api 204 "$ADMIN" DELETE /volumes/web
[ ! -e "$MNT/web.img" ] || fail "MOUNT/web.img is still there after DELETE"

info "a port in use fails the mount and leaves nothing mounted"
stop_tessera
MNT2=$(mktemp -d "$T_WORK/mnt2.XXXXXX")
py 'import socket, subprocess, sys
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
sys.exit(subprocess.call(sys.argv[2:]))' "$PORT" bash -c \
    "TESSERA_DATA=$DATA $TESSERA_BIN mount $MNT2 --background --api 127.0.0.1:$PORT 2>$T_WORK/.busy.err" &&
    fail "mount succeeded on a port in use"
grep -q "cannot serve the API on 127.0.0.1:$PORT" "$T_WORK/.busy.err" || fail "port in use: $(cat "$T_WORK/.busy.err")"
_t_is_mounted "$MNT2" && fail "$MNT2 is mounted although its API could not start"
expect_fail --code 2 tcli mount "$MNT2" --api nowhere
pass

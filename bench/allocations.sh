#!/usr/bin/env bash
# Heap allocations per cached pull: the release data plane under valgrind's dhat, one worker,
# bearer manifest GETs by tag (ab, keep-alive). Two runs per cache mode, 200 and 2,200
# requests; the difference over 2,000 requests is what one request allocates, whatever
# start-up and setup cost. Needs the release binary (`./scripts/dev.sh bench-pull` builds it),
# valgrind, skopeo, ab and Postgres at AERUGO_PG_ADMIN_URL (default the machine's).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${AERUGO_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/aerugo/target}/release/aerugo-dataplane}
PG=${AERUGO_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
W=$(mktemp -d /var/tmp/aerugo-alloc.XXXXXX)
trap 'rm -rf "$W"' EXIT
psql -q "$PG" -c "DROP DATABASE IF EXISTS aerugo_alloc" -c "CREATE DATABASE aerugo_alloc" >/dev/null
export AERUGO_DATABASE_URL=${PG%/*}/aerugo_alloc AERUGO_LOG=warn AERUGO_CLIENT_RATE_LIMIT=0 AERUGO_TOKEN_RATE_LIMIT=0
"$BIN" migrate >/dev/null 2>&1
echo alloc-admin-password >"$W/pw"
"$BIN" bootstrap --admin-password-file "$W/pw" --org bench >/dev/null 2>&1
"$BIN" keygen --out "$W/key"
export AERUGO_TOKEN_KEY_FILE=$W/key
python3 "$ROOT/e2e/fixtures/make_oci_layout.py" "$W/image" --layer-bytes 20000 >/dev/null
blocks_bytes() { # mode requests -> "blocks bytes"
  valgrind --tool=dhat --dhat-out-file="$W/dhat.$1.$2" "$BIN" serve --listen 127.0.0.1:5400 --admin-listen 127.0.0.1:5401 \
    --storage file --storage-path "$W/blobs" --redirect proxy --workers 1 --cache "$1" >"$W/log.$1.$2" 2>&1 &
  local pid=$!
  for _ in $(seq 1 300); do curl -sf -o /dev/null http://127.0.0.1:5400/healthz && break; sleep 0.2; done
  skopeo copy -q --dest-tls-verify=false --dest-creds admin:alloc-admin-password "oci:$W/image:latest" \
    docker://127.0.0.1:5400/bench/app:v1 >/dev/null
  local token
  token=$(curl -sf -u admin:alloc-admin-password "http://127.0.0.1:5400/v2/token?service=aerugo&scope=repository:bench/app:pull" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
  local out
  out=$(ab -q -k -c 2 -n "$2" -H "Authorization: Bearer $token" -H "Accept: application/vnd.oci.image.manifest.v1+json" \
    http://127.0.0.1:5400/v2/bench/app/manifests/v1)
  grep -q "Failed requests:        0" <<<"$out" && ! grep -q "Non-2xx" <<<"$out" || { echo "requests failed: $out" >&2; exit 1; }
  kill -INT "$pid"; wait "$pid" || true
  awk '/Total:/ {gsub(",", ""); print $6, $3; exit}' "$W/log.$1.$2"
}
for mode in local off; do
  read -r b1 y1 < <(blocks_bytes "$mode" 200)
  read -r b2 y2 < <(blocks_bytes "$mode" 2200)
  awk -v m="$mode" -v b1="$b1" -v b2="$b2" -v y1="$y1" -v y2="$y2" \
    'BEGIN {printf "cache %-5s %5.1f heap blocks and %6.0f bytes per request\n", m, (b2-b1)/2000, (y2-y1)/2000}'
done

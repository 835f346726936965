#!/usr/bin/env bash
# The collector on S3 (issue 16): N unreferenced blobs (default 100,000) in Garage, collected
# with batched DeleteObjects while wrk pulls from a data plane on the same database and bucket.
# Prints objects deleted per second and pull req/s before and during the collection (their
# ratio: the machine is shared, absolute numbers drift). Invoked by `./scripts/dev.sh bench-gc`,
# which installs the tools, starts Postgres and builds the release binaries, with
# AERUGO_PG_ADMIN_URL, AERUGO_BIN and AERUGO_BENCH_GC set.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-100000}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
ADDR=127.0.0.1:5300
WORK=$(mktemp -d /var/tmp/aerugo-gc.XXXXXX)
PIDS=()
cleanup() {
  local status=$?
  [ "$status" = 0 ] || tail -n 20 "$WORK"/*.log >&2 || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/garage.sh" stop "$WORK/garage"
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

mkdir -p "$WORK/garage"
export $("$ROOT/scripts/garage.sh" start "$WORK/garage" 3920 | xargs)
aerugo_database aerugo_bench_gc
export AERUGO_LOG=warn AERUGO_CLIENT_RATE_LIMIT=0 AERUGO_TOKEN_RATE_LIMIT=0
export AERUGO_STORAGE=s3 AERUGO_LISTEN=$ADDR AERUGO_ADMIN_LISTEN=127.0.0.1:9300 AERUGO_REDIRECT=proxy
"$AERUGO_BIN" serve >"$WORK/dataplane.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:9300/readyz"

# One image to pull (a 4 KiB layer), as the administrator.
AUTH="admin:$ADMIN_PASSWORD"
layer="$WORK/layer"; head -c 4096 /dev/urandom >"$layer"
config="$WORK/config"; printf '{"architecture":"amd64","os":"linux"}' >"$config"
push_blob() {
  local digest="sha256:$(sha256sum "$1" | cut -d' ' -f1)"
  curl -sf -u "$AUTH" -X POST -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
    "http://$ADDR/v2/bench/app/blobs/uploads/?digest=$digest" >/dev/null
  echo "$digest"
}
ld=$(push_blob "$layer"); cd_=$(push_blob "$config")
manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":4096}]}' \
  "$cd_" "$(stat -c %s "$config")" "$ld")
curl -sf -u "$AUTH" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$manifest" \
  "http://$ADDR/v2/bench/app/manifests/latest" >/dev/null
BASIC="Authorization: Basic $(printf %s "$AUTH" | base64 -w0)"
ACCEPT="Accept: application/vnd.oci.image.manifest.v1+json"

pull_rps() {
  local out
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -H "$BASIC" -H "$ACCEPT" "http://$ADDR/v2/bench/app/manifests/latest")
  grep -q "Non-2xx" <<<"$out" && { echo "non-2xx answers: $out" >&2; exit 1; }
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}

"$AERUGO_BENCH_GC" seed "$N"
before=$(pull_rps)
"$AERUGO_BENCH_GC" collect >"$WORK/collect.out" 2>&1 &
collector=$!
sleep 0.5
during=$(pull_rps)
wait "$collector"
cat "$WORK/collect.out"
after=$(pull_rps)
objects=$(psql -qtA "$AERUGO_DATABASE_URL" -c "SELECT count(*) FROM blob_objects WHERE storage_key LIKE 'bench-gc/%'")
[ "$objects" = 0 ] || { echo "$objects seeded objects left" >&2; exit 1; }
awk -v b="$before" -v d="$during" -v a="$after" 'BEGIN {
  printf "manifest GET req/s (%s connections): before %.0f, during collection %.0f (%.1f%% of before), after %.0f\n", ENVIRON["CONNS"], b, d, 100*d/b, a }'

#!/usr/bin/env bash
# Aerugo vs CNCF Distribution (Debian's docker-registry), same machine, same run.
# Invoked by `./scripts/dev.sh bench`, which installs the tools, starts Postgres and builds the
# release binary, then calls this with AERUGO_PG_ADMIN_URL and AERUGO_BIN set.
#
# Measures: manifest GET by tag and by digest, tags list (wrk), blob HEAD (ab -k: Debian's wrk
# never completes HEAD responses that carry Content-Length), each at $CONNS connections for
# $DURATION seconds; then a 1 GiB layer push to each registry (time and peak RSS) against the
# disk's own write throughput (dd with fsync). Prints every figure and the Aerugo/Distribution
# ratio; `--markdown FILE` also writes the table.
#
# Distribution runs without authentication. Aerugo always authenticates: its image is made
# public, so the rows without credentials are anonymous pulls (rights checked per request); the
# "bearer" row sends a token from its token endpoint, and "token issuance" asks that endpoint
# for tokens with an API key as the password (Basic; `ab -l`: token lengths vary).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONNS=${CONNS:-16}
DURATION=${DURATION:-10}
LAYER_MIB=${LAYER_MIB:-1024}
MARKDOWN=
[ "${1:-}" = --markdown ] && MARKDOWN=$2

WORK=$(mktemp -d /var/tmp/aerugo-bench.XXXXXX)
DIST_ADDR=127.0.0.1:5100
AERUGO_ADDR=127.0.0.1:5200
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# --- start both registries ---------------------------------------------------------------
start_distribution "$DIST_ADDR"
aerugo_database aerugo_bench
# The load generator is one client address: per-client rate limits off (Distribution has none).
AERUGO_LOG=warn AERUGO_CLIENT_RATE_LIMIT=0 AERUGO_TOKEN_RATE_LIMIT=0 \
  "$AERUGO_BIN" serve --listen "$AERUGO_ADDR" --admin-listen 127.0.0.1:5201 --storage file --storage-path "$WORK/aerugo" \
  --redirect proxy >"$WORK/aerugo.log" 2>&1 &
AERUGO_PID=$!; PIDS+=("$AERUGO_PID")
wait_http "http://$DIST_ADDR/v2/"
wait_http "http://$AERUGO_ADDR/healthz"
ADMIN=(-u "admin:$ADMIN_PASSWORD")

# --- the same image in both --------------------------------------------------------------
python3 "$ROOT/e2e/fixtures/make_oci_layout.py" "$WORK/image" --layer-bytes 2000000 >/dev/null
ACCEPT="application/vnd.oci.image.manifest.v1+json"
for addr in $DIST_ADDR $AERUGO_ADDR; do
  skopeo copy -q --dest-tls-verify=false --dest-creds "admin:$ADMIN_PASSWORD" "oci:$WORK/image:latest" "docker://$addr/bench/app:v1" >/dev/null
  curl -sf "${ADMIN[@]}" -H "Accept: $ACCEPT" "http://$addr/v2/bench/app/manifests/v1" >"$WORK/manifest.json"
  for i in $(seq 1 100); do
    curl -sf "${ADMIN[@]}" -o /dev/null -X PUT -H "Content-Type: $ACCEPT" --data-binary "@$WORK/manifest.json" \
      "http://$addr/v2/bench/app/manifests/t$i"
  done
done
curl -sf "${ADMIN[@]}" -o /dev/null -X PATCH -H "Content-Type: application/json" --data '{"visibility":"public"}' \
  "http://$AERUGO_ADDR/api/v1/orgs/bench/repositories/app"
TOKEN=$(curl -sf "${ADMIN[@]}" "http://$AERUGO_ADDR/v2/token?service=aerugo&scope=repository:bench/app:pull" |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
API_KEY=$(curl -sf "${ADMIN[@]}" -H "Content-Type: application/json" \
  --data '{"name":"bench","scopes":[{"repositories":"bench/**","actions":["pull"]}]}' "http://$AERUGO_ADDR/api/v1/api-keys" |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
DIGEST="sha256:$(sha256sum "$WORK/manifest.json" | cut -d' ' -f1)"
LAYER=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$WORK/manifest.json")

# --- request rates ------------------------------------------------------------------------
# wrk_run ADDR PATH [HEADER] -> "req/s p99_ms"
wrk_run() {
  local out extra=()
  [ -z "${3:-}" ] || extra=(-H "$3")
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H "Accept: $ACCEPT" "${extra[@]}" "http://$1$2")
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(p99_of "$out")
  local non2xx
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out")
  [ -z "$non2xx" ] || { echo "wrk saw $non2xx non-2xx answers from $1$2" >&2; exit 1; }
  echo "$rps $p99"
}
# ab_head ADDR PATH -> "req/s p99_ms"
ab_head() {
  local n=$((DURATION * 3000)) out
  out=$(ab -q -k -i -c "$CONNS" -t "$DURATION" -n "$n" "http://$1$2" 2>&1)
  local failed
  failed=$(awk '/Failed requests/ {print $3}' <<<"$out")
  [ "$failed" = 0 ] || { echo "ab saw $failed failed requests from $1$2" >&2; exit 1; }
  echo "$(awk '/Requests per second/ {print $4}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}

ROWS=()
row() { # name dist_rps dist_p99 aerugo_rps aerugo_p99
  local ratio
  ratio=$(awk -v a="$4" -v d="$2" 'BEGIN {printf "%.2f", a/d}')
  printf '%-28s distribution %9.0f req/s p99 %7.2f ms | aerugo %9.0f req/s p99 %7.2f ms | ratio %sx\n' "$1" "$2" "$3" "$4" "$5" "$ratio"
  ROWS+=("| $1 | $(printf %.0f "$2") | $3 | $(printf %.0f "$4") | $5 | **${ratio}×** |")
}
measure() { # name tool path
  local d a
  d=$($2 "$DIST_ADDR" "$3"); a=$($2 "$AERUGO_ADDR" "$3")
  # shellcheck disable=SC2086
  row "$1" $d $a
}

echo "== $CONNS connections, ${DURATION}s each, $(nproc) cores"
measure "manifest GET by tag" wrk_run /v2/bench/app/manifests/v1
measure "manifest GET by digest" wrk_run "/v2/bench/app/manifests/$DIGEST"
measure "blob HEAD" ab_head "/v2/bench/app/blobs/$LAYER"
measure "tags list (101 tags)" wrk_run /v2/bench/app/tags/list

# Authentication: the same manifest GET with a bearer token, against the anonymous pull above
# and against Distribution; then token issuance with an API key.
read -r anon_rps anon_p99 < <(wrk_run "$AERUGO_ADDR" /v2/bench/app/manifests/v1)
read -r bearer_rps bearer_p99 < <(wrk_run "$AERUGO_ADDR" /v2/bench/app/manifests/v1 "Authorization: Bearer $TOKEN")
read -r dist_rps dist_p99 < <(wrk_run "$DIST_ADDR" /v2/bench/app/manifests/v1)
row "manifest GET by tag, bearer" "$dist_rps" "$dist_p99" "$bearer_rps" "$bearer_p99"
bearer_vs_anon=$(awk -v b="$bearer_rps" -v a="$anon_rps" 'BEGIN {printf "%.2f", b/a}')
echo "bearer / anonymous (same run): ${bearer_vs_anon}x ($bearer_rps vs $anon_rps req/s)"
token_out=$(ab -q -k -l -c "$CONNS" -t "$DURATION" -n $((DURATION * 20000)) -A "admin:$API_KEY" \
  "http://$AERUGO_ADDR/v2/token?service=aerugo&scope=repository:bench/app:pull" 2>&1)
token_failed=$(awk '/Failed requests/ {print $3}' <<<"$token_out")
token_non2xx=$(awk '/Non-2xx responses/ {print $3}' <<<"$token_out")
[ "$token_failed" = 0 ] && [ -z "$token_non2xx" ] || { echo "token issuance failed: $token_out" >&2; exit 1; }
token_rps=$(awk '/Requests per second/ {print $4}' <<<"$token_out")
token_p99=$(awk '$1=="99%" {print $2}' <<<"$token_out")
echo "token issuance with an API key: $token_rps tokens/s, p99 $token_p99 ms"

# --- 1 GiB layer push ---------------------------------------------------------------------
head -c $((LAYER_MIB * 1024 * 1024)) /dev/urandom >"$WORK/layer.bin"
LAYER_DIGEST="sha256:$(sha256sum "$WORK/layer.bin" | cut -d' ' -f1)"
sync
disk_start=$(date +%s.%N)
dd if="$WORK/layer.bin" of="$WORK/dd.out" bs=1M conv=fsync status=none
disk_secs=$(awk -v s="$disk_start" -v e="$(date +%s.%N)" 'BEGIN {print e-s}')
rm -f "$WORK/dd.out"

# push ADDR PID -> "seconds peak_rss_mib"
push_layer() {
  local addr=$1 pid=$2 location start end
  location=$(curl -sf "${ADMIN[@]}" -o /dev/null -D - -X POST "http://$addr/v2/big/layer/blobs/uploads/" | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r')
  case "$location" in http*) ;; *) location="http://$addr$location" ;; esac
  start=$(date +%s.%N)
  location=$(curl -sf "${ADMIN[@]}" -o /dev/null -D - -X PATCH -H "Content-Type: application/octet-stream" -H "Expect:" \
    -T "$WORK/layer.bin" "$location" | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r')
  case "$location" in http*) ;; *) location="http://$addr$location" ;; esac
  case "$location" in *\?*) location="$location&digest=$LAYER_DIGEST" ;; *) location="$location?digest=$LAYER_DIGEST" ;; esac
  curl -sf "${ADMIN[@]}" -o /dev/null -X PUT "$location"
  end=$(date +%s.%N)
  local hwm
  hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  echo "$(awk -v s="$start" -v e="$end" 'BEGIN {print e-s}') $hwm"
}
read -r dsecs drss < <(push_layer "$DIST_ADDR" "$DIST_PID")
read -r asecs arss < <(push_layer "$AERUGO_ADDR" "$AERUGO_PID")
mibps() { awk -v s="$1" -v m="$LAYER_MIB" 'BEGIN {printf "%.0f", m/s}'; }
disk=$(mibps "$disk_secs"); dmb=$(mibps "$dsecs"); amb=$(mibps "$asecs")
vs_disk=$(awk -v a="$amb" -v d="$disk" 'BEGIN {printf "%.2f", a/d}')
push_ratio=$(awk -v a="$amb" -v d="$dmb" 'BEGIN {printf "%.2f", a/d}')
echo "== ${LAYER_MIB} MiB layer push (streamed PATCH + PUT), disk write with fsync: $disk MiB/s"
printf 'distribution %6.1f s %5s MiB/s peak RSS %6s MiB | aerugo %6.1f s %5s MiB/s peak RSS %6s MiB | aerugo/disk %sx, aerugo/distribution %sx\n' \
  "$dsecs" "$dmb" "$drss" "$asecs" "$amb" "$arss" "$vs_disk" "$push_ratio"

# --- the same push against S3 (Garage), when dev.sh started one ----------------------------
S3_ROWS=()
if [ -n "${AERUGO_S3_ENDPOINT:-}" ]; then
  S3_ADDR=127.0.0.1:5300
  s3db=aerugo_bench_s3
  psql -q "$AERUGO_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $s3db" -c "CREATE DATABASE $s3db" >/dev/null
  AERUGO_DATABASE_URL=${AERUGO_PG_ADMIN_URL%/*}/$s3db "$AERUGO_BIN" migrate >/dev/null 2>&1
  AERUGO_DATABASE_URL=${AERUGO_PG_ADMIN_URL%/*}/$s3db "$AERUGO_BIN" bootstrap --admin-password-file "$WORK/admin-password" >/dev/null 2>&1
  AERUGO_DATABASE_URL=${AERUGO_PG_ADMIN_URL%/*}/$s3db AERUGO_LOG=warn "$AERUGO_BIN" serve --listen "$S3_ADDR" --admin-listen 127.0.0.1:5301 \
    --storage s3 --redirect presign >"$WORK/aerugo-s3.log" 2>&1 &
  S3_PID=$!; PIDS+=("$S3_PID")
  wait_http "http://$S3_ADDR/healthz"
  # Garage's own throughput for the same file: boto3's managed multipart upload (8 MiB parts,
  # 10 parts in flight), straight to the bucket.
  raw_secs=$(python3 - "$WORK/layer.bin" <<'PY'
import os, sys, time, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url=os.environ["AERUGO_S3_ENDPOINT"], region_name=os.environ["AERUGO_S3_REGION"],
                  aws_access_key_id=os.environ["AERUGO_S3_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["AERUGO_S3_SECRET_ACCESS_KEY"])
start = time.monotonic()
s3.upload_file(sys.argv[1], os.environ["AERUGO_S3_BUCKET"], "bench/raw-layer", Config=TransferConfig(multipart_chunksize=8 << 20))
print(f"{time.monotonic() - start:.2f}")
s3.delete_object(Bucket=os.environ["AERUGO_S3_BUCKET"], Key="bench/raw-layer")
PY
)
  read -r s3secs s3rss < <(push_layer "$S3_ADDR" "$S3_PID")
  raw=$(mibps "$raw_secs"); s3mb=$(mibps "$s3secs")
  s3_vs_raw=$(awk -v a="$s3mb" -v d="$raw" 'BEGIN {printf "%.2f", a/d}')
  redirect=$(curl -s "${ADMIN[@]}" -o /dev/null -w '%{http_code} %{size_header} %{size_download}' "http://$S3_ADDR/v2/big/layer/blobs/$LAYER_DIGEST")
  echo "== ${LAYER_MIB} MiB layer push to S3 (Garage on loopback)"
  printf 'garage direct (boto3 multipart) %6.1f s %5s MiB/s | aerugo %6.1f s %5s MiB/s peak RSS %6s MiB | aerugo/garage %sx\n' \
    "$raw_secs" "$raw" "$s3secs" "$s3mb" "$s3rss" "$s3_vs_raw"
  read -r code hbytes bbytes <<<"$redirect"
  echo "presigned blob GET: HTTP $code, $hbytes header bytes, $bbytes body bytes"
  S3_ROWS=("| Garage direct (boto3 multipart, 10 parts in flight) | $raw_secs | $raw | |"
    "| Aerugo on Garage | $s3secs | $s3mb | $s3rss |"
    ""
    "Aerugo on S3 / Garage direct: **${s3_vs_raw}×**. A presigned blob GET costs the node one response: HTTP $code, $hbytes header bytes, $bbytes body bytes.")
fi

if [ -n "$MARKDOWN" ]; then
  {
    echo "| $CONNS connections, ${DURATION}s | Distribution req/s | p99 ms | Aerugo req/s | p99 ms | Aerugo/Distribution |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Authenticated manifest GET (bearer) / anonymous GET of the same public image, same run: **${bearer_vs_anon}×** ($bearer_rps vs $anon_rps req/s)."
    echo "Token issuance with an API key (Basic, token endpoint, one scope): **$token_rps tokens/s**, p99 $token_p99 ms."
    echo
    echo "| ${LAYER_MIB} MiB layer push | seconds | MiB/s | peak RSS MiB |"
    echo "|---|---|---|---|"
    echo "| disk (dd, fsync) | $disk_secs | $disk | |"
    echo "| Distribution | $dsecs | $dmb | $drss |"
    echo "| Aerugo | $asecs | $amb | $arss |"
    echo
    echo "Aerugo push throughput / disk write throughput: **${vs_disk}×**; Aerugo / Distribution: ${push_ratio}×."
    if ((${#S3_ROWS[@]})); then
      echo
      echo "| ${LAYER_MIB} MiB layer push to S3 | seconds | MiB/s | peak RSS MiB |"
      echo "|---|---|---|---|"
      printf '%s\n' "${S3_ROWS[@]}"
    fi
  } >"$MARKDOWN"
fi

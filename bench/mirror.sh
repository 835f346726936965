#!/usr/bin/env bash
# Pull-through: an Aerugo Mirror vs CNCF Distribution configured as a pull-through proxy
# (Debian's docker-registry, `proxy.remoteurl`), both in front of the same upstream (another
# docker-registry, anonymous: Distribution 2.8's proxy does not send Basic credentials to an
# htpasswd upstream; the e2e tests cover Aerugo with both), same machine, same run. Invoked by
# `./scripts/dev.sh bench-mirror`, which installs the tools, starts Postgres and builds the
# release binary, then calls this with AERUGO_PG_ADMIN_URL and AERUGO_BIN set.
#
# Cold: skopeo copies an image of LAYERS layers of LAYER_BYTES each, straight from the upstream,
# then through each mirror (nothing cached), then through each again (warm); time, and bytes
# the upstream sent (its access log). Warm: wrk on the manifest by tag (what every pull asks
# first) and on a layer GET, through each, at CONNS connections for DURATION seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
LAYERS=${LAYERS:-4}
LAYER_BYTES=${LAYER_BYTES:-16777216}
MARKDOWN=
[ "${1:-}" = --markdown ] && MARKDOWN=$2

WORK=$(mktemp -d /var/tmp/aerugo-mirror.XXXXXX)
UPSTREAM=127.0.0.1:5300
PROXY=127.0.0.1:5310
AERUGO=127.0.0.1:5320
PIDS=()
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    for log in "$WORK"/*.log; do echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; done
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# --- the upstream, the two mirrors --------------------------------------------------------
cat >"$WORK/upstream.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/upstream}}
http: {addr: $UPSTREAM}
YML
docker-registry serve "$WORK/upstream.yml" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://$UPSTREAM/v2/"   # the proxy asks the upstream at start
cat >"$WORK/proxy.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/proxy}}
proxy: {remoteurl: http://$UPSTREAM}
http: {addr: $PROXY}
YML
docker-registry serve "$WORK/proxy.yml" >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
aerugo_database aerugo_bench_mirror
psql -q "$AERUGO_DATABASE_URL" <<SQL
INSERT INTO organizations (name, default_visibility) VALUES ('hub', 'public');
INSERT INTO mirrors (org_id, name, k8s_uid, k8s_namespace, upstream, registry_hosts, stale_after_seconds)
SELECT id, 'hub', gen_random_uuid(), 'bench', 'http://$UPSTREAM', '{docker.io}', 600
  FROM organizations WHERE name = 'hub';
SQL
AERUGO_LOG=warn AERUGO_CLIENT_RATE_LIMIT=0 "$AERUGO_BIN" serve --listen "$AERUGO" --admin-listen 127.0.0.1:5321 \
  --storage file --storage-path "$WORK/aerugo" --redirect proxy --database-pool-size 20 >"$WORK/aerugo.log" 2>&1 &
PIDS+=($!)
wait_http "http://$PROXY/v2/"
wait_http "http://$AERUGO/healthz"

# --- the image ----------------------------------------------------------------------------
python3 - "$WORK/image" "$LAYERS" "$LAYER_BYTES" <<'PY'
import hashlib, json, os, random, sys
root, layers, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{root}/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{root}/blobs/sha256/{d}", "wb").write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
rng = random.Random(7)
descs = [dict(blob(rng.randbytes(size)), mediaType="application/vnd.oci.image.layer.v1.tar") for _ in range(layers)]
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": dict(blob(config), mediaType="application/vnd.oci.image.config.v1+json"),
                       "layers": descs}).encode()
m = blob(manifest)
json.dump({"schemaVersion": 2, "manifests": [dict(m, mediaType="application/vnd.oci.image.manifest.v1+json",
           annotations={"org.opencontainers.image.ref.name": "latest"})]}, open(f"{root}/index.json", "w"))
open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
PY
skopeo copy -q --dest-tls-verify=false "oci:$WORK/image:latest" \
  "docker://$UPSTREAM/library/app:v1" >/dev/null
TOTAL=$(du -sb "$WORK/image/blobs" | cut -f1)
# skopeo compresses the layers on the way (the digests upstream are not the layout's).
LAYER=$(curl -sf -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$UPSTREAM/v2/library/app/manifests/v1" |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["layers"][0]["digest"])')

# Bytes the upstream sent in 200 answers to GETs (access log: combined format).
upstream_bytes() { awk '$6 == "\"GET" && $9 == 200 {s += $10} END {print s + 0}' "$WORK/upstream.log"; }
# Requests to the upstream from user agent AGENT (Distribution's proxy: Go-http-client).
upstream_requests() { grep -c "\"$1" "$WORK/upstream.log" || true; }
# copy SOURCE -> seconds
copy() {
  local dest=$WORK/pull.$RANDOM start end
  start=$(date +%s.%N)
  skopeo copy -q --src-tls-verify=false "docker://$1" "dir:$dest" >/dev/null
  end=$(date +%s.%N)
  rm -rf "$dest"
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}' 
}
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3"; }

declare -a LINES
LINES+=("Image: 1 manifest, 1 config, $LAYERS layers of $((LAYER_BYTES >> 20)) MiB ($((TOTAL >> 20)) MiB). Upstream: docker-registry on loopback.")
LINES+=("")
LINES+=("| Pull | Seconds | Bytes from the upstream |")
LINES+=("|---|---|---|")
before=$(upstream_bytes); t=$(copy "$UPSTREAM/library/app:v1"); after=$(upstream_bytes)
LINES+=("$(row "direct from the upstream" "$t" "$((after - before))")")
before=$(upstream_bytes); t=$(copy "$AERUGO/hub/library/app:v1"); after=$(upstream_bytes)
LINES+=("$(row "Aerugo mirror, cold" "$t" "$((after - before))")")
before=$(upstream_bytes); t=$(copy "$PROXY/library/app:v1"); after=$(upstream_bytes)
LINES+=("$(row "Distribution proxy, cold" "$t" "$((after - before))")")
before=$(upstream_bytes); t=$(copy "$AERUGO/hub/library/app:v1"); after=$(upstream_bytes)
LINES+=("$(row "Aerugo mirror, warm" "$t" "$((after - before))")")
before=$(upstream_bytes); t=$(copy "$PROXY/library/app:v1"); after=$(upstream_bytes)
LINES+=("$(row "Distribution proxy, warm" "$t" "$((after - before))")")

ACCEPT="application/vnd.oci.image.manifest.v1+json"
wrk_rate() { # addr path -> "req/s p99_ms non2xx"
  local out
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H "Accept: $ACCEPT" "http://$1$2")
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(p99_of "$out") $(awk '/Non-2xx/ {print $4}' <<<"$out")"
}
LINES+=("")
LINES+=("Warm pulls, $CONNS connections, $DURATION s each (anonymous; tags within \`staleAfter\`):")
LINES+=("")
LINES+=("| Request | Distribution proxy req/s | p99 ms | Aerugo mirror req/s | p99 ms | ratio | upstream requests during the runs (proxy / Aerugo) |")
LINES+=("|---|---|---|---|---|---|---|")
for what in "manifest by tag|manifests/v1" "layer GET (16 MiB)|blobs/$LAYER"; do
  label=${what%%|*} tail=${what#*|}
  p0=$(upstream_requests Go-http-client); a0=$(upstream_requests aerugo-mirror)
  read -r p_rate p_p99 p_bad <<<"$(wrk_rate "$PROXY" "/v2/library/app/$tail")"
  read -r a_rate a_p99 a_bad <<<"$(wrk_rate "$AERUGO" "/v2/hub/library/app/$tail")"
  sleep 1   # requests still in flight at the end of a run land in the log
  p1=$(upstream_requests Go-http-client); a1=$(upstream_requests aerugo-mirror)
  [ -z "$a_bad" ] || { echo "Aerugo answered $a_bad non-2xx on $label" >&2; exit 1; }
  [ -z "$p_bad" ] || LINES+=("note: Distribution answered $p_bad non-2xx on $label")
  ratio=$(awk -v a="$a_rate" -v p="$p_rate" 'BEGIN {printf "%.1f", a / p}')
  LINES+=("| $label | $p_rate | $p_p99 | $a_rate | $a_p99 | ${ratio}x | $((p1 - p0)) / $((a1 - a0)) |")
done

printf '%s\n' "${LINES[@]}"
[ -z "$MARKDOWN" ] || printf '%s\n' "${LINES[@]}" >"$MARKDOWN"

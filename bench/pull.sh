#!/usr/bin/env bash
# The pull path, Aerugo vs CNCF Distribution (Debian's docker-registry), same machine, same run.
# Invoked by `./scripts/dev.sh bench-pull`, which installs the tools, starts Postgres and builds
# the release binary, then calls this with AERUGO_PG_ADMIN_URL and AERUGO_BIN set.
#
# Registries (all at once, one database, one blob directory, one token key; 20-connection
# pools, so the four Aerugo nodes stay within a default Postgres's 100 connections):
#   distribution  Debian's docker-registry, no authentication
#   local         one Aerugo node, in-process cache
#   redis         one Aerugo node, cache in Redis (a redis-server this script starts)
#   redis x2      two Aerugo nodes sharing that Redis; the load is split evenly between them
#                 (half the connections each, as kube-proxy balances connections)
#   off           one Aerugo node without a cache (16 connections only: what the cache buys)
# Rows: manifest GET by tag, blob HEAD, tags list; anonymous (the repository is public) and
# with a bearer token; at 16, 64 and 256 connections, $DURATION seconds each. Distribution has
# no token server here: its "bearer" rows are the same anonymous requests.
# Then: Redis killed and restarted in the middle of a run (zero failed requests required),
# and a soak: $SOAK_CLIENTS clients pulling 20 images (manifest, config, layer) for
# $SOAK_SECONDS seconds against Distribution and two Aerugo nodes with Redis.
# `--markdown FILE` writes the tables.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-5}
CONN_LEVELS=${CONN_LEVELS:-"16 64 256"}
SOAK_SECONDS=${SOAK_SECONDS:-60}
SOAK_CLIENTS=${SOAK_CLIENTS:-200}
MARKDOWN=
[ "${1:-}" = --markdown ] && MARKDOWN=$2

WORK=$(mktemp -d /var/tmp/aerugo-pull.XXXXXX)
DIST=127.0.0.1:5100
LOCAL=127.0.0.1:5200
REDIS_A=127.0.0.1:5210
REDIS_B=127.0.0.1:5211
OFF=127.0.0.1:5220
REDIS_PORT=${REDIS_PORT:-6390}
PIDS=()
REDIS_PID=
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    for log in "$WORK"/*.log; do echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; done
  fi
  for pid in "${PIDS[@]}" $REDIS_PID; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
start_redis() {
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  echo "redis-server did not start" >&2; exit 1
}

# --- registries ---------------------------------------------------------------------------
start_distribution "$DIST"
start_redis
aerugo_database aerugo_bench_pull
# Tokens outlive the run (the matrix takes longer than the default 5 minutes).
export AERUGO_LOG=warn AERUGO_CLIENT_RATE_LIMIT=0 AERUGO_TOKEN_RATE_LIMIT=0 AERUGO_TOKEN_TTL=3600
aerugo() { # name addr admin_port cache [redis url]
  local name=$1 addr=$2 admin=$3 cache=$4
  AERUGO_CACHE=$cache AERUGO_REDIS_URL=${5:-} AERUGO_REDIS_PREFIX=bench \
    "$AERUGO_BIN" serve --listen "$addr" --admin-listen "127.0.0.1:$admin" --storage file --database-pool-size 20 \
    --storage-path "$WORK/aerugo" --redirect proxy >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
aerugo local "$LOCAL" 5201 local
aerugo redis-a "$REDIS_A" 5212 redis "$REDIS_URL"
aerugo redis-b "$REDIS_B" 5213 redis "$REDIS_URL"
aerugo off "$OFF" 5221 off
wait_http "http://$DIST/v2/"
for addr in $LOCAL $REDIS_A $REDIS_B $OFF; do wait_http "http://$addr/healthz"; done
ADMIN=(-u "admin:$ADMIN_PASSWORD")

# --- images: bench/app (101 tags) and soak/img0..19, the same in both registries ----------
ACCEPT="application/vnd.oci.image.manifest.v1+json"
python3 "$ROOT/e2e/fixtures/make_oci_layout.py" "$WORK/image" --layer-bytes 2000000 >/dev/null
for i in $(seq 0 19); do
  python3 "$ROOT/e2e/fixtures/make_oci_layout.py" "$WORK/soak$i" --layer-bytes 16384 --seed $((100 + i)) >/dev/null
done
# Writes go through one Aerugo node, before any read: the local-cache node shares the database.
for addr in $DIST $REDIS_A; do
  skopeo copy -q --dest-tls-verify=false --dest-creds "admin:$ADMIN_PASSWORD" "oci:$WORK/image:latest" "docker://$addr/bench/app:v1" >/dev/null
  curl -sf "${ADMIN[@]}" -H "Accept: $ACCEPT" "http://$addr/v2/bench/app/manifests/v1" >"$WORK/manifest.json"
  for i in $(seq 1 100); do
    curl -sf "${ADMIN[@]}" -o /dev/null -X PUT -H "Content-Type: $ACCEPT" --data-binary "@$WORK/manifest.json" \
      "http://$addr/v2/bench/app/manifests/t$i"
  done
  for i in $(seq 0 19); do
    skopeo copy -q --dest-tls-verify=false --dest-creds "admin:$ADMIN_PASSWORD" "oci:$WORK/soak$i:latest" "docker://$addr/soak/img$i:v1" >/dev/null
  done
done
for repo in bench/app $(seq -f 'soak/img%g' 0 19); do
  curl -sf "${ADMIN[@]}" -o /dev/null -X PATCH -H "Content-Type: application/json" --data '{"visibility":"public"}' \
    "http://$REDIS_A/api/v1/orgs/${repo%%/*}/repositories/${repo#*/}"
done
scopes=$(printf '&scope=repository:soak/img%d:pull' $(seq 0 19))
TOKEN=$(curl -sf "${ADMIN[@]}" "http://$REDIS_A/v2/token?service=aerugo&scope=repository:bench/app:pull$scopes" |
  python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
LAYER=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$WORK/manifest.json")

# --- load tools ---------------------------------------------------------------------------
# wrk_run CONNS ADDR PATH [HEADER] -> "req/s p99_ms"
wrk_run() {
  local conns=$1 addr=$2 path=$3 out extra=()
  [ -z "${4:-}" ] || extra=(-H "$4")
  out=$(wrk -t2 -c"$conns" -d"${DURATION}s" --latency -H "Accept: $ACCEPT" "${extra[@]}" "http://$addr$path")
  peer_errors "$out" "$addr$path" "$conns" || check_wrk "$out" "$addr$path"
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(p99_of "$out")"
}
# Distribution's socket errors (wrk timeouts under load) are recorded, not fatal; Aerugo's are.
peer_errors() { # wrk_output addr_path conns
  [[ "$2" == "$DIST"* ]] || return 1
  local errors
  errors=$(awk '/Socket errors/ {print $4+$6+$8+$10}' <<<"$1" | tr -d ,)
  if [ -n "$errors" ] && [ "$errors" != 0 ]; then
    echo "note: Distribution: $errors socket errors (timeouts) on ${2#"$DIST"} at $3 connections" | tee -a "$WORK/peer-notes" >&2
  fi
}
check_wrk() {
  local non2xx errors
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$1")
  errors=$(awk '/Socket errors/ {print $4+$6+$8+$10}' <<<"$1" | tr -d ,)
  [ -z "$non2xx" ] || { echo "wrk saw $non2xx non-2xx answers from $2" >&2; exit 1; }
  [ -z "$errors" ] || [ "$errors" = 0 ] || { echo "wrk saw $errors socket errors from $2: $1" >&2; exit 1; }
}
# ab_head CONNS ADDR PATH [HEADER] -> "req/s p99_ms" (Debian's wrk never completes HEAD
# responses that carry Content-Length)
ab_head() {
  local conns=$1 addr=$2 path=$3 out extra=()
  [ -z "${4:-}" ] || extra=(-H "$4")
  out=$(ab -q -k -i -c "$conns" -t "$DURATION" -n $((DURATION * 40000)) "${extra[@]}" "http://$addr$path" 2>&1)
  local failed non2xx
  failed=$(awk '/Failed requests/ {print $3}' <<<"$out")
  non2xx=$(awk '/Non-2xx responses/ {print $3}' <<<"$out")
  if [ "$addr" != "$DIST" ]; then
    [ "$failed" = 0 ] && [ -z "$non2xx" ] || { echo "ab saw failures from $addr$path: $out" >&2; exit 1; }
  elif [ "$failed" != 0 ]; then
    echo "note: Distribution: $failed failed requests on $path at $conns connections" | tee -a "$WORK/peer-notes" >&2
  fi
  echo "$(awk '/Requests per second/ {print $4}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out")"
}
# split TOOL CONNS PATH [HEADER]: the redis pair, half the connections each, at once ->
# "summed req/s, worse p99"
split() {
  local tool=$1 conns=$2 path=$3 header=${4:-}
  $tool $((conns / 2)) "$REDIS_A" "$path" "$header" >"$WORK/split-a" &
  local a=$!
  $tool $((conns / 2)) "$REDIS_B" "$path" "$header" >"$WORK/split-b"
  wait "$a"
  read -r ra pa <"$WORK/split-a"; read -r rb pb <"$WORK/split-b"
  awk -v ra="$ra" -v rb="$rb" -v pa="$pa" -v pb="$pb" 'BEGIN {printf "%.0f %s\n", ra+rb, (pa>pb?pa:pb)}'
}

ROWS=()
ratio() { awk -v a="$1" -v d="$2" 'BEGIN {printf "%.2f", a/d}'; }
measure() { # name tool conns path auth(anon|bearer)
  local name=$1 tool=$2 conns=$3 path=$4 header=
  [ "$5" = bearer ] && header="Authorization: Bearer $TOKEN"
  local d l r r2 off="- -"
  d=$($tool "$conns" "$DIST" "$path")
  l=$($tool "$conns" "$LOCAL" "$path" "$header")
  r=$($tool "$conns" "$REDIS_A" "$path" "$header")
  r2=$(split "$tool" "$conns" "$path" "$header")
  [ "$conns" != 16 ] || off=$($tool "$conns" "$OFF" "$path" "$header")
  read -r drps dp99 <<<"$d"; read -r lrps lp99 <<<"$l"; read -r rrps rp99 <<<"$r"
  read -r r2rps r2p99 <<<"$r2"; read -r orps op99 <<<"$off"
  printf '%-24s %-6s %4s | dist %7.0f/s p99 %6.2f | local %7.0f/s p99 %6.2f (%sx) | redis %7.0f/s p99 %6.2f (%sx) | redis x2 %7.0f/s p99 %6.2f (%sx) | off %s/s p99 %s\n' \
    "$name" "$5" "$conns" "$drps" "$dp99" "$lrps" "$lp99" "$(ratio "$lrps" "$drps")" "$rrps" "$rp99" "$(ratio "$rrps" "$drps")" \
    "$r2rps" "$r2p99" "$(ratio "$r2rps" "$drps")" "$orps" "$op99"
  ROWS+=("| $name | $5 | $conns | $(printf %.0f "$drps") / $dp99 | $(printf %.0f "$lrps") / $lp99 (**$(ratio "$lrps" "$drps")×**, p99 $(ratio "$lp99" "$dp99")×) | $(printf %.0f "$rrps") / $rp99 (**$(ratio "$rrps" "$drps")×**) | $(printf %.0f "$r2rps") / $r2p99 (**$(ratio "$r2rps" "$drps")×**) | $orps / $op99 |")
}

echo "== pull path, ${DURATION}s per cell, $(nproc) cores: req/s, p99 ms, ratio to Distribution"
for conns in $CONN_LEVELS; do
  for auth in anon bearer; do
    measure "manifest GET by tag" wrk_run "$conns" /v2/bench/app/manifests/v1 $auth
    measure "blob HEAD" ab_head "$conns" "/v2/bench/app/blobs/$LAYER" $auth
    measure "tags list (101 tags)" wrk_run "$conns" /v2/bench/app/tags/list $auth
  done
done

# --- Redis killed and restarted mid-run ---------------------------------------------------
OUTAGE_SECONDS=$((DURATION * 3))
(
  sleep "$((OUTAGE_SECONDS / 4))"; kill "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true
  sleep "$((OUTAGE_SECONDS / 3))"; start_redis; echo "$REDIS_PID" >"$WORK/redis.pid"
) &
outage_driver=$!
outage=$(wrk -t2 -c64 -d"${OUTAGE_SECONDS}s" --latency -H "Accept: $ACCEPT" -H "Authorization: Bearer $TOKEN" "http://$REDIS_A/v2/bench/app/manifests/v1")
wait "$outage_driver"
REDIS_PID=$(cat "$WORK/redis.pid")
check_wrk "$outage" "$REDIS_A during the Redis outage"
outage_total=$(awk '/requests in/ {print $1}' <<<"$outage")
outage_rps=$(awk '/Requests\/sec/ {print $2}' <<<"$outage")
outage_p99=$(p99_of "$outage")
metric() { curl -sf "http://127.0.0.1:5212/metrics" | awk -v n="$1" 'index($0, n) == 1 {s += $NF} END {print s+0}'; }
redis_errors=$(metric aerugo_cache_redis_errors_total)
recoveries=$(metric 'aerugo_cache_invalidations_total{origin="recovery"')
redis_up=$(metric aerugo_cache_redis_up)
echo "== Redis killed after $((OUTAGE_SECONDS / 4))s and restarted $((OUTAGE_SECONDS / 3))s later, during ${OUTAGE_SECONDS}s at 64 connections (bearer, manifest GET by tag)"
echo "$outage_total requests, 0 failed, $outage_rps req/s, p99 $outage_p99 ms; Redis command errors $redis_errors, epoch renewals $recoveries, cache on Redis again: $redis_up"

# --- soak -----------------------------------------------------------------------------------
cat >"$WORK/soak.lua" <<'LUA'
-- Each request is the next step of pulling one of 20 images: manifest, config, layer.
local paths = {}
for i = 0, 19 do
  local f = io.open(os.getenv("SOAK_DIR") .. "/soak" .. i .. ".paths")
  for line in f:lines() do paths[#paths + 1] = line end
  f:close()
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
LUA
for i in $(seq 0 19); do
  m=$(curl -sf -H "Accept: $ACCEPT" "http://$DIST/v2/soak/img$i/manifests/v1")
  python3 - "$i" "$m" >"$WORK/soak$i.paths" <<'PY'
import json, sys
i, m = sys.argv[1], json.loads(sys.argv[2])
print(f"/v2/soak/img{i}/manifests/v1")
print(f"/v2/soak/img{i}/blobs/{m['config']['digest']}")
for layer in m["layers"]:
    print(f"/v2/soak/img{i}/blobs/{layer['digest']}")
PY
done
soak() { # addr [header] -> "requests req/s p99"
  local out extra=()
  [ -z "${2:-}" ] || extra=(-H "$2")
  out=$(SOAK_DIR=$WORK wrk -t2 -c"$SOAK_CLIENTS" -d"${SOAK_SECONDS}s" --latency -s "$WORK/soak.lua" -H "Accept: $ACCEPT" "${extra[@]}" "http://$1/")
  local errors
  errors=$(awk '/Socket errors/ {print $4+$6+$8+$10}' <<<"$out" | tr -d ,)
  [ "$1" = "$DIST" ] || check_wrk "$out" "$1 (soak)"
  echo "$(awk '/requests in/ {print $1}' <<<"$out") $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(p99_of "$out") ${errors:-0}"
}
read -r sd_n sd_rps sd_p99 sd_err < <(soak "$DIST")
# Two nodes at once, half the clients each.
SOAK_CLIENTS=$((SOAK_CLIENTS / 2)) soak "$REDIS_A" "Authorization: Bearer $TOKEN" >"$WORK/soak-a" &
soak_a=$!
read -r sb_n sb_rps sb_p99 _ < <(SOAK_CLIENTS=$((SOAK_CLIENTS / 2)) soak "$REDIS_B" "Authorization: Bearer $TOKEN")
wait "$soak_a"
read -r sa_n sa_rps sa_p99 _ <"$WORK/soak-a"
soak_n=$((sa_n + sb_n)); soak_rps=$(awk -v a="$sa_rps" -v b="$sb_rps" 'BEGIN {printf "%.0f", a+b}')
soak_p99=$(awk -v a="$sa_p99" -v b="$sb_p99" 'BEGIN {print (a>b?a:b)}')
echo "== soak: $SOAK_CLIENTS clients pulling 20 images (manifest, config, 16 KiB layer) for ${SOAK_SECONDS}s"
echo "distribution: $sd_n requests, $sd_err socket errors, $sd_rps req/s, p99 $sd_p99 ms"
echo "aerugo (2 nodes, Redis, bearer): $soak_n requests, 0 errors, $soak_rps req/s, p99 $soak_p99 ms ($(ratio "$soak_rps" "$sd_rps")x)"

if [ -n "$MARKDOWN" ]; then
  {
    echo "Each cell: req/s / p99 ms (ratio of req/s to Distribution; for \`local\`, also the p99 ratio). ${DURATION}s per cell."
    echo
    echo "| Request | Auth | Conns | Distribution | Aerugo, local cache | Aerugo, Redis | Aerugo, 2 nodes + Redis | Aerugo, no cache |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    if [ -s "$WORK/peer-notes" ]; then echo; sed 's/^note: /- /' "$WORK/peer-notes"; fi
    echo
    echo "Redis killed $((OUTAGE_SECONDS / 4)) s into a ${OUTAGE_SECONDS} s run (64 connections, bearer, manifest GET by tag on one Redis-backed node) and restarted $((OUTAGE_SECONDS / 3)) s later: **$outage_total requests, 0 failed**, $outage_rps req/s, p99 $outage_p99 ms; $redis_errors Redis command errors counted, $recoveries epoch renewal(s) on recovery, node back on Redis at the end: $redis_up."
    echo
    echo "| Soak: $SOAK_CLIENTS clients × 20 images × ${SOAK_SECONDS} s | requests | errors | req/s | p99 ms |"
    echo "|---|---|---|---|---|"
    echo "| Distribution | $sd_n | $sd_err | $sd_rps | $sd_p99 |"
    echo "| Aerugo, 2 nodes + Redis, bearer | $soak_n | 0 | $soak_rps | $soak_p99 |"
  } >"$MARKDOWN"
fi

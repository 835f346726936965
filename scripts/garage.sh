#!/usr/bin/env bash
# Starts a single-node Garage S3 server for development and tests.
#
#   scripts/garage.sh start STATE_DIR S3_PORT   start (or reuse) Garage; prints the env to use
#   scripts/garage.sh stop STATE_DIR            stop it
#
# The access key is fixed (development only, loopback only) and may create buckets, so tests
# can give each case a bucket of its own. Installs Garage with `cargo install` when missing
# (about 9 minutes on 2 cores, once: the binary is cached in ~/.cargo/bin).
set -euo pipefail

KEY_ID=GK0ae2060000000000000000a1
SECRET=0ae20600000000000000000000000000000000000000000000000000000000a1
BUCKET=aerugo

ensure_garage() {
  command -v garage >/dev/null 2>&1 && return
  [ -x "$HOME/.cargo/bin/garage" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return; }
  echo "installing garage (cargo install garage --locked; cached in ~/.cargo/bin)..." >&2
  cargo install garage --locked >&2
  export PATH="$HOME/.cargo/bin:$PATH"
}

start() {
  local dir=$1 port=$2
  ensure_garage
  mkdir -p "$dir/meta" "$dir/data"
  dir=$(cd "$dir" && pwd)
  local cfg=$dir/garage.toml
  cat >"$cfg" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$((port + 1))"
rpc_public_addr = "127.0.0.1:$((port + 1))"
rpc_secret = "$(printf '%064d' 0 | sed 's/^0/a/')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((port + 3))"
TOML
  if ! (garage -c "$cfg" status >/dev/null 2>&1); then
    # Not this directory's Garage: a port taken by another one would abort it with an RPC error.
    local p
    for p in "$port" "$((port + 1))" "$((port + 3))"; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "127.0.0.1:$p is in use by another process (a Garage of another checkout? scripts/garage.sh stop <its state dir>)" >&2
        exit 1
      fi
    done
    nohup garage -c "$cfg" server >"$dir/garage.log" 2>&1 &
    echo $! >"$dir/garage.pid"
    for _ in $(seq 1 100); do garage -c "$cfg" status >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  if garage -c "$cfg" status 2>/dev/null | grep -q "NO ROLE ASSIGNED"; then
    local node
    node=$(garage -c "$cfg" node id -q 2>/dev/null | cut -d@ -f1)
    garage -c "$cfg" layout assign -z dc1 -c 1G "$node" >/dev/null
    garage -c "$cfg" layout apply --version 1 >/dev/null
  fi
  garage -c "$cfg" key info "$KEY_ID" >/dev/null 2>&1 ||
    garage -c "$cfg" key import --yes -n aerugo "$KEY_ID" "$SECRET" >/dev/null
  garage -c "$cfg" key allow --create-bucket "$KEY_ID" >/dev/null
  garage -c "$cfg" bucket info "$BUCKET" >/dev/null 2>&1 || garage -c "$cfg" bucket create "$BUCKET" >/dev/null
  garage -c "$cfg" bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >/dev/null
  cat <<ENV
AERUGO_S3_ENDPOINT=http://127.0.0.1:$port
AERUGO_S3_REGION=garage
AERUGO_S3_BUCKET=$BUCKET
AERUGO_S3_ACCESS_KEY_ID=$KEY_ID
AERUGO_S3_SECRET_ACCESS_KEY=$SECRET
AERUGO_S3_PATH_STYLE=true
ENV
}

stop() {
  local dir=$1
  [ -f "$dir/garage.pid" ] && kill "$(cat "$dir/garage.pid")" 2>/dev/null || true
  rm -f "$dir/garage.pid"
}

case "${1:-}" in
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac

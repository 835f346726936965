# Shared by bench/run.sh and bench/pull.sh (sourced). They set WORK, PIDS, AERUGO_BIN and
# AERUGO_PG_ADMIN_URL first.

wait_http() { for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# start_distribution ADDR: CNCF Distribution (Debian's docker-registry) with filesystem storage
# under $WORK, no authentication; sets DIST_PID.
start_distribution() {
  cat >"$WORK/distribution.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $WORK/distribution}
  delete: {enabled: true}
http: {addr: $1}
YML
  docker-registry serve "$WORK/distribution.yml" >"$WORK/distribution.log" 2>&1 &
  DIST_PID=$!; PIDS+=("$DIST_PID")
}

# aerugo_database NAME: a fresh, migrated database with the site administrator `admin`
# (password $ADMIN_PASSWORD) and a token signing key; exports AERUGO_DATABASE_URL and
# AERUGO_TOKEN_KEY_FILE.
ADMIN_PASSWORD=bench-admin-password
aerugo_database() {
  psql -q "$AERUGO_PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" >/dev/null
  export AERUGO_DATABASE_URL=${AERUGO_PG_ADMIN_URL%/*}/$1
  "$AERUGO_BIN" migrate >/dev/null 2>&1
  printf '%s\n' "$ADMIN_PASSWORD" >"$WORK/admin-password"
  "$AERUGO_BIN" bootstrap --admin-password-file "$WORK/admin-password" >/dev/null 2>&1
  "$AERUGO_BIN" keygen --out "$WORK/token.key"
  export AERUGO_TOKEN_KEY_FILE=$WORK/token.key
}

# p99_of WRK_OUTPUT -> the 99th percentile latency in ms.
p99_of() {
  awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$1"
}

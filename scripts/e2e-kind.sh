#!/usr/bin/env bash
# The end-to-end path on a real cluster: build the image, load it into kind (or k3d), install
# Postgres and MinIO next to it, install the chart with a default Registry, apply examples/,
# and push and pull with the keys the operator writes. Gated by KUBE_E2E=1 (it needs Docker,
# kind or k3d, kubectl and skopeo; none of them runs on the development machines of this
# repository, where ./scripts/dev.sh test runs the same path on the API emulator instead).
#
#   KUBE_E2E=1 ./scripts/e2e-kind.sh            kind (KUBE_TOOL=k3d for k3d)
#   KEEP=1 KUBE_E2E=1 ./scripts/e2e-kind.sh     keep the cluster afterwards
set -euo pipefail

if [ "${KUBE_E2E:-}" != 1 ]; then
  echo "skipped: set KUBE_E2E=1 to run against a kind or k3d cluster" >&2
  exit 0
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOL=${KUBE_TOOL:-kind}
CLUSTER=${CLUSTER:-aerugo-e2e}
IMAGE=aerugo/aerugo:e2e
NS=aerugo-system
PORT=${PORT:-15000}
HELM=${AERUGO_HELM:-helm}
for tool in docker "$TOOL" kubectl skopeo "$HELM"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
PF=
cleanup() {
  [ -z "$PF" ] || kill "$PF" 2>/dev/null || true
  if [ -z "${KEEP:-}" ]; then
    case $TOOL in kind) kind delete cluster --name "$CLUSTER" ;; k3d) k3d cluster delete "$CLUSTER" ;; esac
  fi
}
trap cleanup EXIT

log "building $IMAGE"
docker build -t "$IMAGE" "$ROOT"
log "cluster $CLUSTER ($TOOL)"
case $TOOL in
  kind)
    kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
    kind load docker-image "$IMAGE" --name "$CLUSTER"
    ;;
  k3d)
    k3d cluster list "$CLUSTER" >/dev/null 2>&1 || k3d cluster create "$CLUSTER" --wait
    k3d image import "$IMAGE" -c "$CLUSTER"
    ;;
  *) echo "KUBE_TOOL is kind or k3d" >&2; exit 2 ;;
esac

log "Postgres and MinIO in namespace aerugo-deps"
kubectl create namespace aerugo-deps --dry-run=client -o yaml | kubectl apply -f -
kubectl -n aerugo-deps apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: { name: postgres }
spec:
  selector: { matchLabels: { app: postgres } }
  template:
    metadata: { labels: { app: postgres } }
    spec:
      containers:
        - name: postgres
          image: postgres:16
          env:
            - { name: POSTGRES_PASSWORD, value: aerugo }
            - { name: POSTGRES_DB, value: aerugo }
          ports: [{ containerPort: 5432 }]
          readinessProbe: { exec: { command: [pg_isready, -U, postgres] } }
---
apiVersion: v1
kind: Service
metadata: { name: postgres }
spec: { selector: { app: postgres }, ports: [{ port: 5432 }] }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: minio }
spec:
  selector: { matchLabels: { app: minio } }
  template:
    metadata: { labels: { app: minio } }
    spec:
      containers:
        - name: minio
          image: minio/minio
          args: [server, /data]
          env:
            - { name: MINIO_ROOT_USER, value: aerugo-e2e }
            - { name: MINIO_ROOT_PASSWORD, value: aerugo-e2e-secret }
          ports: [{ containerPort: 9000 }]
          readinessProbe: { httpGet: { path: /minio/health/ready, port: 9000 } }
---
apiVersion: v1
kind: Service
metadata: { name: minio }
spec: { selector: { app: minio }, ports: [{ port: 9000 }] }
YAML
kubectl -n aerugo-deps rollout status deploy/postgres deploy/minio --timeout=180s

log "the Secrets the chart expects"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic aerugo-database \
  --from-literal=url=postgres://postgres:aerugo@postgres.aerugo-deps.svc:5432/aerugo --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create secret generic aerugo-s3 \
  --from-literal=accessKeyId=aerugo-e2e --from-literal=secretAccessKey=aerugo-e2e-secret --dry-run=client -o yaml | kubectl apply -f -

log "helm install"
"$HELM" upgrade --install aerugo "$ROOT/charts/aerugo" -n "$NS" --wait --timeout 5m \
  --set image.tag=e2e --set image.pullPolicy=Never \
  --set storage.endpoint=http://minio.aerugo-deps.svc:9000 \
  --set registry.create=true --set registry.redirect=Proxy \
  --set operator.registryHost="127.0.0.1:$PORT"
kubectl -n "$NS" wait registry/aerugo --for=condition=Ready --timeout=300s

log "a tenant: examples/acme.yaml"
# The organization's owner must exist; the site administrator comes from bootstrap.
kubectl -n "$NS" run aerugo-bootstrap --rm -i --restart=Never --image="$IMAGE" --image-pull-policy=Never \
  --overrides='{"spec":{"containers":[{"name":"aerugo-bootstrap","image":"'"$IMAGE"'","imagePullPolicy":"Never","args":["bootstrap","--admin-username","admin","--admin-password-file","/dev/stdin"],"stdin":true,"env":[{"name":"AERUGO_DATABASE_URL","valueFrom":{"secretKeyRef":{"name":"aerugo-database","key":"url"}}}]}]}}' \
  <<<"$(head -c 18 /dev/urandom | base64)"
kubectl apply -f "$ROOT/examples/acme.yaml"
kubectl -n team wait aeorg,aerepo,aekey --all --for=condition=Ready --timeout=120s

log "push and pull through a port-forward"
kubectl -n "$NS" port-forward svc/aerugo "$PORT:5000" >/dev/null &
PF=$!
sleep 3
user=$(kubectl -n team get secret ci-push -o jsonpath='{.data.username}' | base64 -d)
key=$(kubectl -n team get secret ci-push -o jsonpath='{.data.apiKey}' | base64 -d)
auth=$(mktemp)
kubectl -n team get secret acme-pull -o jsonpath='{.data.\.dockerconfigjson}' | base64 -d >"$auth"
layout=$(mktemp -d)/layout
python3 "$ROOT/e2e/fixtures/make_oci_layout.py" "$layout" --platforms linux/amd64 --layer-bytes 100000 --seed 1 >/dev/null
skopeo copy --dest-tls-verify=false --dest-creds "$user:$key" "oci:$layout:latest" "docker://127.0.0.1:$PORT/acme/team/app:v1"
skopeo copy --src-tls-verify=false --src-authfile "$auth" "docker://127.0.0.1:$PORT/acme/team/app:v1" "oci:$(mktemp -d):pulled"
if skopeo copy --dest-tls-verify=false --dest-authfile "$auth" "oci:$layout:latest" "docker://127.0.0.1:$PORT/acme/team/app:nope" 2>/dev/null; then
  echo "FAIL: the pull key pushed" >&2; exit 1
fi

log "deletions"
kubectl -n team delete apikey ci-push --wait
code=$(curl -s -o /dev/null -w '%{http_code}' -u "$user:$key" "http://127.0.0.1:$PORT/v2/acme/team/app/tags/list")
[ "$code" = 401 ] || { echo "FAIL: a deleted key answered $code" >&2; exit 1; }
log "kind e2e passed"

#!/usr/bin/env bash
# Renders the Kubernetes kustomizations and validates every object against the Kubernetes
# schemas offline (kubernetes-validate bundles them); the ServiceMonitor CRD is checked for
# its required shape by hand since no schema ships for it, and the PrometheusRule must hold
# exactly the groups of deploy/prometheus/tollgate-rules.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v kubectl >/dev/null || { echo "kubectl is needed to render kustomizations" >&2; exit 1; }
venv=target/deploy-venv
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kubernetes-validate==1.37.0'
fi
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
for k in deploy/kubernetes deploy/kubernetes/overlays/postgres; do
  name=$(echo "$k" | tr / _)
  kubectl kustomize "$k" > "$out/$name.yaml"
  python3 - "$out/$name.yaml" "$out/$name" <<'PY'
import sys, yaml, os
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
os.makedirs(sys.argv[2], exist_ok=True)
for i, d in enumerate(docs):
    kind = d["kind"]
    if kind == "ServiceMonitor":
        spec = d["spec"]
        assert d["apiVersion"] == "monitoring.coreos.com/v1", d["apiVersion"]
        assert spec["selector"]["matchLabels"] and spec["endpoints"][0]["port"], spec
        continue
    if kind == "PrometheusRule":
        assert d["apiVersion"] == "monitoring.coreos.com/v1", d["apiVersion"]
        rules = yaml.safe_load(open("deploy/prometheus/tollgate-rules.yaml"))["groups"]
        assert d["spec"]["groups"] == rules, "PrometheusRule differs from deploy/prometheus/tollgate-rules.yaml"
        continue
    with open(os.path.join(sys.argv[2], f"{i:02d}-{kind}.yaml"), "w") as f:
        yaml.safe_dump(d, f)
print(f"{sys.argv[1]}: {len(docs)} objects")
PY
  "$venv/bin/kubernetes-validate" --strict -k 1.30.0 "$out/$name"/*.yaml
done
# The ConfigMap's tollgate.yaml must be a config the binary accepts (paths that only exist in
# the pod are overridden).
BIN=${TOLLGATE_BIN:-target/debug/tollgate}
[ -x "$BIN" ] || cargo build -q
kubectl kustomize deploy/kubernetes | python3 -c '
import sys, yaml
for d in yaml.safe_load_all(sys.stdin):
    if d and d["kind"] == "ConfigMap" and "tollgate.yaml" in d.get("data", {}):
        sys.stdout.write(d["data"]["tollgate.yaml"])
' > "$out/tollgate.yaml"
TOLLGATE_TOKENS__FILES='[]' TOLLGATE_TOKENS__DATABASE=none "$BIN" check-config --config "$out/tollgate.yaml"
echo "deploy manifests: OK"

#!/usr/bin/env bash
# Lints a live /metrics scrape with promtool: starts the real binary (debug build) against a
# static upstream, sends known traffic (ok, 401, 403, 429, 502-free), scrapes, checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
fi
command -v promtool >/dev/null || { echo "promtool missing after install" >&2; exit 1; }
BIN=${TOLLGATE_BIN:-target/debug/tollgate}
[ -x "$BIN" ] || cargo build -q
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); PX=$(port); AD=$(port)
mkdir -p "$work/www" && echo hello > "$work/www/hello.txt"
(cd "$work/www" && exec python3 -m http.server "$UP" --bind 127.0.0.1 >/dev/null 2>&1) & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$UP/hello.txt" >/dev/null 2>&1 && break; sleep 0.1; done
cat > "$work/c.yaml" <<YAML
listen: 127.0.0.1:$PX
admin_listen: 127.0.0.1:$AD
upstream: {url: "http://127.0.0.1:$UP"}
tokens: {files: ["$work/tokens.yaml"], database: "sqlite://$work/t.db"}
hashing: {memory_kib: 64, iterations: 1, parallelism: 1}
rate_limit: {requests: 3, period: 1m}
YAML
echo "tokens:" > "$work/tokens.yaml"
"$BIN" --config "$work/c.yaml" token hash --name m --permission read --route '/hello.txt=read' >> "$work/tokens.yaml" 2> "$work/tok"
TOKEN=$(sed -n 's/^token: //p' "$work/tok")
"$BIN" --config "$work/c.yaml" serve > "$work/log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$AD/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$AD/readyz" >/dev/null || { cat "$work/log"; exit 1; }
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
expect() {
  local want=$1; shift
  local got; got=$(code "$@")
  [ "$got" = "$want" ] || { echo "expected $want, got $got: curl $*" >&2; cat "$work/log" >&2; exit 1; }
}
expect 401 "http://127.0.0.1:$PX/hello.txt"
expect 200 -u "token:$TOKEN" "http://127.0.0.1:$PX/hello.txt"
expect 403 -u "token:$TOKEN" "http://127.0.0.1:$PX/other"
for _ in 1 2; do code -u "token:$TOKEN" "http://127.0.0.1:$PX/hello.txt" >/dev/null; done
expect 429 -u "token:$TOKEN" "http://127.0.0.1:$PX/hello.txt"
curl -fs "http://127.0.0.1:$AD/metrics" > "$work/metrics"
promtool check metrics < "$work/metrics"
for m in tollgate_requests_total tollgate_request_duration_seconds_bucket tollgate_upstream_duration_seconds_bucket \
         tollgate_auth_cache_hits_total tollgate_auth_cache_misses_total tollgate_verifications_total \
         tollgate_verification_duration_seconds_bucket tollgate_rate_limited_total tollgate_tokens \
         tollgate_reloads_total tollgate_build_info tollgate_snapshot_generation \
         tollgate_upstream_addresses tollgate_upstream_resolutions_total tollgate_client_aborts_total \
         tollgate_tokens_expiring tollgate_tokens_expired tollgate_webhook_deliveries_total \
         tollgate_usage_overflow_total tollgate_usage_entries_written_total; do
  grep -q "^$m" "$work/metrics" || { echo "metric $m missing from the scrape" >&2; exit 1; }
done
grep -q "$TOKEN" "$work/metrics" "$work/log" && { echo "a secret reached metrics or logs" >&2; exit 1; }
echo "promtool check metrics: OK ($(grep -vc '^#' "$work/metrics") samples)"

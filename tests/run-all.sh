#!/usr/bin/env bash
# Every test Tollgate has: unit and integration tests (the real binary against real
# upstreams, a private PostgreSQL cluster included), a promtool lint of a live scrape, the
# alert rules' promtool unit tests, the
# Kubernetes manifests, the dashboard in headless Chromium, and real package-manager clients.
# Installs what a fresh machine lacks; fails on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }

# The engines the Rust suites start themselves: real stores for tests/paths.rs (Tomcat and
# Jetty bring a Java runtime) and redis-server for tests/redis.rs.
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
[ -f /usr/share/tomcat10/bin/catalina.sh ] || need_apt+=(tomcat10)
[ -f /usr/share/jetty9/start.jar ] || need_apt+=(jetty9)
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}"
fi

step "cargo test --all-targets"
cargo test --all-targets
export TOLLGATE_BIN="$PWD/target/debug/tollgate"

step "metrics: promtool check metrics on a live scrape"
bash tests/metrics/promtool.sh

step "alerts and dashboard: promtool check/test rules, metric names"
bash tests/metrics/rules.sh

step "deploy: kustomize render + Kubernetes schema validation"
bash tests/deploy/check.sh

step "dashboard: headless Chromium"
bash tests/ui/run.sh

step "package managers: real clients through the proxy"
bash tests/clients/run.sh

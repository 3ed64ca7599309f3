#!/usr/bin/env bash
# Browser test of the token dashboard. Installs what a fresh machine lacks (Debian's
# chromium, curl, the pinned playwright-core from package-lock.json), builds the binary unless
# TOLLGATE_BIN points at one, and runs tests/ui/dashboard.test.mjs under node:test.
# Screenshots land in target/test-output/ui/ (override with UI_TEST_OUTPUT).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ -n "${TOLLGATE_BIN:-}" ]; then
  TOLLGATE_BIN="$(realpath "$TOLLGATE_BIN")"
  export TOLLGATE_BIN
fi

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "node $node_major is too old: the dashboard test needs node >= 20" >&2
  exit 1
fi

cd "$here"
want="$(node -p 'require("./package-lock.json").packages["node_modules/playwright-core"].version')"
have="$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch { "" }')"
if [ "$have" != "$want" ]; then
  echo "== npm ci (playwright-core $want)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

if [ -z "${TOLLGATE_BIN:-}" ]; then
  echo "== cargo build"
  (cd "$repo" && cargo build --quiet)
fi

echo "== dashboard browser test"
exec timeout 120 node --test --test-concurrency=1 --test-reporter=spec "$here/dashboard.test.mjs"

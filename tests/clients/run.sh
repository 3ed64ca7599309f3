#!/usr/bin/env bash
# Real-client tests: real package stores with their own auth off, one Tollgate in front
# of each, and the real clients configured the way their docs say — composer, pip, twine, npm,
# cargo, Maven and curl. Every scenario asserts the real effect: the installed code runs, the
# uploaded file is in the store, and on a refusal nothing reached the store (its access log and
# its directory are unchanged).
#
#   bash tests/clients/run.sh            # installs what is missing, builds tollgate, runs all
#   TOLLGATE_BIN=target/debug/tollgate   # use this binary instead of `cargo build`
#   CLIENTS_KEEP=1                       # keep the work directory (logs, stores) after the run
#   CLIENTS_ONLY="curl npm"              # run only these groups (curl composer pypi npm maven cargo oidc)
#
# Stores: nginx (static Composer repository, static cargo sparse registry whose config.json does
# NOT say auth-required, Maven layout with PUT), pypiserver (uploads open: -a . -P .) and a small
# npm registry (npm_registry.py). Tokens live in one SQLite database that every Tollgate reads.
# Installs (idempotent; fails loudly when something cannot be installed): Debian's nginx,
# php-cli, php-curl, composer, unzip, a JDK, Maven's deploy and dependency plugins (and junit4,
# which the latter needs), nodejs/npm; pypiserver, passlib and twine (pinned) in a virtualenv under
# ~/.cache/tollgate-client-tests/venv (CLIENTS_CACHE). Bounded: every client call has a timeout,
# the whole run stops after CLIENTS_TIME_LIMIT seconds (default 480), and everything started is
# stopped on exit.
set -euo pipefail
export CI="${CI:-true}"
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${CLIENTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-client-tests}"
limit="${CLIENTS_TIME_LIMIT:-480}"
only=" ${CLIENTS_ONLY:-curl composer pypi npm maven cargo oidc} "
started=$SECONDS

say() { printf '== %s\n' "$*"; }
die() { printf '\nFATAL: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- processes and clean-up
work="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-clients.XXXXXX")"
pids=()
watchdog=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null || true
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${CLIENTS_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    echo "work directory kept: $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'echo "FATAL: time limit of ${limit}s reached (or terminated)" >&2; exit 124' TERM
# the watchdog: TERM to this script after $limit seconds (its sleep ends with it)
( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$limit" & sp=$!
  wait "$sp" && kill -TERM $$ 2>/dev/null ) &
watchdog=$!

# t SECONDS CMD…: a bounded command
t() { local s=$1; shift; timeout --kill-after=5 "$s" "$@"; }

# ---------------------------------------------------------------- tools
say "tools"
need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
{ command -v nginx >/dev/null 2>&1 && [ -f /etc/nginx/mime.types ]; } || need_apt+=(nginx)
command -v php >/dev/null 2>&1 || need_apt+=(php-cli)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
{ command -v php >/dev/null 2>&1 && php -m 2>/dev/null | grep -qx curl; } || need_apt+=(php-curl)
command -v composer >/dev/null 2>&1 || need_apt+=(composer)
command -v javac >/dev/null 2>&1 || need_apt+=(default-jdk-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
mvn_repo=/usr/share/maven-repo
# plugin_version NAME: the version of Debian's Maven plugin NAME that has a jar ("" if none)
plugin_version() {
  local jar
  jar=$(ls "$mvn_repo/org/apache/maven/plugins/$1"/*/"$1"-*.jar 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$jar" ] && basename "$(dirname "$jar")" || true
}
[ -n "$(plugin_version maven-deploy-plugin)" ] || need_apt+=(libmaven-deploy-plugin-java)
[ -n "$(plugin_version maven-dependency-plugin)" ] || need_apt+=(libmaven-dependency-plugin-java)
[ -e "$mvn_repo/junit/junit/4.x" ] || need_apt+=(junit4)   # the dependency plugin needs it
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  t 300 apt-get update -qq || die "apt-get update failed"
  t 400 apt-get install -y -qq "${need_apt[@]}" >"$work/apt.log" 2>&1 \
    || { tail -20 "$work/apt.log" >&2; die "apt-get install ${need_apt[*]} failed"; }
fi
for tool in curl nginx php unzip composer javac jar java mvn node npm python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed and could not be installed"
done
deploy_plugin=$(plugin_version maven-deploy-plugin)
dependency_plugin=$(plugin_version maven-dependency-plugin)
[ -n "$deploy_plugin" ] || die "maven-deploy-plugin is missing from Debian's $mvn_repo"
[ -n "$dependency_plugin" ] || die "maven-dependency-plugin is missing from Debian's $mvn_repo"
[ -e "$mvn_repo/junit/junit/4.x" ] || die "junit 4.x is missing from Debian's $mvn_repo"

venv="$cache/venv"
pip_pins=(pypiserver==2.4.2 passlib==1.7.4 twine==7.0.0)
venv_ok() {
  local frozen pin
  frozen=$("$venv/bin/pip" freeze 2>/dev/null) || return 1
  for pin in "${pip_pins[@]}"; do grep -qix -- "$pin" <<<"$frozen" || return 1; done
}
if ! venv_ok; then
  say "virtualenv $venv: ${pip_pins[*]}"
  mkdir -p "$cache"
  t 120 python3 -m venv --clear "$venv" || die "python3 -m venv failed"
  env -u PIP_FIND_LINKS PIP_NO_INPUT=1 timeout -k 5 400 "$venv/bin/pip" install -q "${pip_pins[@]}" \
    || die "pip install ${pip_pins[*]} failed"
fi
[ -x "$venv/bin/pypi-server" ] && [ -x "$venv/bin/twine" ] || die "pypiserver/twine missing from $venv"

if [ -n "${TOLLGATE_BIN:-}" ]; then
  bin="$(cd "$(dirname "$TOLLGATE_BIN")" && pwd)/$(basename "$TOLLGATE_BIN")"
else
  say "cargo build"
  (cd "$repo" && t 450 cargo build --quiet) || die "cargo build failed"
  bin="$repo/target/debug/tollgate"
fi
[ -x "$bin" ] || die "no tollgate binary at $bin"
# The Tollgates read TOLLGATE_* from the environment: only their config files count here.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^TOLLGATE_' || true)
printf '   %s\n' "$(php --version | head -1)" "$(composer --version 2>/dev/null | tail -1)" \
  "mvn $(mvn --version 2>/dev/null | sed -n '1s/.*Maven \([0-9.]*\).*/\1/p')" \
  "maven-deploy-plugin $deploy_plugin, maven-dependency-plugin $dependency_plugin" \
  "node $(node --version), npm $(npm --version 2>/dev/null)" "$("$venv/bin/twine" --version | head -1)" \
  "pypiserver $("$venv/bin/python" -c 'import pypiserver; print(pypiserver.__version__)')" \
  "$(cargo --version)" "$(nginx -v 2>&1)" "tollgate: $bin"

# ---------------------------------------------------------------- ports, stores
# Free loopback ports, all held open together while chosen so that none is handed out twice.
mapfile -t ports < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(20):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
)
composer_store=${ports[0]} cargo_store=${ports[1]} maven_store=${ports[2]}
pypi_store=${ports[3]} npm_store=${ports[4]}
declare -A proxy admin store
i=5
for s in composer pypi npm cargo maven cargo-plain; do
  proxy[$s]=${ports[$i]}; admin[$s]=${ports[$((i + 1))]}; i=$((i + 2))
done
issuer_port=${ports[17]}   # the OIDC issuer of the trusted-publishing scenarios
store=([composer]=$composer_store [cargo]=$cargo_store [maven]=$maven_store [pypi]=$pypi_store [npm]=$npm_store)
P() { printf 'http://127.0.0.1:%s' "${proxy[$1]}"; }   # a Tollgate's base URL

mkdir -p "$work"/{logs,stores,nginx/tmp,tollgate,out,build}
say "fixtures and stores in $work"
cp -r "$here/fixtures/cargo/tg_hello" "$work/build/"
CARGO_HOME="$work/build/cargo-home" CARGO_TARGET_DIR="$work/build/target" \
  t 120 cargo package --quiet --offline --no-verify --allow-dirty \
  --manifest-path "$work/build/tg_hello/Cargo.toml" || die "cargo package of the fixture crate failed"
python3 "$here/build_stores.py" "$here/fixtures" "$work/stores" \
  "$work/build/target/package/tg_hello-0.1.0.crate" \
  --composer-proxy "$(P composer)" --cargo-proxy "$(P cargo)"
mkdir -p "$work/stores/maven/files"
echo "hello from the file store" >"$work/stores/maven/files/hello.txt"

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root root;"   # workers must write the Maven store
sed -e "s|@WORK@|$work|g" -e "s|@USER@|$user_line|" -e "s|@COMPOSER_PORT@|$composer_store|" \
  -e "s|@CARGO_PORT@|$cargo_store|" -e "s|@MAVEN_PORT@|$maven_store|" \
  "$here/nginx.conf.template" >"$work/nginx/nginx.conf"
for d in body proxy fastcgi uwsgi scgi; do mkdir -p "$work/nginx/tmp/$d"; done
touch "$work/logs"/{composer,cargo,maven,pypi,npm}-store.log
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -t -q \
  || die "nginx rejected its configuration"
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" \
  >"$work/logs/nginx.out" 2>&1 &
pids+=($!)
"$venv/bin/pypi-server" run -i 127.0.0.1 -p "$pypi_store" -a . -P . -v \
  --log-file "$work/logs/pypi-store.log" "$work/stores/pypi" >"$work/logs/pypi.out" 2>&1 &
pids+=($!)
python3 "$here/npm_registry.py" --port "$npm_store" --dir "$work/stores/npm" \
  --log "$work/logs/npm-store.log" >"$work/logs/npm.out" 2>&1 &
pids+=($!)

# The OIDC issuer of the trusted-publishing scenarios: its discovery document and JWKS (the
# public key of tests/fixtures/oidc/rsa-1.pem) as static files; job tokens are signed below.
issuer_url="http://127.0.0.1:$issuer_port"
mkdir -p "$work/issuer/.well-known"
printf '{"issuer": "%s", "jwks_uri": "%s/.well-known/jwks"}\n' "$issuer_url" "$issuer_url" \
  >"$work/issuer/.well-known/openid-configuration"
printf '{"keys": [%s]}\n' "$(cat "$repo/tests/fixtures/oidc/rsa-1.jwk.json")" >"$work/issuer/.well-known/jwks"
python3 -m http.server "$issuer_port" --bind 127.0.0.1 --directory "$work/issuer" \
  >"$work/logs/issuer.log" 2>&1 &
pids+=($!)

# wait_http URL: until it answers at all (any status), 20 s at most
wait_http() {
  local _
  for _ in $(seq 100); do
    curl -s -o /dev/null -m 2 "$1" && return 0
    sleep 0.2
  done
  die "nothing answers at $1"
}
wait_http "http://127.0.0.1:$composer_store/packages.json"
wait_http "http://127.0.0.1:$pypi_store/simple/"
wait_http "http://127.0.0.1:$npm_store/tg-hello"
wait_http "$issuer_url/.well-known/openid-configuration"

# ---------------------------------------------------------------- Tollgates and tokens
db="$work/tollgate/tokens.db"
cargo_index_line="  cargo_index: /index/"
write_config() { # NAME UPSTREAM_PORT [extra upstream line]
  cat >"$work/tollgate/$1.yaml" <<EOF
listen: 127.0.0.1:${proxy[$1]}
admin_listen: 127.0.0.1:${admin[$1]}
upstream:
  url: http://127.0.0.1:$2
${3:-}
tokens:
  files: []
  database: sqlite://$db
hashing: {memory_kib: 64, iterations: 1, parallelism: 1}
rate_limit: unlimited
log: {format: json}
oidc:
  enabled: true
  audience: tollgate-clients
  policies:
    - {name: release, issuer: "http://127.0.0.1:$issuer_port", claims: {repository: acme/widget, ref: "refs/tags/v*"}, permission: write}
    - {name: short, issuer: "http://127.0.0.1:$issuer_port", claims: {repository: acme/widget, ref: "refs/tags/v*"}, permission: write, lifetime: 2s}
EOF
}
# Package scopes: each store's layout (only tokens with --package are affected).
write_config composer "$composer_store" "  layouts: [{kind: composer, prefix: /}]"
write_config pypi "$pypi_store" "  layouts: [{kind: pypi, prefix: /}]"
write_config npm "$npm_store" "  layouts: [{kind: npm, prefix: /}]"
write_config maven "$maven_store" "  layouts: [{kind: maven, prefix: /maven2/}]"
write_config cargo "$cargo_store" "$cargo_index_line
  layouts: [{kind: cargo, prefix: /index/, dist: ['/crates/{name}/{name}-{version}.crate']}]"
write_config cargo-plain "$cargo_store"   # the same store, without cargo_index
cfg="$work/tollgate/composer.yaml"   # the CLI works on the shared database through any config
for s in composer pypi npm cargo maven cargo-plain; do
  "$bin" check-config --config "$work/tollgate/$s.yaml" >"$work/logs/check-$s.log" 2>&1 \
    || { cat "$work/logs/check-$s.log" >&2; die "check-config rejected the $s configuration"; }
done

# token NAME PERMISSION [--route …]…: creates it and prints the token
token() {
  local name=$1 perm=$2; shift 2
  "$bin" --config "$cfg" token create --name "$name" --permission "$perm" "$@" --output json \
    2>&1 >"$work/tollgate/$name.json" | sed -n 's/^token: //p'
}
# Every token is made before the Tollgates start (a token made later is live within a second).
declare -A TOK
set -f   # the routes hold globs
while read -r name perm routes; do
  # shellcheck disable=SC2086
  TOK[$name]=$(token "$name" "$perm" $routes)
  [[ ${TOK[$name]} == tok_* ]] || die "token create $name did not print a token"
done <<'EOF'
reader read
writer write
composer-acme read --route /packages.json=read --route /p2/acme/*=read --route /dist/acme/**=read
curl-revocable read
composer-revocable read
pip-revocable read
pip-fenced read --allow-ip 127.0.0.1/32
twine-revocable write
npm-revocable read
maven-revocable read
cargo-revocable read
composer-pkg read --package acme/*
pip-pkg read --package acme-*
twine-pkg write --package acme-*
npm-pkg read --package @acme/*
npm-pkg-write write --package @acme/*
cargo-pkg read --package tg_*
cargo-other read --package acme_*
maven-pkg read --package com.example:*
maven-other write --package com.acme:*
EOF
set +f
READ=${TOK[reader]} WRITE=${TOK[writer]}
# A wrong token: well-formed, of an existing token id, but with a secret that is no longer (or
# never was) its own — `stale` is regenerated, and its first token is kept. TYPO is the reader's
# token with its last character changed, so its checksum does not match.
WRONG=$(token stale read)
"$bin" --config "$cfg" token regenerate stale >/dev/null 2>&1 || die "token regenerate failed"
last=${READ: -1}; [ "$last" = A ] && repl=B || repl=A
TYPO="${READ%?}$repl"

for s in composer pypi npm cargo maven cargo-plain; do
  "$bin" serve --config "$work/tollgate/$s.yaml" >"$work/logs/tollgate-$s.log" 2>&1 &
  pids+=($!)
done
for s in composer pypi npm cargo maven cargo-plain; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:${admin[$s]}/readyz")" = 200 ] && break
    sleep 0.2
  done
  [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:${admin[$s]}/readyz")" = 200 ] \
    || { tail -20 "$work/logs/tollgate-$s.log" >&2; die "the $s Tollgate did not become ready"; }
done
say "stores and Tollgates up ($((SECONDS - started)) s)"

# ---------------------------------------------------------------- scenario machinery
results=()
passed=0 failed=0
# scenario GROUP NAME FUNCTION [ARGS…]: runs FUNCTION in a subshell with set -e; its output goes
# to $work/out/GROUP-N.log and is shown when it fails.
scenario() {
  local group=$1 name=$2 fn=$3; shift 3
  local out="$work/out/$group-$((${#results[@]} + 1)).log" rc t0=$SECONDS
  printf '%-9s %-58s ' "$group" "$name"
  set +e
  ( set -euo pipefail; "$fn" "$@" ) >"$out" 2>&1
  rc=$?
  set -e
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1)); results+=("$group|$name|PASS|$((SECONDS - t0))s")
    echo "PASS ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1)); results+=("$group|$name|FAIL|$((SECONDS - t0))s")
    echo "FAIL ($((SECONDS - t0)) s)"
    sed 's/^/    | /' "$out" | tail -40
  fi
}
fail() { echo "ASSERTION FAILED: $*"; exit 1; }
# lines STORE: how many requests the store has logged
lines() { wc -l <"$work/logs/$1-store.log"; }
# writes STORE: how many PUT/POST requests the store has logged
writes() { grep -c -E '(^|")(PUT|POST) ' "$work/logs/$1-store.log" || true; }
expect_output() { # PATTERN FILE
  grep -q -E -- "$1" "$2" || fail "output lacks /$1/"
}
# expect_refused OUTPUT PATTERN CMD…: the client must fail, saying PATTERN
expect_refused() {
  local out=$1 pat=$2; shift 2
  if "$@" >"$out" 2>&1; then cat "$out"; fail "the client succeeded: $*"; fi
  cat "$out"
  expect_output "$pat" "$out"
}
# revoke NAME GROUP: revokes the token and waits until that Tollgate refuses it (5 s at most)
revoke() {
  "$bin" --config "$cfg" token revoke "$1" >/dev/null
  local code=""
  for _ in $(seq 50); do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H "Authorization: Bearer ${TOK[$1]}" \
      "$(P "$2")/_tollgate/whoami")
    [ "$code" = 401 ] && return 0
    sleep 0.1
  done
  fail "the $2 Tollgate still answers $code for the revoked token $1"
}
in_group() { [[ $only == *" $1 "* ]]; }

# ---------------------------------------------------------------- curl (Maven store's plain files)
curl_get() { # CREDENTIAL-ARGS… ; prints the status
  curl -s -m 10 -o "$work/out/curl-body" -D "$work/out/curl-headers" -w '%{http_code}' "$@"
}
s_curl_forms() {
  local url code; url="$(P maven)/files/hello.txt"
  local -a forms=("-u token:$READ" "-u __token__:$READ" "-H Authorization: Bearer $READ" "-H Authorization: $READ")
  for form in "${forms[@]}"; do
    code=$(curl_get "${form%% *}" "${form#* }" "$url")
    echo "${form%%tok_*}T -> $code"
    [ "$code" = 200 ] || fail "${form%%tok_*}T: $code"
    grep -qx 'hello from the file store' "$work/out/curl-body" || fail "wrong body"
  done
}
s_curl_no_credentials() {
  local before; before=$(lines maven)
  code=$(curl_get "$(P maven)/files/hello.txt"); cat "$work/out/curl-headers" "$work/out/curl-body"
  [ "$code" = 401 ] || fail "status $code"
  grep -qi '^www-authenticate: Basic realm="packages"' "$work/out/curl-headers" || fail "no challenge"
  for tok in "$WRONG" "$TYPO" "not-a-token"; do
    code=$(curl_get -u "token:$tok" "$(P maven)/files/hello.txt"); cat "$work/out/curl-body"
    [ "$code" = 401 ] || fail "wrong token: status $code"
    grep -qi '^www-authenticate: Basic realm="packages"' "$work/out/curl-headers" || fail "no challenge"
  done
  [ "$(lines maven)" = "$before" ] || fail "a refused request reached the store"
}
s_curl_put_write() {
  echo "uploaded by curl" >"$work/out/up.txt"
  code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -u "token:$WRITE" -T "$work/out/up.txt" \
    "$(P maven)/files/uploaded.txt")
  [ "$code" = 201 ] || fail "status $code"
  cmp "$work/out/up.txt" "$work/stores/maven/files/uploaded.txt" || fail "the store lacks the file"
}
s_curl_put_refused() {
  local before; before=$(lines maven)
  code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -u "token:$READ" -T "$work/out/up.txt" \
    "$(P maven)/files/by-reader.txt")
  [ "$code" = 403 ] || fail "read token PUT: $code"
  code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -u "token:$WRONG" -T "$work/out/up.txt" \
    "$(P maven)/files/by-wrong.txt")
  [ "$code" = 401 ] || fail "wrong token PUT: $code"
  code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -T "$work/out/up.txt" "$(P maven)/files/by-nobody.txt")
  [ "$code" = 401 ] || fail "PUT without credentials: $code"
  [ "$(lines maven)" = "$before" ] || fail "a refused request reached the store"
  ! ls "$work/stores/maven/files/by-"* 2>/dev/null || fail "a refused file is in the store"
}
s_curl_revoked() {
  local tok=${TOK[curl-revocable]}
  code=$(curl_get -u "token:$tok" "$(P maven)/files/hello.txt"); [ "$code" = 200 ] || fail "before: $code"
  revoke curl-revocable maven
  code=$(curl_get -u "token:$tok" "$(P maven)/files/hello.txt"); cat "$work/out/curl-body"
  [ "$code" = 401 ] || fail "after revocation: $code"
}
if in_group curl; then
  say "curl"
  scenario curl "GET with token:T, __token__:T, Bearer T, bare T" s_curl_forms
  scenario curl "no / wrong / mistyped credential: 401 + challenge, store untouched" s_curl_no_credentials
  scenario curl "write token PUT -T: 201, file in the store" s_curl_put_write
  scenario curl "read/wrong/no token PUT: 403/401, store untouched" s_curl_put_refused
  scenario curl "revoked token: 200 before, 401 after" s_curl_revoked
fi

# ---------------------------------------------------------------- Composer
# composer_run DIR TOKEN: a project requiring acme/hello from the Tollgate, auth.json written
# with `composer config http-basic.HOST:PORT token T`, then `composer install`.
composer_env() {
  env COMPOSER_HOME="$1/.composer-home" COMPOSER_CACHE_DIR="$1/.composer-cache" \
    COMPOSER_NO_INTERACTION=1 COMPOSER_ALLOW_SUPERUSER=1 COMPOSER_DISABLE_XDEBUG_WARN=1 "${@:2}"
}
composer_project() {
  local dir=$1 tok=$2
  mkdir -p "$dir"
  cat >"$dir/composer.json" <<EOF
{
    "name": "example/consumer",
    "repositories": [
        {"type": "composer", "url": "$(P composer)"},
        {"packagist.org": false}
    ],
    "require": {"acme/hello": "^1.0"},
    "config": {"secure-http": false}
}
EOF
  [ "$tok" = - ] && return 0   # the caller gives COMPOSER_AUTH instead
  (cd "$dir" && composer_env "$dir" timeout -k 5 30 composer config http-basic."127.0.0.1:${proxy[composer]}" token "$tok")
  cat "$dir/auth.json"
}
composer_install() { (cd "$1" && composer_env "$1" timeout -k 5 120 composer install --no-progress --no-ansi); }
s_composer_read() {
  local dir="$work/composer-read"
  composer_project "$dir" "$READ" >/dev/null
  composer_install "$dir"
  out=$(cd "$dir" && php -r 'require "vendor/autoload.php"; echo \Acme\Hello\Greeter::hello(), "\n";')
  echo "php: $out"
  [ "$out" = "hello from acme/hello" ] || fail "the installed code did not run"
}
s_composer_scoped() {
  local dir="$work/composer-scoped" tok
  tok=${TOK[composer-acme]}
  composer_project "$dir" - >/dev/null
  # this time the credential comes from COMPOSER_AUTH (as in CI), not from auth.json
  COMPOSER_AUTH="{\"http-basic\": {\"127.0.0.1:${proxy[composer]}\": {\"username\": \"token\", \"password\": \"$tok\"}}}" \
    composer_install "$dir"
  [ ! -e "$dir/auth.json" ] || fail "auth.json exists"
  (cd "$dir" && php -r 'require "vendor/autoload.php"; echo \Acme\Hello\Greeter::hello(), "\n";') \
    | grep -qx 'hello from acme/hello' || fail "the installed code did not run"
  code=$(curl -s -o /dev/null -w '%{http_code}' -u "token:$tok" "$(P composer)/p2/globex/other.json")
  [ "$code" = 403 ] || fail "a route outside acme/ answered $code"
}
s_composer_wrong() {
  local dir="$work/composer-wrong" before; before=$(lines composer)
  composer_project "$dir" "$WRONG" >/dev/null
  expect_refused "$work/out/composer-wrong.txt" 'required authentication' composer_install "$dir"
  [ "$(lines composer)" = "$before" ] || fail "a refused request reached the store"
  [ ! -d "$dir/vendor/acme" ] || fail "the package was installed"
}
s_composer_revoked() {
  local tok=${TOK[composer-revocable]}
  composer_project "$work/composer-rev1" "$tok" >/dev/null
  composer_install "$work/composer-rev1"
  revoke composer-revocable composer
  composer_project "$work/composer-rev2" "$tok" >/dev/null
  expect_refused "$work/out/composer-rev.txt" 'required authentication' composer_install "$work/composer-rev2"
  [ ! -d "$work/composer-rev2/vendor/acme" ] || fail "the package was installed"
}
composer_project_for() { # DIR TOKEN PACKAGE: a project requiring PACKAGE
  composer_project "$1" "$2" >/dev/null
  sed -i "s|\"acme/hello\": \"^1.0\"|\"$3\": \"^1.0\"|" "$1/composer.json"
}
s_composer_packages() {
  local tok=${TOK[composer-pkg]} dir="$work/composer-pkg"
  composer_project_for "$dir" "$tok" acme/hello
  composer_install "$dir"
  (cd "$dir" && php -r 'require "vendor/autoload.php"; echo \Acme\Hello\Greeter::hello(), "\n";') \
    | grep -qx 'hello from acme/hello' || fail "the installed code did not run"
  # globex/gadget: not in the filtered listing, so Composer's own "could not be found"
  composer_project_for "$work/composer-pkg-globex" "$tok" globex/gadget
  expect_refused "$work/out/composer-pkg-globex.txt" 'could not be found' \
    composer_install "$work/composer-pkg-globex"
  [ ! -d "$work/composer-pkg-globex/vendor/globex" ] || fail "globex/gadget was installed"
  # the same project installs with an unscoped token
  composer_project_for "$work/composer-pkg-open" "$READ" globex/gadget
  composer_install "$work/composer-pkg-open"
  # composer show -a lists only acme/*
  (cd "$dir" && composer_env "$dir" timeout -k 5 60 composer show -a -N --no-ansi) \
    >"$work/out/composer-show.txt" 2>&1 || { cat "$work/out/composer-show.txt"; fail "composer show -a"; }
  cat "$work/out/composer-show.txt"
  grep -qx 'acme/hello' "$work/out/composer-show.txt" || fail "acme/hello not listed"
  ! grep -q 'globex' "$work/out/composer-show.txt" || fail "globex/gadget listed"
  # the Satis-style include lists only acme/* for the scoped token, both for the reader
  local inc; inc=$(ls "$work/stores/composer/include/")
  curl -s -m 10 -u "token:$tok" "$(P composer)/include/$inc" | tee "$work/out/include.json"
  grep -q 'acme/hello' "$work/out/include.json" || fail "acme/hello missing from the include"
  ! grep -q 'globex' "$work/out/include.json" || fail "globex/gadget in the scoped include"
  curl -s -m 10 -u "token:$READ" "$(P composer)/include/$inc" | grep -q globex/gadget \
    || fail "the unscoped include lacks globex/gadget"
  # and the files themselves: 403
  code=$(curl -s -o /dev/null -w '%{http_code}' -u "token:$tok" "$(P composer)/dist/globex/gadget/globex-gadget-1.0.0.zip")
  [ "$code" = 403 ] || fail "the globex dist answered $code"
}
if in_group composer; then
  say "composer ($(P composer) → nginx :$composer_store)"
  scenario composer "package scope acme/*: installs acme/hello, not globex/gadget; show -a" s_composer_packages
  scenario composer "read token: composer install, php runs the code" s_composer_read
  scenario composer "COMPOSER_AUTH, token routed to acme/*: installs; 403 elsewhere" s_composer_scoped
  scenario composer "wrong token: install fails (401), store untouched" s_composer_wrong
  scenario composer "revoked token: installs before, fails after" s_composer_revoked
fi

# ---------------------------------------------------------------- pip and twine (pypiserver)
pyenv_clean() { env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
  PIP_NO_INPUT=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
pip_install() { # DIR TOKEN
  pyenv_clean timeout -k 5 120 "$venv/bin/pip" install --no-deps --target "$1" \
    --index-url "http://token:$2@127.0.0.1:${proxy[pypi]}/simple/" tg-hello==1.0.0
}
twine_upload() { # TOKEN
  pyenv_clean TWINE_PASSWORD="$1" timeout -k 5 120 "$venv/bin/twine" upload --non-interactive \
    --disable-progress-bar --repository-url "$(P pypi)/" -u __token__ \
    "$work/artifacts/tg_upload-1.0.0-py3-none-any.whl"
}
uploaded="$work/stores/pypi/tg_upload-1.0.0-py3-none-any.whl"
s_pip_read() {
  # the index URL from a pip.conf this time
  printf '[global]\nindex-url = http://token:%s@127.0.0.1:%s/simple/\n' "$READ" "${proxy[pypi]}" \
    >"$work/pip.conf"
  pyenv_clean PIP_CONFIG_FILE="$work/pip.conf" timeout -k 5 120 "$venv/bin/pip" install --no-deps \
    --target "$work/pip-read" tg-hello==1.0.0
  out=$(PYTHONPATH="$work/pip-read" python3 -c 'import tg_hello; print(tg_hello.hello())')
  echo "python: $out"
  [ "$out" = "hello from tg-hello" ] || fail "the installed code did not run"
}
s_pip_wrong() {
  local before; before=$(lines pypi)
  expect_refused "$work/out/pip-wrong.txt" '401 Error, Credentials not correct' pip_install "$work/pip-wrong" "$WRONG"
  [ "$(lines pypi)" = "$before" ] || fail "a refused request reached the store"
  [ ! -d "$work/pip-wrong/tg_hello" ] || fail "the package was installed"
}
pip_install_env() { # DIR TOKEN: the index URL from PIP_INDEX_URL, user __token__
  pyenv_clean PIP_INDEX_URL="http://__token__:$2@127.0.0.1:${proxy[pypi]}/simple/" \
    timeout -k 5 120 "$venv/bin/pip" install --no-deps --target "$1" tg-hello==1.0.0
}
s_pip_revoked() {
  local tok=${TOK[pip-revocable]}
  pip_install_env "$work/pip-rev1" "$tok"
  PYTHONPATH="$work/pip-rev1" python3 -c 'import tg_hello; print(tg_hello.hello())'
  revoke pip-revocable pypi
  expect_refused "$work/out/pip-rev.txt" '401 Error, Credentials not correct' pip_install_env "$work/pip-rev2" "$tok"
}
# pip_from SOURCE DIR TOKEN: pip itself, its connections made from SOURCE (127.0.0.0/8 all
# reaches the listener; pip has no source-address option, so every socket it connects is bound
# to SOURCE first).
pip_from() {
  pyenv_clean timeout -k 5 120 "$venv/bin/python" -c '
import runpy, socket, sys
source = sys.argv.pop(1)
connect = socket.socket.connect
def bound(self, address):
    if self.family == socket.AF_INET and self.getsockname()[1] == 0:
        self.bind((source, 0))
    return connect(self, address)
socket.socket.connect = bound
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)
' "$1" install --no-deps --target "$2" \
    --index-url "http://token:$3@127.0.0.1:${proxy[pypi]}/simple/" tg-hello==1.0.0
}
s_pip_allowlist() {
  local tok=${TOK[pip-fenced]}
  pip_from 127.0.0.1 "$work/pip-fenced-ok" "$tok"
  PYTHONPATH="$work/pip-fenced-ok" python3 -c 'import tg_hello; print(tg_hello.hello())'
  local before; before=$(lines pypi)
  # pip reports a refused index page as "no matching distribution"; the audit line says why
  expect_refused "$work/out/pip-fenced.txt" 'No matching distribution found' \
    pip_from 127.0.0.2 "$work/pip-fenced-no" "$tok"
  [ "$(lines pypi)" = "$before" ] || fail "a refused request reached the store"
  [ ! -d "$work/pip-fenced-no/tg_hello" ] || fail "the package was installed"
  # the refusal is the allowlist's, for the address pip really came from
  grep -q '"outcome":"ip_not_allowed"' "$work/logs/tollgate-pypi.log" || fail "no ip_not_allowed audit line"
  grep '"outcome":"ip_not_allowed"' "$work/logs/tollgate-pypi.log" | grep '"status":403' \
    | grep -q '"client":"127.0.0.2"' || fail "the refusal is not a 403 naming 127.0.0.2"
}
s_twine_read() {
  local before; before=$(writes pypi)
  expect_refused "$work/out/twine-read.txt" '403 Forbidden' twine_upload "$READ"
  [ "$(writes pypi)" = "$before" ] || fail "the upload reached the store"
  [ ! -e "$uploaded" ] || fail "the file is in the store"
}
s_twine_wrong() {
  local before; before=$(lines pypi)
  expect_refused "$work/out/twine-wrong.txt" '401 Unauthorized' twine_upload "$WRONG"
  [ "$(lines pypi)" = "$before" ] || fail "a refused request reached the store"
  [ ! -e "$uploaded" ] || fail "the file is in the store"
}
s_twine_revoked() {
  local tok=${TOK[twine-revocable]}
  code=$(curl -s -o /dev/null -w '%{http_code}' -u "__token__:$tok" "$(P pypi)/simple/")
  [ "$code" = 200 ] || fail "before: $code"
  revoke twine-revocable pypi
  expect_refused "$work/out/twine-rev.txt" '401 Unauthorized' twine_upload "$tok"
  [ ! -e "$uploaded" ] || fail "the file is in the store"
}
s_twine_write() {
  twine_upload "$WRITE"
  cmp "$work/artifacts/tg_upload-1.0.0-py3-none-any.whl" "$uploaded" || fail "the store lacks the file"
  # and pip installs what was uploaded, with a read token
  pyenv_clean timeout -k 5 120 "$venv/bin/pip" install --no-deps --target "$work/pip-uploaded" \
    --index-url "http://token:$READ@127.0.0.1:${proxy[pypi]}/simple/" tg-upload==1.0.0
  PYTHONPATH="$work/pip-uploaded" python3 -c 'import tg_upload; print(tg_upload.hello())'
}
pip_download() { # DIR TOKEN SPEC
  pyenv_clean timeout -k 5 120 "$venv/bin/pip" download --no-deps -d "$1" \
    --index-url "http://token:$2@127.0.0.1:${proxy[pypi]}/simple/" "$3"
}
s_pip_packages() {
  local tok=${TOK[pip-pkg]}
  pip_download "$work/pip-pkg" "$tok" acme-widget==1.0.0
  ls "$work/pip-pkg/acme_widget-1.0.0-py3-none-any.whl" || fail "acme-widget was not downloaded"
  pip_download "$work/pip-pkg-spelt" "$tok" Acme_Widget==1.0.0
  local spec
  for spec in globex-gadget==1.0.0 Globex_Gadget==1.0.0 globex.gadget==1.0.0; do
    expect_refused "$work/out/pip-pkg-globex.txt" 'No matching distribution' \
      pip_download "$work/pip-pkg-globex" "$tok" "$spec"
  done
  [ ! -e "$work/pip-pkg-globex" ] || ! ls "$work/pip-pkg-globex"/*.whl 2>/dev/null || fail "downloaded"
  pip_download "$work/pip-open" "$READ" globex-gadget==1.0.0   # unscoped: fine
  # /simple/ as HTML and as PEP 691 JSON lists only acme-*
  curl -s -m 10 -u "token:$tok" "$(P pypi)/simple/" | tee "$work/out/simple.html"
  grep -q 'acme-widget' "$work/out/simple.html" || fail "acme-widget missing from /simple/"
  ! grep -qE 'globex|tg-hello' "$work/out/simple.html" || fail "/simple/ lists other projects"
  curl -s -m 10 -u "token:$tok" -H 'Accept: application/vnd.pypi.simple.v1+json' "$(P pypi)/simple/" \
    | tee "$work/out/simple.json"
  ! grep -qE 'globex|tg-hello' "$work/out/simple.json" || fail "the JSON page lists other projects"
  curl -s -m 10 -u "token:$READ" "$(P pypi)/simple/" | grep -q globex-gadget || fail "unscoped /simple/ lacks globex"
}
s_twine_packages() {
  local tok=${TOK[twine-pkg]} before
  before=$(writes pypi)
  expect_refused "$work/out/twine-pkg.txt" '403 Forbidden' twine_upload "$tok"
  [ "$(writes pypi)" = "$before" ] || fail "the refused upload reached the store"
  [ ! -e "$uploaded" ] || fail "the file is in the store"
  pyenv_clean TWINE_PASSWORD="$tok" timeout -k 5 120 "$venv/bin/twine" upload --non-interactive \
    --disable-progress-bar --repository-url "$(P pypi)/" -u __token__ \
    "$work/artifacts/acme_upload-1.0.0-py3-none-any.whl"
  cmp "$work/artifacts/acme_upload-1.0.0-py3-none-any.whl" \
    "$work/stores/pypi/acme_upload-1.0.0-py3-none-any.whl" || fail "the store lacks acme_upload"
}
if in_group pypi; then
  say "pip / twine ($(P pypi) → pypiserver :$pypi_store)"
  scenario pip "package scope acme-*: downloads acme-widget, not globex-gadget; /simple/" s_pip_packages
  scenario twine "package scope acme-*: tg_upload refused, acme_upload stored" s_twine_packages
  scenario pip "pip.conf index-url with a read token: install, import runs" s_pip_read
  scenario pip "--index-url, wrong token: install fails (401), store untouched" s_pip_wrong
  scenario pip "PIP_INDEX_URL, __token__, revoked: installs before, fails after" s_pip_revoked
  scenario pip "allowed_ips 127.0.0.1/32: installs from .1, 403 from .2, store untouched" s_pip_allowlist
  scenario twine "read token: upload refused (403), nothing stored" s_twine_read
  scenario twine "wrong token: upload fails (401), store untouched" s_twine_wrong
  scenario twine "revoked write token: upload fails (401)" s_twine_revoked
  scenario twine "write token -u __token__: uploaded, in the store, pip installs it" s_twine_write
fi

# ---------------------------------------------------------------- npm
# npm_env DIR TOKEN CMD…: npm with a user config holding registry= and _authToken=${NPM_TOKEN}
# (kept beside DIR, not in it, so that `npm publish` does not pack them)
npm_env() {
  local dir=$1 tok=$2; shift 2
  mkdir -p "$dir" "$dir.home"
  cat >"$dir.home/npmrc" <<EOF
registry=$(P npm)/
//127.0.0.1:${proxy[npm]}/:_authToken=\${NPM_TOKEN}
EOF
  (cd "$dir" && env NPM_TOKEN="$tok" NPM_CONFIG_USERCONFIG="$dir.home/npmrc" \
    NPM_CONFIG_CACHE="$dir.home/cache" NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_AUDIT=false \
    NPM_CONFIG_FUND=false timeout -k 5 120 "$@")
}
npm_publish() { # DIR TOKEN
  rm -rf "$1" "$1.home"; mkdir -p "$1"; cp -r "$here/fixtures/npm/tg-hello/." "$1/"
  npm_env "$1" "$2" npm publish
}
npm_install() { # DIR TOKEN
  mkdir -p "$1"
  echo '{"name": "consumer", "version": "1.0.0", "private": true}' >"$1/package.json"
  npm_env "$1" "$2" npm install --no-package-lock tg-hello@1.0.0
}
npm_tarball="$work/stores/npm/tarballs/tg-hello-1.0.0.tgz"
s_npm_publish_read() {
  local before; before=$(writes npm)
  expect_refused "$work/out/npm-pub-read.txt" 'E403' npm_publish "$work/npm-pub-read" "$READ"
  [ "$(writes npm)" = "$before" ] || fail "the publish reached the store"
  [ ! -e "$npm_tarball" ] || fail "the tarball is in the store"
}
s_npm_publish_wrong() {
  local before; before=$(lines npm)
  expect_refused "$work/out/npm-pub-wrong.txt" 'E401' npm_publish "$work/npm-pub-wrong" "$WRONG"
  [ "$(lines npm)" = "$before" ] || fail "a refused request reached the store"
  [ ! -e "$npm_tarball" ] || fail "the tarball is in the store"
}
s_npm_publish_write() {
  npm_publish "$work/npm-pub-write" "$WRITE"
  [ -s "$npm_tarball" ] || fail "the tarball is not in the store"
  tar -xzOf "$npm_tarball" package/index.js | grep -q 'hello from tg-hello' || fail "wrong tarball"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert "1.0.0" in d["versions"], d' \
    "$work/stores/npm/packuments/tg-hello.json"
}
s_npm_install_read() {
  npm_install "$work/npm-read" "$READ"
  out=$(cd "$work/npm-read" && node -e 'console.log(require("tg-hello").hello())')
  echo "node: $out"
  [ "$out" = "hello from tg-hello" ] || fail "the installed code did not run"
}
s_npm_install_wrong() {
  local before; before=$(lines npm)
  expect_refused "$work/out/npm-wrong.txt" 'E401' npm_install "$work/npm-wrong" "$WRONG"
  [ "$(lines npm)" = "$before" ] || fail "a refused request reached the store"
  [ ! -d "$work/npm-wrong/node_modules/tg-hello" ] || fail "the package was installed"
}
s_npm_revoked() {
  local tok=${TOK[npm-revocable]}
  npm_install "$work/npm-rev1" "$tok"
  revoke npm-revocable npm
  expect_refused "$work/out/npm-rev.txt" 'E401' npm_install "$work/npm-rev2" "$tok"
}
s_npm_scoped() {
  # npm asks for a scoped package as /@acme%2fwidget (an encoded slash)
  local dir="$work/npm-scoped-pub"
  rm -rf "$dir" "$dir.home"; mkdir -p "$dir"; cp -r "$here/fixtures/npm/acme-widget/." "$dir/"
  npm_env "$dir" "$WRITE" npm publish --access public
  [ -s "$work/stores/npm/tarballs/widget-1.0.0.tgz" ] || fail "the tarball is not in the store"
  mkdir -p "$work/npm-scoped"
  echo '{"name": "consumer", "version": "1.0.0", "private": true}' >"$work/npm-scoped/package.json"
  npm_env "$work/npm-scoped" "$READ" npm install --no-package-lock @acme/widget@1.0.0
  out=$(cd "$work/npm-scoped" && node -e 'console.log(require("@acme/widget").widget())')
  [ "$out" = "hello from @acme/widget" ] || fail "the installed code did not run"
}
s_npm_packages() {
  # @globex/x published by an unscoped writer; @acme/widget by the scoped one
  local dir="$work/npm-globex-pub"
  rm -rf "$dir" "$dir.home"; mkdir -p "$dir"; cp -r "$here/fixtures/npm/globex-x/." "$dir/"
  npm_env "$dir" "$WRITE" npm publish --access public
  dir="$work/npm-pkg-pub-globex"
  rm -rf "$dir" "$dir.home"; mkdir -p "$dir"; cp -r "$here/fixtures/npm/globex-x/." "$dir/"
  sed -i 's/"1.0.0"/"1.0.1"/' "$dir/package.json"
  local before; before=$(writes npm)
  expect_refused "$work/out/npm-pkg-pub.txt" 'E403' npm_env "$dir" "${TOK[npm-pkg-write]}" npm publish --access public
  [ "$(writes npm)" = "$before" ] || fail "the refused publish reached the store"
  mkdir -p "$work/npm-pkg"
  echo '{"name": "consumer", "version": "1.0.0", "private": true}' >"$work/npm-pkg/package.json"
  npm_env "$work/npm-pkg" "${TOK[npm-pkg]}" npm install --no-package-lock @acme/widget@1.0.0
  (cd "$work/npm-pkg" && node -e 'console.log(require("@acme/widget").widget())') | grep -qx 'hello from @acme/widget' \
    || fail "the installed code did not run"
  expect_refused "$work/out/npm-pkg-globex.txt" 'E403' \
    npm_env "$work/npm-pkg" "${TOK[npm-pkg]}" npm install --no-package-lock @globex/x@1.0.0
  [ ! -d "$work/npm-pkg/node_modules/@globex" ] || fail "@globex/x was installed"
  # npm search: only @acme/*
  npm_env "$work/npm-pkg" "${TOK[npm-pkg]}" npm search --json widget x >"$work/out/npm-search.json" \
    || { cat "$work/out/npm-search.json"; fail "npm search"; }
  cat "$work/out/npm-search.json"
  grep -q '@acme/widget' "$work/out/npm-search.json" || fail "@acme/widget not found"
  ! grep -q '@globex' "$work/out/npm-search.json" || fail "@globex/x found"
}
if in_group npm; then
  say "npm ($(P npm) → npm_registry.py :$npm_store)"
  scenario npm "read token: npm publish refused (E403), nothing stored" s_npm_publish_read
  scenario npm "wrong token: npm publish fails (E401), store untouched" s_npm_publish_wrong
  scenario npm "write token _authToken: npm publish, tarball in the store" s_npm_publish_write
  scenario npm "read token: npm install, node runs the code" s_npm_install_read
  scenario npm "wrong token: npm install fails (E401), store untouched" s_npm_install_wrong
  scenario npm "revoked token: installs before, fails after" s_npm_revoked
  # npm sends scoped names as /@scope%2fname: the one encoded slash Tollgate accepts.
  scenario npm "scoped @acme/widget: publish and install" s_npm_scoped
  scenario npm "package scope @acme/*: installs @acme/widget, not @globex/x; search" s_npm_packages
fi

# ---------------------------------------------------------------- Maven
# mvn_run DIR TOKEN ARGS…: Maven with a settings.xml holding <server id="private">, user token,
# password ${env.REPO_TOKEN}; every other repository is mirrored to Debian's local Maven
# repository (for the plugins), so nothing is fetched from the network.
mvn_run() {
  local dir=$1 tok=$2; shift 2
  mkdir -p "$dir"
  cat >"$dir/settings.xml" <<EOF
<settings>
  <localRepository>$dir/m2</localRepository>
  <servers>
    <server>
      <id>private</id>
      <username>token</username>
      <password>\${env.REPO_TOKEN}</password>
    </server>
  </servers>
  <mirrors>
    <mirror>
      <id>debian</id>
      <mirrorOf>*,!private</mirrorOf>
      <url>file://$mvn_repo</url>
    </mirror>
  </mirrors>
</settings>
EOF
  (cd "$dir" && REPO_TOKEN="$tok" t 120 mvn -B -q -ntp -s "$dir/settings.xml" "$@")
}
maven_url() { printf '%s/maven2' "$(P maven)"; }
maven_jar="$work/stores/maven/maven2/com/example/hello/1.0.0/hello-1.0.0.jar"
make_jar() {
  [ -f "$work/build/hello.jar" ] && return 0
  mkdir -p "$work/build/java"
  javac -d "$work/build/java" "$here/fixtures/maven/com/example/Hello.java"
  jar --create --file "$work/build/hello.jar" -C "$work/build/java" .
}
mvn_deploy() { # DIR TOKEN
  make_jar
  mvn_run "$1" "$2" "org.apache.maven.plugins:maven-deploy-plugin:$deploy_plugin:deploy-file" \
    -Dfile="$work/build/hello.jar" -DgroupId=com.example -DartifactId=hello -Dversion=1.0.0 \
    -Dpackaging=jar -DgeneratePom=true -DrepositoryId=private -Durl="$(maven_url)"
}
mvn_get() { # DIR TOKEN
  mvn_run "$1" "$2" "org.apache.maven.plugins:maven-dependency-plugin:$dependency_plugin:get" \
    -Dartifact=com.example:hello:1.0.0 -Dtransitive=false -DremoteRepositories="private::default::$(maven_url)"
}
s_mvn_deploy_read() {
  local before; before=$(writes maven)
  expect_refused "$work/out/mvn-read.txt" 'status: 403 Forbidden' mvn_deploy "$work/mvn-deploy-read" "$READ"
  [ "$(writes maven)" = "$before" ] || fail "an upload reached the store"
  [ ! -e "$maven_jar" ] || fail "the jar is in the store"
}
s_mvn_deploy_wrong() {
  local before; before=$(lines maven)
  expect_refused "$work/out/mvn-wrong.txt" 'status: 401 Unauthorized' mvn_deploy "$work/mvn-deploy-wrong" "$WRONG"
  [ "$(lines maven)" = "$before" ] || fail "a refused request reached the store"
  [ ! -e "$maven_jar" ] || fail "the jar is in the store"
}
s_mvn_deploy_write() {
  mvn_deploy "$work/mvn-deploy-write" "$WRITE"
  cmp "$work/build/hello.jar" "$maven_jar" || fail "the jar is not in the store"
  [ -s "${maven_jar%.jar}.pom" ] || fail "the pom is not in the store"
  [ -s "$work/stores/maven/maven2/com/example/hello/maven-metadata.xml" ] || fail "no maven-metadata.xml"
}
s_mvn_get_read() {
  mvn_get "$work/mvn-get-read" "$READ"
  out=$(java -cp "$work/mvn-get-read/m2/com/example/hello/1.0.0/hello-1.0.0.jar" com.example.Hello)
  echo "java: $out"
  [ "$out" = "hello from com.example:hello" ] || fail "the resolved code did not run"
}
s_mvn_get_wrong() {
  local before; before=$(lines maven)
  expect_refused "$work/out/mvn-get-wrong.txt" 'status: 401 Unauthorized' mvn_get "$work/mvn-get-wrong" "$WRONG"
  [ "$(lines maven)" = "$before" ] || fail "a refused request reached the store"
}
s_mvn_revoked() {
  local tok=${TOK[maven-revocable]}
  mvn_get "$work/mvn-rev1" "$tok"
  revoke maven-revocable maven
  expect_refused "$work/out/mvn-rev.txt" 'status: 401 Unauthorized' mvn_get "$work/mvn-rev2" "$tok"
}
s_mvn_packages() {
  mvn_get "$work/mvn-pkg" "${TOK[maven-pkg]}"
  java -cp "$work/mvn-pkg/m2/com/example/hello/1.0.0/hello-1.0.0.jar" com.example.Hello \
    | grep -qx 'hello from com.example:hello' || fail "the resolved code did not run"
  local before; before=$(lines maven)
  expect_refused "$work/out/mvn-pkg-other.txt" 'status: 403 Forbidden' mvn_get "$work/mvn-pkg-other" "${TOK[maven-other]}"
  [ "$(lines maven)" = "$before" ] || fail "a refused request reached the store"
  make_jar
  expect_refused "$work/out/mvn-pkg-deploy.txt" 'status: 403 Forbidden' \
    mvn_run "$work/mvn-pkg-deploy" "${TOK[maven-other]}" "org.apache.maven.plugins:maven-deploy-plugin:$deploy_plugin:deploy-file" \
    -Dfile="$work/build/hello.jar" -DgroupId=com.example -DartifactId=scoped -Dversion=1.0.0 \
    -Dpackaging=jar -DgeneratePom=true -DrepositoryId=private -Durl="$(maven_url)"
  [ "$(lines maven)" = "$before" ] || fail "a refused upload reached the store"
  [ ! -e "$work/stores/maven/maven2/com/example/scoped" ] || fail "the jar is in the store"
}
if in_group maven; then
  say "Maven ($(maven_url) → nginx :$maven_store)"
  scenario maven "read token: deploy:deploy-file refused (403), nothing stored" s_mvn_deploy_read
  scenario maven "wrong token: deploy fails (401), store untouched" s_mvn_deploy_wrong
  scenario maven "write token: deploy:deploy-file, jar+pom in the store" s_mvn_deploy_write
  scenario maven "read token: dependency:get, java runs the jar" s_mvn_get_read
  scenario maven "wrong token: dependency:get fails (401), store untouched" s_mvn_get_wrong
  scenario maven "revoked token: resolves before, fails after" s_mvn_revoked
  scenario maven "package scopes: com.example:* resolves, com.acme:* neither gets nor deploys" s_mvn_packages
fi

# ---------------------------------------------------------------- cargo (last: needs cargo_index)
# cargo_build DIR TOKEN: a fresh CARGO_HOME whose config names the registry `private` with
# credential-provider cargo:token; the token comes from CARGO_REGISTRIES_PRIVATE_TOKEN.
cargo_build() {
  local dir=$1 tok=$2 via=${3:-cargo}
  rm -rf "$dir"; mkdir -p "$dir/home"; cp -r "$here/fixtures/cargo/app" "$dir/app"
  cat >"$dir/home/config.toml" <<EOF
[registries.private]
index = "sparse+$(P "$via")/index/"
credential-provider = ["cargo:token"]

[net]
retry = 0
EOF
  (cd "$dir/app" && env CARGO_HOME="$dir/home" CARGO_TARGET_DIR="$dir/target" \
    CARGO_REGISTRIES_PRIVATE_TOKEN="$tok" CARGO_TERM_COLOR=never CARGO_HTTP_TIMEOUT=20 \
    timeout -k 5 180 cargo build)
}
s_cargo_store_plain() {
  # the store itself does not declare auth-required …
  curl -s -m 5 "http://127.0.0.1:$cargo_store/index/config.json" | tee /dev/stderr \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); assert "auth-required" not in d, d'
  # … the Tollgate's config.json does (401 without a token, the flag with one)
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$(P cargo)/index/config.json")
  [ "$code" = 401 ] || fail "config.json without a token: $code"
  curl -s -m 5 -H "Authorization: $READ" "$(P cargo)/index/config.json" | tee /dev/stderr \
    | python3 -c 'import json, sys
d = json.load(sys.stdin)
assert d.get("auth-required") is True, d
assert d["dl"].endswith("/crates/{crate}/{crate}-{version}.crate"), d'
}
s_cargo_read() {
  cargo_build "$work/cargo-read" "$READ"
  out=$("$work/cargo-read/target/debug/tg-app")
  echo "tg-app: $out"
  [ "$out" = "hello from tg_hello" ] || fail "the built code did not run"
}
s_cargo_wrong() {
  local before; before=$(lines cargo)
  expect_refused "$work/out/cargo-wrong.txt" 'token rejected for `private`' cargo_build "$work/cargo-wrong" "$WRONG"
  [ "$(lines cargo)" = "$before" ] || fail "a refused request reached the store"
}
s_cargo_revoked() {
  local tok=${TOK[cargo-revocable]}
  cargo_build "$work/cargo-rev1" "$tok"
  revoke cargo-revocable cargo
  expect_refused "$work/out/cargo-rev.txt" 'token rejected for `private`' cargo_build "$work/cargo-rev2" "$tok"
}
s_cargo_without_option() {
  # cargo gets 401 for config.json, retries it with the token, reads no auth-required, and then
  # asks for the index files without a token: refused, although the token is valid.
  expect_refused "$work/out/cargo-plain.txt" 'index/tg/_h/tg_hello`, got 401' \
    cargo_build "$work/cargo-plain" "$READ" cargo-plain
  if grep -q 'Finished' "$work/out/cargo-plain.txt"; then fail "cargo built"; fi
  # Log lines reach the file in batches a few milliseconds later: poll for it.
  local i
  for i in $(seq 50); do
    grep '"path":"/index/tg/_h/tg_hello"' "$work/logs/tollgate-cargo-plain.log" \
      | grep -q '"outcome":"credentials_missing"' && return 0
    sleep 0.1
  done
  fail "the index file was not refused for want of a credential"
}
s_cargo_packages() {
  cargo_build "$work/cargo-pkg" "${TOK[cargo-pkg]}"
  "$work/cargo-pkg/target/debug/tg-app" | grep -qx 'hello from tg_hello' || fail "the built code did not run"
  local before; before=$(lines cargo)
  expect_refused "$work/out/cargo-pkg-other.txt" '403' cargo_build "$work/cargo-pkg-other" "${TOK[cargo-other]}"
  grep -q 'Finished' "$work/out/cargo-pkg-other.txt" && fail "cargo built"
  # config.json reaches the store (it names no package); tg_hello's index file does not
  ! tail -n +"$((before + 1))" "$work/logs/cargo-store.log" | grep -q 'tg_hello' || fail "tg_hello reached the store"
}
if in_group cargo; then
  say "cargo ($(P cargo)/index/ → nginx :$cargo_store)"
  scenario cargo "store's config.json lacks auth-required; the proxy adds it" s_cargo_store_plain
  scenario cargo "read token (cargo:token): cargo build, the binary runs" s_cargo_read
  scenario cargo "wrong token: cargo build fails (401), store untouched" s_cargo_wrong
  scenario cargo "revoked token: builds before, fails after" s_cargo_revoked
  scenario cargo "package scopes: tg_* builds against tg_hello, acme_* fails" s_cargo_packages
  scenario cargo "without upstream.cargo_index, a valid token fails (why it exists)" s_cargo_without_option
fi

# ---------------------------------------------------------------- trusted publishing (OIDC)
# A CI job's OIDC token (RS256, signed here with openssl as a provider would) is exchanged for
# a minted token, which the real clients publish with.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
job_token() { # REPOSITORY: a signed job token of a tag build of REPOSITORY, with a fresh jti
  local now h p sig; now=$(date +%s)
  h=$(printf '{"alg":"RS256","kid":"rsa-1","typ":"JWT"}' | b64url)
  p=$(printf '{"iss":"%s","aud":"tollgate-clients","sub":"repo:%s:ref:refs/tags/v1.0.0","repository":"%s","ref":"refs/tags/v1.0.0","run_id":"4711","jti":"%s","iat":%d,"nbf":%d,"exp":%d}' \
    "$issuer_url" "$1" "$1" "jti-$RANDOM-$RANDOM-$now" "$now" "$((now - 5))" "$((now + 300))" | b64url)
  sig=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -binary -sign "$repo/tests/fixtures/oidc/rsa-1.pem" | b64url)
  printf '%s.%s.%s' "$h" "$p" "$sig"
}
mint() { # GROUP JOB-TOKEN [POLICY]: prints the minted token
  local body='{}'; [ -n "${3:-}" ] && body="{\"policy\": \"$3\"}"
  curl -fsS -m 30 -X POST "$(P "$1")/_tollgate/oidc/exchange" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' -d "$body" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
oidc_wheel="$work/artifacts/tg_oidc-1.0.0-py3-none-any.whl"
twine_upload_file() { # TOKEN FILE
  pyenv_clean TWINE_PASSWORD="$1" timeout -k 5 120 "$venv/bin/twine" upload --non-interactive \
    --disable-progress-bar --repository-url "$(P pypi)/" -u __token__ "$2"
}
s_oidc_twine() {
  local tok; tok=$(mint pypi "$(job_token acme/widget)")
  [[ $tok == tok_* ]] || fail "no token minted"
  twine_upload_file "$tok" "$oidc_wheel"
  cmp "$oidc_wheel" "$work/stores/pypi/tg_oidc-1.0.0-py3-none-any.whl" || fail "the store lacks the file"
}
s_oidc_npm() {
  local tok dir="$work/npm-oidc"; tok=$(mint npm "$(job_token acme/widget)")
  [[ $tok == tok_* ]] || fail "no token minted"
  rm -rf "$dir" "$dir.home"; mkdir -p "$dir"; cp -r "$here/fixtures/npm/tg-hello/." "$dir/"
  sed -i 's/"name": "tg-hello"/"name": "tg-oidc"/' "$dir/package.json"
  npm_env "$dir" "$tok" npm publish
  [ -s "$work/stores/npm/tarballs/tg-oidc-1.0.0.tgz" ] || fail "the tarball is not in the store"
}
s_oidc_expired() {
  local tok before code; tok=$(mint pypi "$(job_token acme/widget)" short)
  code=$(curl -s -o /dev/null -w '%{http_code}' -u "__token__:$tok" "$(P pypi)/simple/")
  [ "$code" = 200 ] || fail "the fresh token: $code"
  sleep 3   # the policy's lifetime is 2 s
  before=$(writes pypi)
  expect_refused "$work/out/oidc-expired.txt" '401 Unauthorized' \
    twine_upload_file "$tok" "$work/artifacts/tg_upload-1.0.0-py3-none-any.whl"
  [ "$(writes pypi)" = "$before" ] || fail "the upload reached the store"
}
s_oidc_refused() {
  local before out; before=$(lines npm)
  out=$(curl -s -m 30 -X POST "$(P npm)/_tollgate/oidc/exchange" -H "Authorization: Bearer $(job_token evil/widget)")
  echo "$out"
  [[ $out == *'"claim_mismatch"'* ]] || fail "a job of another repository was not refused"
  [ "$(lines npm)" = "$before" ] || fail "the exchange reached the store"
}
if in_group oidc; then
  say "trusted publishing (job tokens of $issuer_url → minted tokens)"
  scenario oidc "job token → minted token: twine upload, in the store" s_oidc_twine
  scenario oidc "job token → minted token: npm publish, tarball in the store" s_oidc_npm
  scenario oidc "minted token past its 2 s lifetime: twine upload fails (401)" s_oidc_expired
  scenario oidc "job of another repository: exchange refused (claim_mismatch)" s_oidc_refused
fi

# ---------------------------------------------------------------- the stores never saw a token
s_no_credential_forwarded() {
  ! grep -l 'tok_' "$work/logs/"*-store.log || fail "a token reached a store's log"
  ! grep -v 'auth="-"' "$work/logs/"{composer,cargo,maven}-store.log || fail "nginx saw an Authorization header"
  ! grep -v 'auth=no' "$work/logs/npm-store.log" || fail "the npm registry saw an Authorization header"
}
scenario stores "no Authorization header or token reached any store" s_no_credential_forwarded

# ---------------------------------------------------------------- summary
echo
printf '%-9s %-66s %-9s %s\n' CLIENT SCENARIO RESULT TIME
printf '%-9s %-66s %-9s %s\n' --------- "$(printf '%.0s-' $(seq 66))" --------- ----
for r in "${results[@]}"; do
  IFS='|' read -r g n res d <<<"$r"
  printf '%-9s %-66s %-9s %s\n' "$g" "$n" "$res" "$d"
done
echo
echo "client suite: $((SECONDS - started)) s"
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

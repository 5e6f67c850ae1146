# Shared by the project's scripts: the pinned tool environment and the local AWS emulator.
# shellcheck shell=bash

VENV="${VENV:-$PWD/.venv}"
# Nothing here talks to real AWS: dummy credentials, one region, no telemetry.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The template's three functions, by their binaries' names. Release builds name them: a plain
# build would also link the operator's one-off `audit-log-note-projects` (`cargo run --release`
# builds it when it is wanted), and each release link is minutes of thin LTO on this machine.
# tests/artifacts.rs checks the bootstraps of the same three. Each is its package's name too.
FUNCTION_BINARIES=(audit-log-capture audit-log-stream audit-log-api)
FUNCTION_BIN_ARGS=()
FUNCTION_PACKAGE_ARGS=()
for binary in "${FUNCTION_BINARIES[@]}"; do
  FUNCTION_BIN_ARGS+=(--bin "$binary")
  FUNCTION_PACKAGE_ARGS+=(-p "$binary")
done
unset binary

# Runs one named step and says how long it took (CI's budget is kept step by step).
step() {
  local name=$1 started=$SECONDS status=0
  shift
  echo "==> $name"
  "$@" || status=$?
  echo "<== $name: $((SECONDS - started)) s"
  return "$status"
}

# Creates .venv and installs requirements-dev.txt, again only when the file changed.
ensure_tools() {
  local python=${PYTHON:-python3}
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
  # A venv whose pip is missing (made where python3-venv was not installed) is made again.
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "==> creating $VENV"
    if ! "$python" -m venv --clear "$VENV"; then
      echo "could not create $VENV: Python's venv module is missing (apt install python3-venv)" >&2
      return 1
    fi
  fi
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "==> installing development tools (requirements-dev.txt)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
    echo "$want" >"$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
  # cargo lambda cross-compiles with zig, but the standard library comes from rustup.
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    echo "==> adding the aarch64-unknown-linux-gnu Rust target"
    rustup target add aarch64-unknown-linux-gnu
  fi
}

# The Node.js the console's tests get where the machine's is older than 20.10.
CONSOLE_NODE_VERSION=22.23.5

node_is_recent() {
  node -e 'const [major, minor] = process.versions.node.split(".").map(Number);
    process.exit(major > 20 || (major === 20 && minor >= 10) ? 0 : 1)' 2>/dev/null
}

# Debian's Chromium, Node.js and tests/console's pinned npm packages (playwright-core), for the
# console's browser tests; each is installed only when missing or changed.
ensure_browser() {
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  local missing=()
  [[ -n ${CHROMIUM:-} ]] || command -v chromium >/dev/null || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "==> installing ${missing[*]} (apt)"
    "${sudo[@]}" apt-get update -qq || return 1
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null || return 1
  fi
  # The tests launch the one found here, wherever it is installed.
  CHROMIUM=${CHROMIUM:-$(command -v chromium)}
  export CHROMIUM
  local stamp=tests/console/node_modules/.package-lock.sha256
  local want
  want=$(sha256sum tests/console/package-lock.json | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "==> installing tests/console's npm packages (package-lock.json)"
    npm ci --prefix tests/console --no-audit --no-fund --loglevel=error || return 1
    echo "$want" >"$stamp"
  fi
  # playwright-core and `node --test --test-concurrency` need Node.js 20.10 or later, which
  # Debian 12 and Ubuntu 24.04's apt does not have (18): an older one gets Node.js from the npm
  # registry (the node-linux-<arch> package: its release binary), in the venv, for the tests
  # only (last: the distribution's npm above runs with the distribution's node).
  if ! node_is_recent; then
    local arch
    case $(uname -m) in
      x86_64) arch=x64 ;;
      aarch64) arch=arm64 ;;
      *) echo "Node.js 20.10 or later is needed for the console's tests; $(node --version) is older" >&2; return 1 ;;
    esac
    local node_dir=$VENV/node-$CONSOLE_NODE_VERSION
    local bin=$node_dir/node_modules/node-linux-$arch/bin
    if [[ ! -x $bin/node ]]; then
      echo "==> installing Node.js $CONSOLE_NODE_VERSION from the npm registry (node $(node --version) is older than 20.10)"
      npm install --prefix "$node_dir" --no-save --no-audit --no-fund --loglevel=error \
        "node-linux-$arch@$CONSOLE_NODE_VERSION" || return 1
    fi
    export PATH="$bin:$PATH"
    node_is_recent || return 1
  fi
}

# What the cargo build whose `--message-format json-render-diagnostics` output is on stdin
# compiled that was not built already, as one line of package names; fails when cargo reported
# no artifact at all (its own binary is always reported, fresh or not).
compiled_anew() {
  python3 -c '
import json, sys
seen, rebuilt = False, []
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact":
        seen = True
        if not m["fresh"]:
            rebuilt.append(m["package_id"].rsplit("#", 1)[-1])
print(" ".join(dict.fromkeys(rebuilt)))
sys.exit(0 if seen else 1)'
}

# reuses_build WHAT BUILT COMMAND...: runs a cargo build (COMMAND, given the JSON message
# format) and fails, naming what it compiled again, unless BUILT (the build run before it)
# had already built all of it.
reuses_build() {
  local what=$1 built=$2 out rebuilt
  shift 2
  if ! out=$("$@" --message-format json-render-diagnostics); then
    echo "$what: its own build failed" >&2
    return 1
  fi
  if ! rebuilt=$(compiled_anew <<<"$out"); then
    echo "$what: cargo reported no build" >&2
    return 1
  fi
  if [[ -n "$rebuilt" ]]; then
    echo "$what alone compiled what $built had built: $rebuilt" >&2
    return 1
  fi
}

# sam build runs `cargo lambda build --release --arm64 --bin <Binary>` once per function (the
# template's three), and cargo resolves such a build for that function alone. It reuses the
# workspace's arm64 build only while every function's dependencies resolve as the workspace's
# do (the workspace's Cargo.toml says how); otherwise each function compiles much of the AWS
# SDK again. Builds each function as SAM will and fails, naming what was compiled again, if
# anything was.
function_builds_reuse_workspace() {
  local binary status=0
  for binary in "${FUNCTION_BINARIES[@]}"; do
    reuses_build "$binary" "the workspace build" \
      cargo lambda build --release --arm64 --locked --bin "$binary" || status=1
  done
  return "$status"
}

# ./scripts/local and the console's tests build the local runner alone, without the
# dev-dependencies `cargo test --workspace` builds with. It reuses that build only while
# tests/Cargo.toml asks for the same features those dev-dependencies turn on; otherwise the
# README's commands compile the SDK again.
local_build_reuses_tests() {
  reuses_build "the local runner" "cargo test" \
    cargo build --locked -p audit-log-tests --bin audit-log-local
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts moto on 127.0.0.1 and points every AWS SDK client at it. The server is bounded in
# time and stopped when the calling script exits, however it exits.
start_emulator() {
  local port
  port=$(free_port)
  EMULATOR_LOG="${TMPDIR:-/tmp}/audit-log-moto-$port.log"
  local log=$EMULATOR_LOG
  timeout "${EMULATOR_LIFETIME:-3600}" "$VENV/bin/python" scripts/emulator.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  EMULATOR_PID=$!
  trap stop_emulator EXIT
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "$AWS_ENDPOINT_URL/moto-api/" 2>/dev/null; then
      echo "==> local AWS emulator on $AWS_ENDPOINT_URL"
      return 0
    fi
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
      cat "$log" >&2
      echo "the local AWS emulator did not start" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "the local AWS emulator did not answer on $AWS_ENDPOINT_URL" >&2
  return 1
}

stop_emulator() {
  if [[ -n "${EMULATOR_PID:-}" ]]; then
    kill "$EMULATOR_PID" 2>/dev/null || true
    wait "$EMULATOR_PID" 2>/dev/null || true
  fi
  # Its log is read only when it fails to start; a long --serve would otherwise leave a large one.
  [[ -z "${EMULATOR_LOG:-}" ]] || rm -f "$EMULATOR_LOG"
}

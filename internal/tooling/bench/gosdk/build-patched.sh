#!/usr/bin/env bash
# Builds cmd/portfolio-mcp against go-sdk v1.8.0 with items 1, 2 and 4 of
# docs/performance.md ("go-sdk upstream") applied (item 4 in its narrowest
# form: a JSON input schema without x-mcp-header is not decoded again), as
# ko.yaml builds the image, for the side-by-side harnesses: nothing in the
# repository changes.
#
#   internal/tooling/bench/gosdk/build-patched.sh /tmp/bin/pmcp-patched
#   BENCH_LOAD=1 BENCH_EXTRA='patched go-sdk=/tmp/bin/pmcp-patched' \
#     taskset -c 1 go test ./internal/tooling/bench -count=1 -run TestLoad -v -timeout 15m
#   BENCH_COLD=1 BENCH_FAULTS=1 BENCH_EXTRA='patched go-sdk=/tmp/bin/pmcp-patched' \
#     go test ./internal/tooling/bench -count=1 -run 'TestColdStart|TestStartFaults' -v
set -euo pipefail
out=${1:?usage: build-patched.sh OUTPUT_BINARY}
root=$(cd "$(dirname "$0")/../../../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

src=$(cd "$root" && go list -m -f '{{.Dir}}' github.com/modelcontextprotocol/go-sdk)
cp -r "$src" "$work/go-sdk"
chmod -R u+w "$work/go-sdk"
git -C "$work/go-sdk" init -q
git -C "$work/go-sdk" apply "$root/internal/tooling/bench/gosdk/v1.8.0-json.patch"

cp "$root/go.mod" "$work/go.mod"
cp "$root/go.sum" "$work/go.sum"
echo "replace github.com/modelcontextprotocol/go-sdk => $work/go-sdk" >> "$work/go.mod"
cd "$root"
CGO_ENABLED=0 go build -modfile "$work/go.mod" -trimpath -tags=grpcnotrace -ldflags='-s -w' -o "$out" ./cmd/portfolio-mcp
echo "built $out against go-sdk $(go list -m -f '{{.Version}}' github.com/modelcontextprotocol/go-sdk) + internal/tooling/bench/gosdk/v1.8.0-json.patch"

#!/usr/bin/env bash
# Builds cmd/portfolio-mcp against go-sdk v1.8.0 with the two fixes of
# docs/performance.md ("go-sdk v1.8.0: where the limit is") applied, for the
# side-by-side harness: nothing in the repository changes.
#
#   internal/tooling/bench/gosdk/build-patched.sh /tmp/bin/pmcp-patched
#   BENCH_LOAD=1 BENCH_EXTRA='patched go-sdk=/tmp/bin/pmcp-patched' \
#     taskset -c 1 go test ./internal/tooling/bench -count=1 -run TestLoad -v -timeout 15m
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
go build -modfile "$work/go.mod" -trimpath -ldflags='-s -w' -o "$out" ./cmd/portfolio-mcp
echo "built $out against go-sdk $(go list -m -f '{{.Version}}' github.com/modelcontextprotocol/go-sdk) + internal/tooling/bench/gosdk/v1.8.0-json.patch"

#!/usr/bin/env bash
# Builds the server and fake-backends images offline into the local Docker
# daemon: first a static nonroot base image from ko/base (FROM scratch, CA
# certificates, uid 65532), then both binaries with ko on top of it.
#
# Prints the two image references ko loaded (ko.local/portfolio-mcp:<digest>
# and ko.local/fakebackends:<digest>), one per line, on stdout; both are
# also tagged :dev. Everything else goes to stderr.
#
# Needs: a running Docker daemon, Go, and /etc/ssl/certs/ca-certificates.crt
# (Debian's ca-certificates). ko itself runs as a Go tool dependency.
set -euo pipefail
cd "$(dirname "$0")/.."

base=ko.local/portfolio-mcp-base:static
certs=${CA_CERTIFICATES:-/etc/ssl/certs/ca-certificates.crt}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp ko/base/Dockerfile ko/base/passwd ko/base/group "$ctx"/
cp "$certs" "$ctx"/ca-certificates.crt
# Fixed file times keep the base layers the same from build to build.
touch -d @0 "$ctx"/*
docker build --quiet --tag "$base" "$ctx" >&2

# The image's creation time is the commit's, so the same commit gives the
# same application layers and config.
if [[ -z "${SOURCE_DATE_EPOCH:-}" ]] && git rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
export KO_CONFIG_PATH=ko.yaml
export KO_DEFAULTBASEIMAGE=$base
unset KO_DOCKER_REPO

go tool ko build --local --base-import-paths --sbom=none --tags=dev \
  --platform="linux/$(go env GOARCH)" \
  ./cmd/portfolio-mcp ./cmd/fakebackends

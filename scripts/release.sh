#!/usr/bin/env bash
# The release procedure: binaries for linux and macOS (GoReleaser, with
# checksums and CycloneDX SBOMs) and multi-arch images (ko, with SPDX SBOMs),
# stamped with the tag's version.
#
#   scripts/release.sh --check   # offline: check .goreleaser.yaml and make a
#                                # snapshot build into dist/ (CI runs this)
#   scripts/release.sh           # on a clean checkout of a tag vX.Y.Z, with
#                                # KO_DOCKER_REPO set and registry credentials
#
# A release pins ko.yaml's base image by digest first
# (scripts/pin-base-image.sh, which needs the registry), commits that, tags,
# and runs this script on the tag. The tools are installed at pinned
# versions from the Go module proxy into a cache directory.
set -euo pipefail
cd "$(dirname "$0")/.."

GORELEASER=github.com/goreleaser/goreleaser/v2@v2.15.1
CYCLONEDX=github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod@v1.10.0

tools="${XDG_CACHE_HOME:-$HOME/.cache}/portfolio-mcp/tools"
mkdir -p "$tools"
for pkg in "$GORELEASER" "$CYCLONEDX"; do
  stamp="$tools/.$(tr '/' '_' <<<"${pkg%@*}")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$pkg" ]; then
    echo "installing $pkg" >&2
    GOBIN="$tools" go install "$pkg"
    echo "$pkg" > "$stamp"
  fi
done
export PATH="$tools:$PATH"

if [ "${1:-}" = "--check" ]; then
  goreleaser check
  goreleaser release --snapshot --clean
  # The snapshot must hold every platform's archive, its SBOM and the
  # checksums, and the binary must report the version it was stamped with.
  for p in linux_amd64 linux_arm64 darwin_amd64 darwin_arm64; do
    ls dist/portfolio-mcp_*_"$p".tar.gz >/dev/null
    ls dist/portfolio-mcp_*_"$p".cdx.json >/dev/null
  done
  test -s dist/checksums.txt
  bin=$(ls dist/portfolio-mcp_linux_amd64*/portfolio-mcp)
  want=$(sed -n 's/.*"version":"\([^"]*\)".*/\1/p' dist/metadata.json | head -1)
  got=$("$bin" --version)
  case "$got" in
    "portfolio-mcp v$want "*) echo "release check: ok ($got)" ;;
    *) echo "release check: the binary says \"$got\", want version v$want" >&2; exit 1 ;;
  esac
  exit 0
fi

tag=$(git describe --exact-match --tags HEAD 2>/dev/null) || { echo "release: HEAD is not a tag" >&2; exit 1; }
[ -z "$(git status --porcelain)" ] || { echo "release: the checkout is not clean" >&2; exit 1; }
: "${KO_DOCKER_REPO:?set KO_DOCKER_REPO to the image repository}"
grep -q '^defaultBaseImage: .*@sha256:' ko.yaml || { echo "release: pin the base image first (scripts/pin-base-image.sh)" >&2; exit 1; }

goreleaser release --clean
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) VERSION="$tag" KO_CONFIG_PATH=ko.yaml \
  go tool ko build --bare --sbom=spdx --tags="$tag" --platform=linux/amd64,linux/arm64 ./cmd/portfolio-mcp

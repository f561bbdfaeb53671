#!/usr/bin/env bash
# Pins ko.yaml's defaultBaseImage to the digest the registry serves for it
# now, so every build of a release uses the same base layers. Run by the
# release procedure (scripts/release.sh refuses an unpinned ko.yaml) where
# the registry is reachable; it writes nothing unless the registry answered
# with a digest. Review and commit the change.
#
#   scripts/pin-base-image.sh            # pin the current reference
#   scripts/pin-base-image.sh IMAGE:TAG  # pin another image
set -euo pipefail
cd "$(dirname "$0")/.."

current=$(sed -n 's/^defaultBaseImage: //p' ko.yaml)
ref=${1:-${current%@*}}
digest=$(go run github.com/google/go-containerregistry/cmd/crane@v0.21.7 digest "$ref")
case "$digest" in
  sha256:[0-9a-f]*) ;;
  *) echo "pin-base-image: the registry did not answer with a digest for $ref: $digest" >&2; exit 1 ;;
esac
# name@digest: the tag (after the last path element's colon, not a
# registry port's) goes, the digest says it all.
repo=${ref%@*}
last=${repo##*/}
[[ "$last" == *:* ]] && repo=${repo%:*}
sed -i "s|^defaultBaseImage: .*|defaultBaseImage: $repo@$digest|" ko.yaml
echo "ko.yaml: defaultBaseImage: $repo@$digest"

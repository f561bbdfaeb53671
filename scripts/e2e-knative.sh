#!/usr/bin/env bash
# Opt-in end-to-end job: Knative Serving for real on one machine, no cluster.
# (Not part of scripts/test.sh or .ci/run: the first build takes a while.)
#
#   sudo scripts/e2e-knative.sh            # as root (network namespaces)
#
# It builds, once, into $E2E_CACHE/bin (default ~/.cache/portfolio-mcp/e2e):
# etcd 3.6.8, kube-apiserver 1.36.1 and Knative Serving v0.50.0's
# controller, webhook, autoscaler, activator and queue-proxy, from the nested
# module knative/e2e (its go.mod pins them), plus the node agent and the
# driver. The project's binaries (server, notifier, prewarm) are rebuilt from
# the working tree every run (Go's build cache makes that quick).
#
# Then, inside a private network and mount namespace (unshare), the driver
# (knative/e2e/run) starts the control plane, applies Knative's config/ and
# knative/*.yaml, runs pods with the node agent (knative/e2e/nodeagent) and
# measures: a cold start through the activator, a burst scaled out by the
# KPA, the scale back to zero, and the pre-warm job's min-scale. It prints a
# summary table and leaves logs, the timeline CSV and the summary in $WORK.
# See docs/autoscaling.md, "End-to-end on one machine".
#
# Environment: E2E_CACHE, E2E_WORK (default: a new /tmp/e2e-knative.*),
# E2E_SERVICE (portfolio-mcp-live), E2E_BURST_CLIENTS (120), E2E_BURST (60s),
# E2E_NICE (15: the build's niceness).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${E2E_CACHE:-$HOME/.cache/portfolio-mcp/e2e}
bin=$cache/bin
nice_n=${E2E_NICE:-15}
mkdir -p "$bin"

if [[ $(id -u) != 0 ]]; then
  echo "e2e-knative: run as root (it creates network namespaces)" >&2
  exit 1
fi
for t in go ip unshare; do
  command -v "$t" >/dev/null || { echo "e2e-knative: $t not found" >&2; exit 1; }
done

e2e=$repo/knative/e2e
build() { (cd "$1" && shift && nice -n "$nice_n" go build "$@"); }

# Third-party binaries: rebuilt only when knative/e2e/go.sum changes.
stamp=$(cd "$e2e" && sha256sum go.mod go.sum | sha256sum | cut -c1-16)
if [[ "$(cat "$bin/.stamp" 2>/dev/null)" != "$stamp" ]]; then
  echo "== building etcd, kube-apiserver and Knative Serving (once; ~10-40 min cold)"
  t0=$SECONDS
  # Knative's controller refuses an API server whose version is not stamped.
  build "$e2e" -trimpath -o "$bin/kube-apiserver" \
    -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v1.36.1 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36" \
    k8s.io/kubernetes/cmd/kube-apiserver
  build "$e2e" -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
  for c in controller webhook autoscaler activator queue; do
    build "$e2e" -trimpath -ldflags "-s -w" -o "$bin/$c" "knative.dev/serving/cmd/$c"
  done
  echo "$stamp" >"$bin/.stamp"
  echo "== third-party build took $((SECONDS - t0))s"
fi

echo "== building the node agent, the driver and the project's binaries"
build "$e2e" -o "$bin/nodeagent" ./nodeagent
build "$e2e" -o "$bin/e2e-run" ./run
for c in portfolio-mcp notifier prewarm; do
  # ko.yaml's flags for the server (the image ko would build).
  CGO_ENABLED=0 build "$repo" -trimpath -tags=grpcnotrace -ldflags "-s -w -X github.com/portfolio-mcp/portfolio-mcp/internal/app.Version=e2e" \
    -o "$bin/$c" "./cmd/$c"
done

moddir() { (cd "$1" && go list -m -f '{{.Dir}}' "$2"); }
serving=$(moddir "$e2e" knative.dev/serving)
networking=$(moddir "$e2e" knative.dev/networking)
caching=$(moddir "$e2e" knative.dev/caching)
eventing=$(moddir "$repo" knative.dev/eventing)
# External Secrets' CRDs, from the module the knative/ tests pin.
eso=$(cd /tmp && go mod download -json github.com/external-secrets/external-secrets@v1.3.2 | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')

work=${E2E_WORK:-$(mktemp -d /tmp/e2e-knative.XXXXXX)}
mkdir -p "$work"
echo "== running in $work"
unshare --net --mount --propagation private -- "$bin/e2e-run" \
  -bin "$bin" -work "$work" -repo "$repo" \
  -serving-dir "$serving" -networking-dir "$networking" -caching-dir "$caching" \
  -eventing-dir "$eventing" -eso-dir "$eso" \
  -service "${E2E_SERVICE:-portfolio-mcp-live}" \
  -burst-clients "${E2E_BURST_CLIENTS:-120}" -burst "${E2E_BURST:-60s}" \
  -summary "$work/summary.txt" -timeline "$work/timeline.csv"
echo "== logs, timeline.csv and summary.txt in $work"

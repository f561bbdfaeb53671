package main

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// The model's defaults are measurements of this server, not guesses; each
// comes with the command that produced it (docs/autoscaling.md, "Inputs").
// Re-measure and update them together with the doc when the server changes.
const (
	// measuredServiceTime is the CPU per call of the production build
	// (JWT check, scope, rate limit, metrics, audit CloudEvent to a sink)
	// under load: the "CPU µs/call" column of
	//	BENCH_LOAD=1 go test ./internal/tooling/bench -run TestLoad -v
	measuredServiceTime = 155 * time.Microsecond
	// measuredIdleMemory and measuredMemoryPerCall come from the same run:
	// RSS when ready, and (peak RSS at 200 concurrent calls - idle) / 200.
	measuredIdleMemory    = "20Mi"
	measuredMemoryPerCall = "104Ki"
	// measuredColdStart is the container's start request to its first
	// ready /readyz, 0.80-0.83 s with the image present (the server itself
	// is serving 40-50 ms after its process starts), as reported by
	//	go test ./testcontainers -run 'TestServerContainer$' -count=5 -v
	// (with the images of ko/build-local.sh, as scripts/test.sh sets up),
	// plus an allowance for the scheduler, the kubelet's pod sandbox and the
	// queue-proxy sidecar's start. An image pull is not included: a node
	// that has run the revision keeps the image.
	measuredColdStart  = measuredContainer + coldStartAllowance
	measuredContainer  = 800 * time.Millisecond
	coldStartAllowance = 1200 * time.Millisecond
)

// quantity is a flag holding a Kubernetes resource quantity ("18Mi").
type quantity struct{ resource.Quantity }

func (q *quantity) Set(s string) error {
	v, err := resource.ParseQuantity(s)
	if err != nil {
		return fmt.Errorf("%q: want a quantity such as 18Mi: %w", s, err)
	}
	q.Quantity = v
	return nil
}

func mustQuantity(s string) quantity {
	return quantity{resource.MustParse(s)}
}

// mib formats bytes in MiB for the model line.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

package autoscale

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/serving/pkg/autoscaler/aggregation"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/autoscaler/metrics"
)

// windowAverager is what Knative's collector needs from its buckets.
type windowAverager interface {
	Record(time.Time, float64)
	WindowAverage(time.Time) float64
	IsEmpty(time.Time) bool
}

// metricClient is the simulator's stand-in for Knative's MetricCollector
// (pkg/autoscaler/metrics/collector.go): the same bucket types, bucket size
// and stable/panic windows, fed with the stats the simulated queue-proxies
// and activator would send. It implements metrics.MetricClient, which is all
// the decider reads.
type metricClient struct {
	concurrency, concurrencyPanic windowAverager
	rps, rpsPanic                 windowAverager
	// scrapeTarget is false when target-burst-capacity is -1: the collector
	// then has no service to scrape and never reports ErrNoData.
	scrapeTarget bool
}

var _ metrics.MetricClient = (*metricClient)(nil)

func newMetricClient(s *Settings) *metricClient {
	ctor := func(w time.Duration) windowAverager {
		return aggregation.NewTimedFloat64Buckets(w, asconfig.BucketSize)
	}
	if s.WeightedAggregation {
		ctor = func(w time.Duration) windowAverager {
			return aggregation.NewWeightedFloat64Buckets(w, asconfig.BucketSize)
		}
	}
	return &metricClient{
		concurrency:      ctor(s.StableWindow),
		concurrencyPanic: ctor(s.PanicWindow),
		rps:              ctor(s.StableWindow),
		rpsPanic:         ctor(s.PanicWindow),
		scrapeTarget:     s.Decider.TargetBurstCapacity != -1,
	}
}

// record mirrors collection.record: one stat (already net of proxied
// requests) into the four windows.
func (m *metricClient) record(now time.Time, concurrency, requests float64) {
	m.concurrency.Record(now, concurrency)
	m.concurrencyPanic.Record(now, concurrency)
	m.rps.Record(now, requests)
	m.rpsPanic.Record(now, requests)
}

// StableAndPanicConcurrency implements metrics.MetricClient.
func (m *metricClient) StableAndPanicConcurrency(_ types.NamespacedName, now time.Time) (float64, float64, error) {
	if m.concurrency.IsEmpty(now) && m.scrapeTarget {
		return 0, 0, metrics.ErrNoData
	}
	return m.concurrency.WindowAverage(now), m.concurrencyPanic.WindowAverage(now), nil
}

// StableAndPanicRPS implements metrics.MetricClient.
func (m *metricClient) StableAndPanicRPS(_ types.NamespacedName, now time.Time) (float64, float64, error) {
	if m.rps.IsEmpty(now) && m.scrapeTarget {
		return 0, 0, metrics.ErrNoData
	}
	return m.rps.WindowAverage(now), m.rpsPanic.WindowAverage(now), nil
}

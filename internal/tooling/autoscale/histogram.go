package autoscale

import (
	"math"
	"time"
)

// histogram records durations in logarithmic buckets 0.5% wide from 1 µs,
// so percentiles are exact to 0.5% at any count in constant memory.
type histogram struct {
	counts []int64
	n      int64
	max    time.Duration
}

const (
	histMin    = float64(time.Microsecond)
	histGrowth = 1.005
)

var histLogGrowth = math.Log(histGrowth)

func (h *histogram) add(d time.Duration) {
	i := 0
	if v := float64(d); v > histMin {
		i = int(math.Log(v/histMin)/histLogGrowth) + 1
	}
	if i >= len(h.counts) {
		n := max(i+1, 2*len(h.counts))
		c := make([]int64, n)
		copy(c, h.counts)
		h.counts = c
	}
	h.counts[i]++
	h.n++
	h.max = max(h.max, d)
}

// quantile returns the q-quantile (0..1): the geometric middle of the
// bucket holding it; 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == 0 {
				return time.Duration(histMin)
			}
			lo := histMin * math.Pow(histGrowth, float64(i-1))
			return min(time.Duration(lo*math.Sqrt(histGrowth)), h.max)
		}
	}
	return h.max
}

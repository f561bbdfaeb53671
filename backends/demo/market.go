package demo

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// AsOf is the market close the demo data set is frozen at (16:00 New York).
// A fixed instant keeps every answer reproducible: the built-in backend and
// the containerised fakes agree byte for byte, and tests can pin numbers.
var AsOf = time.Date(2026, 11, 20, 21, 0, 0, 0, time.UTC)

// HistoryDays is the length of each simulated daily close series: one
// trading year for VaR plus one day for the first return.
const HistoryDays = 251

// marketVol is the daily volatility of the simulated market factor (about 17%
// a year), so that a position's risk scales with its beta as it should.
const marketVol = 0.0105

// history holds deterministic daily closes for every listing, oldest first,
// ending exactly at the listing's reference price. Returns follow a one-factor
// model: r = beta*m + e, with the market m shared by all names and a per-name
// idiosyncratic e, each seeded so the whole set is the same on every run.
// A name's series is built the first time it is asked for: most calls need
// a few names, and start-up should not pay for any. The zero value is
// ready to use.
type history struct {
	mu     sync.Mutex
	market []float64            // the market factor's returns
	series map[string][]float64 // by ticker, read-only once built
}

// closes returns the series of a listed ticker.
func (h *history) closes(ticker string) []float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.series[ticker]; ok {
		return s
	}
	if h.market == nil {
		h.market = make([]float64, HistoryDays)
		mr := rand.New(rand.NewPCG(20261120, 1))
		for t := range h.market {
			h.market[t] = mr.NormFloat64() * marketVol
		}
		h.series = map[string][]float64{}
	}
	l, _ := listingOf(ticker)
	s := walk(l, h.market)
	h.series[ticker] = s
	return s
}

// walk goes backwards from today's price so the last close is the anchor.
func walk(l listing, market []float64) []float64 {
	r := rand.New(rand.NewPCG(seed(l.Ticker), 2))
	idio := 0.009 + 0.004*l.Beta
	closes := make([]float64, HistoryDays)
	closes[HistoryDays-1] = l.Price
	for t := HistoryDays - 1; t > 0; t-- {
		ret := l.Beta*market[t] + r.NormFloat64()*idio
		closes[t-1] = round2(closes[t] / (1 + ret))
	}
	return closes
}

func seed(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

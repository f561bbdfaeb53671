package trading_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// countingStore counts the state-store operations made through it: each
// is a round trip to Redis in production.
type countingStore struct {
	store.Store
	ops atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string) ([]byte, int64, error) {
	c.ops.Add(1)
	return c.Store.Get(ctx, key)
}

func (c *countingStore) Create(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	c.ops.Add(1)
	return c.Store.Create(ctx, key, value, ttl)
}

func (c *countingStore) Update(ctx context.Context, key string, value []byte, version int64, ttl time.Duration) (int64, error) {
	c.ops.Add(1)
	return c.Store.Update(ctx, key, value, version, ttl)
}

func (c *countingStore) IndexAdd(ctx context.Context, index, member string, score float64) error {
	c.ops.Add(1)
	return c.Store.IndexAdd(ctx, index, member, score)
}

func (c *countingStore) IndexRemove(ctx context.Context, index, member string) error {
	c.ops.Add(1)
	return c.Store.IndexRemove(ctx, index, member)
}

func (c *countingStore) IndexAddAll(ctx context.Context, indexes []string, member string, score float64) error {
	c.ops.Add(1) // one pipeline
	return c.Store.IndexAddAll(ctx, indexes, member, score)
}

func (c *countingStore) IndexRemoveAll(ctx context.Context, indexes []string, members ...string) error {
	c.ops.Add(1) // one pipeline
	return c.Store.IndexRemoveAll(ctx, indexes, members...)
}

func (c *countingStore) IndexRange(ctx context.Context, index string, limit int) ([]string, error) {
	c.ops.Add(1)
	return c.Store.IndexRange(ctx, index, limit)
}

func (c *countingStore) IndexRangeFrom(ctx context.Context, index string, from float64, limit int) ([]string, error) {
	c.ops.Add(1)
	return c.Store.IndexRangeFrom(ctx, index, from, limit)
}

func (c *countingStore) Tally(ctx context.Context, key, member string, amount float64, maxCount int, maxSum float64, ttl time.Duration) error {
	c.ops.Add(1)
	return c.Store.Tally(ctx, key, member, amount, maxCount, maxSum, ttl)
}

func (c *countingStore) TallyRead(ctx context.Context, key, exclude string) (int, float64, error) {
	c.ops.Add(1)
	return c.Store.TallyRead(ctx, key, exclude)
}

// BenchmarkPlaceOrder places one small filled market order per iteration
// (a buy, then a sell, of 1 KO) on each store, and reports the state-store
// round trips an order makes.
//
//	go test ./internal/trading -run '^$' -bench PlaceOrder -benchmem
func BenchmarkPlaceOrder(b *testing.B) {
	for name, open := range stores(b) {
		b.Run(name, func(b *testing.B) {
			st := &countingStore{Store: open(b)}
			f := newFixture(b, st)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				o := small(fmt.Sprintf("bench-%08d", i))
				o.Quantity = 1
				if i%2 == 1 {
					o.Side = "sell"
				}
				out, err := f.svc.Place(b.Context(), alice, o, "")
				if err != nil || out.Order == nil {
					b.Fatalf("order %d: %+v %v", i, out, err)
				}
			}
			b.ReportMetric(float64(st.ops.Load())/float64(b.N), "store-ops/op")
		})
	}
}

package demo

import (
	"errors"
	"math"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// TestFillsMoveTheBook: a filled order moves shares and cash as a broker's
// book would (cost basis added on buys, taken out at average cost on
// sells); a replay, a resting order or a refused order moves nothing; and
// the book refuses what a cash account cannot do.
func TestFillsMoveTheBook(t *testing.T) {
	ctx := t.Context()
	b := New(nil)
	holding := func(account, ticker string) (backends.Holding, backends.PortfolioValuation) {
		t.Helper()
		v, err := b.GetPortfolio(ctx, account)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range v.Holdings {
			if h.Ticker == ticker {
				return h, v
			}
		}
		return backends.Holding{}, v
	}
	place := func(id, account, ticker, side, typ string, qty, limit float64) (backends.Order, error) {
		return b.PlaceOrder(ctx, backends.OrderRequest{ClientOrderID: id, AccountID: account, Ticker: ticker,
			Side: side, Type: typ, Quantity: qty, LimitPrice: limit})
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 0.011 }

	ko0, v0 := holding("ACC-1002", "KO")
	other0, _ := holding("ACC-1001", "AAPL")

	buy, err := place("c-1", "ACC-1002", "KO", backends.SideBuy, backends.OrderMarket, 100, 0)
	if err != nil || buy.Status != backends.StatusFilled {
		t.Fatalf("buy: %+v %v", buy, err)
	}
	ko1, v1 := holding("ACC-1002", "KO")
	if ko1.Quantity != ko0.Quantity+100 || !near(ko1.CostBasis, ko0.CostBasis+100*buy.AveragePrice) ||
		!near(v1.Cash, v0.Cash-100*buy.AveragePrice) {
		t.Fatalf("after buying 100 at %.2f: KO %+v cash %.2f (before: KO %+v cash %.2f)", buy.AveragePrice, ko1, v1.Cash, ko0, v0.Cash)
	}
	if again, err := place("c-1", "ACC-1002", "KO", backends.SideBuy, backends.OrderMarket, 100, 0); err != nil || again.OrderID != buy.OrderID {
		t.Fatalf("replay: %+v %v", again, err)
	}
	if ko, _ := holding("ACC-1002", "KO"); ko.Quantity != ko1.Quantity {
		t.Fatalf("a replay moved the book: %g shares, want %g", ko.Quantity, ko1.Quantity)
	}
	if rest, err := place("c-2", "ACC-1002", "KO", backends.SideBuy, backends.OrderLimit, 10, 1); err != nil || rest.Status != backends.StatusAccepted {
		t.Fatalf("resting limit: %+v %v", rest, err)
	}

	sell, err := place("c-3", "ACC-1002", "KO", backends.SideSell, backends.OrderMarket, 300, 0)
	if err != nil {
		t.Fatal(err)
	}
	ko2, v2 := holding("ACC-1002", "KO")
	left := ko1.Quantity - 300
	if ko2.Quantity != left || !near(ko2.CostBasis, ko1.CostBasis*left/ko1.Quantity) || !near(v2.Cash, v1.Cash+300*sell.AveragePrice) {
		t.Fatalf("after selling 300 at %.2f: KO %+v cash %.2f", sell.AveragePrice, ko2, v2.Cash)
	}
	if _, err := place("c-4", "ACC-1002", "KO", backends.SideSell, backends.OrderMarket, left+1, 0); !errors.Is(err, backends.ErrInvalid) {
		t.Fatalf("selling more than held: %v, want ErrInvalid", err)
	}
	if _, err := place("c-5", "ACC-1002", "KO", backends.SideSell, backends.OrderMarket, left, 0); err != nil {
		t.Fatal(err)
	}
	if ko, _ := holding("ACC-1002", "KO"); ko.Quantity != 0 {
		t.Fatalf("sold out, still holding %+v", ko)
	}
	if _, err := place("c-6", "ACC-2002", "NVDA", backends.SideBuy, backends.OrderMarket, 1000, 0); !errors.Is(err, backends.ErrInvalid) {
		t.Fatalf("buying beyond cash: %v, want ErrInvalid", err)
	}
	if other, _ := holding("ACC-1001", "AAPL"); other != other0 {
		t.Fatalf("another account moved: %+v, was %+v", other, other0)
	}
}

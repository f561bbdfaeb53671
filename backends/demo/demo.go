// Package demo is the built-in, in-process implementation of every backend:
// a deterministic market of real listed equities, a handful of accounts, a
// risk engine and a paper-trading order book. It is what `go run` serves with
// no configuration, and what the containerised fakes serve over HTTP, so the
// two always agree.
package demo

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// Backend implements backends.Portfolio, MarketData, Risk and Trade.
// Everything but the order book, what its fills moved and the price
// history's cache is immutable after New.
type Backend struct {
	equities []backends.Equity
	history  history // built on first use: a start need not pay for it
	accounts map[string]accountDef
	now      func() time.Time

	mu       sync.Mutex
	orders   map[string]*backends.Order // by order id
	byClient map[string]*backends.Order // by client order id
	books    map[string]*book           // by account id, once an order filled there
	seq      int
}

// New builds the demo data set. now stamps orders; nil means time.Now.
func New(now func() time.Time) *Backend {
	if now == nil {
		now = time.Now
	}
	b := &Backend{
		equities: make([]backends.Equity, 0, len(listings)),
		accounts: make(map[string]accountDef, len(accounts)),
		now:      now,
		orders:   map[string]*backends.Order{},
		byClient: map[string]*backends.Order{},
		books:    map[string]*book{},
	}
	for _, l := range listings {
		b.equities = append(b.equities, backends.Equity{
			Ticker: l.Ticker, Name: l.Name, Exchange: l.Exchange, Sector: l.Sector, Industry: l.Industry,
			MarketCap: l.MarketCapBn * 1e9, Currency: "USD",
		})
	}
	for _, a := range accounts {
		b.accounts[a.ID] = a
	}
	return b
}

// Set returns b as every backend.
func (b *Backend) Set() backends.Set {
	return backends.Set{Portfolio: b, MarketData: b, Risk: b, Trade: b}
}

// ListAccounts implements backends.Portfolio.
func (b *Backend) ListAccounts(ctx context.Context) ([]backends.Account, error) {
	out := make([]backends.Account, 0, len(accounts))
	for _, a := range accounts {
		out = append(out, a.summary())
	}
	return out, nil
}

func (a accountDef) summary() backends.Account {
	return backends.Account{ID: a.ID, Name: a.Name, Type: a.Type, Owner: a.Owner, BaseCurrency: "USD"}
}

// GetPortfolio implements backends.Portfolio.
func (b *Backend) GetPortfolio(ctx context.Context, accountID string) (backends.PortfolioValuation, error) {
	a, ok := b.accounts[accountID]
	if !ok {
		return backends.PortfolioValuation{}, fmt.Errorf("account %q: %w", accountID, backends.ErrNotFound)
	}
	b.mu.Lock()
	bk := b.bookOf(a).clone()
	b.mu.Unlock()
	v := backends.PortfolioValuation{Account: a.summary(), Cash: bk.cash, AsOf: AsOf}
	for ticker, p := range bk.lots {
		l, _ := listingOf(ticker)
		closes := b.history.closes(ticker)
		price := closes[len(closes)-1]
		h := backends.Holding{
			Ticker: ticker, Name: l.Name, Sector: l.Sector, Quantity: p.qty,
			AverageCost: round2(p.cost / p.qty), CostBasis: round2(p.cost), Price: price,
			MarketValue: round2(price * p.qty),
		}
		h.UnrealizedPnL = round2(h.MarketValue - h.CostBasis)
		v.Holdings = append(v.Holdings, h)
		v.PositionsValue += h.MarketValue
		v.TotalCostBasis += h.CostBasis
	}
	v.PositionsValue = round2(v.PositionsValue)
	v.TotalCostBasis = round2(v.TotalCostBasis)
	v.TotalValue = round2(v.PositionsValue + v.Cash)
	v.UnrealizedPnL = round2(v.PositionsValue - v.TotalCostBasis)
	for i := range v.Holdings {
		v.Holdings[i].Weight = round6(v.Holdings[i].MarketValue / v.TotalValue)
	}
	v.CashWeight = round6(v.Cash / v.TotalValue)
	slices.SortStableFunc(v.Holdings, func(x, y backends.Holding) int {
		return cmp.Or(cmp.Compare(y.MarketValue, x.MarketValue), cmp.Compare(x.Ticker, y.Ticker))
	})
	return v, nil
}

// SearchEquities implements backends.MarketData.
func (b *Backend) SearchEquities(ctx context.Context, q backends.EquityQuery) (backends.EquityPage, error) {
	return backends.SearchUniverse(b.equities, q)
}

// Quotes implements backends.MarketData.
func (b *Backend) Quotes(ctx context.Context, tickers []string) (backends.QuoteSet, error) {
	set := backends.QuoteSet{Quotes: []backends.Quote{}}
	for _, t := range tickers {
		q, ok := b.quote(strings.ToUpper(strings.TrimSpace(t)))
		if !ok {
			set.Missing = append(set.Missing, t)
			continue
		}
		set.Quotes = append(set.Quotes, q)
	}
	return set, nil
}

func (b *Backend) quote(ticker string) (backends.Quote, bool) {
	l, ok := listingOf(ticker)
	if !ok {
		return backends.Quote{}, false
	}
	closes := b.history.closes(ticker)
	price, prev := closes[len(closes)-1], closes[len(closes)-2]
	spread := math.Max(0.01, round2(price*0.0002))
	// Daily turnover of roughly 0.4% of shares outstanding, varied per name.
	volume := int64(l.MarketCapBn*1e9/price*0.004*(0.6+float64(seed(ticker)%80)/100)) / 100 * 100
	return backends.Quote{
		Ticker: ticker, Price: price, PreviousClose: prev,
		Change: round2(price - prev), ChangePercent: round2((price - prev) / prev * 100),
		Bid: round2(price - spread/2), Ask: round2(price + spread/2),
		Volume: volume, Currency: "USD", AsOf: AsOf,
	}, true
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

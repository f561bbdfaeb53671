package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

func TestCheck(t *testing.T) {
	cal, err := calendar.NYSE(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ny := cal.Location()
	open := time.Date(2026, 11, 23, 11, 0, 0, 0, ny)         // Monday, regular session
	night := time.Date(2026, 11, 23, 20, 0, 0, 0, ny)        // after the close
	thanksgiving := time.Date(2026, 11, 26, 11, 0, 0, 0, ny) // exchange holiday
	rules := policy.Rules{
		Mode: "paper", MaxOrderNotional: 100_000, ApprovalNotional: 20_000, MaxPositionWeight: 0.25,
		SymbolDeny: []string{"tsla"}, EnforceMarketHours: true, Calendar: cal,
	}
	pv := backends.PortfolioValuation{
		Cash: 30_000, TotalValue: 100_000,
		Holdings: []backends.Holding{
			{Ticker: "AAPL", Quantity: 100, Price: 200, MarketValue: 20_000},
			{Ticker: "MSFT", Quantity: 100, Price: 500, MarketValue: 50_000},
		},
	}
	quote := func(t string, p float64) backends.Quote {
		return backends.Quote{Ticker: t, Price: p, Bid: p - 0.05, Ask: p + 0.05}
	}
	tests := []struct {
		name          string
		o             policy.Order
		q             backends.Quote
		now           time.Time
		rules         func(*policy.Rules)
		wantViolation string // substring; "" means allowed
		wantApproval  bool
	}{
		{"small buy", policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 10}, quote("AAPL", 200), open, nil, "", false},
		{"large buy needs approval", policy.Order{Ticker: "KO", Side: "buy", Type: "market", Quantity: 300}, quote("KO", 70), open, nil, "", true},
		{"over cash", policy.Order{Ticker: "KO", Side: "buy", Type: "market", Quantity: 500}, quote("KO", 70), open, nil, "buying power", true},
		{"concentration", policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 40}, quote("AAPL", 200), open, nil, "concentration", false},
		{"over notional", policy.Order{Ticker: "KO", Side: "buy", Type: "market", Quantity: 2000}, quote("KO", 70), open, func(r *policy.Rules) { r.MaxPositionWeight = 1 }, "per-order limit", true},
		{"restricted", policy.Order{Ticker: "TSLA", Side: "buy", Type: "market", Quantity: 1}, quote("TSLA", 300), open, nil, "restricted", false},
		{"not on allow list", policy.Order{Ticker: "KO", Side: "buy", Type: "market", Quantity: 1}, quote("KO", 70), open, func(r *policy.Rules) { r.SymbolAllow = []string{"AAPL"} }, "tradable", false},
		{"short sale", policy.Order{Ticker: "AAPL", Side: "sell", Type: "market", Quantity: 101}, quote("AAPL", 200), open, nil, "short", true},
		{"sell held", policy.Order{Ticker: "MSFT", Side: "sell", Type: "market", Quantity: 30}, quote("MSFT", 500), open, nil, "", false},
		{"fractional", policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 1.5}, quote("AAPL", 200), open, nil, "whole number", false},
		{"after hours", policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 1}, quote("AAPL", 200), night, nil, "closed", false},
		{"holiday", policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 1}, quote("AAPL", 200), thanksgiving, nil, "closed", false},
		{"after hours not enforced", policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 1}, quote("AAPL", 200), night, func(r *policy.Rules) { r.EnforceMarketHours = false }, "", false},
		{"every order approved", policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 1}, quote("AAPL", 200), open, func(r *policy.Rules) { r.ApprovalNotional = 0 }, "", true},
		{"sell limit far below the bid is sized at the bid", policy.Order{Ticker: "MSFT", Side: "sell", Type: "limit", Quantity: 100, LimitPrice: 0.01}, quote("MSFT", 500), open, nil, "", true},
		{"limit above ask estimates at limit", policy.Order{Ticker: "KO", Side: "buy", Type: "limit", Quantity: 100, LimitPrice: 250}, quote("KO", 70), open, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules
			if tt.rules != nil {
				tt.rules(&r)
			}
			p := policy.Check(r, tt.o, pv, tt.q, policy.Committed{}, tt.now)
			if tt.wantViolation == "" && !p.Allowed {
				t.Errorf("blocked: %v", p.Violations)
			}
			if tt.wantViolation != "" && (p.Allowed || !strings.Contains(strings.Join(p.Violations, "; "), tt.wantViolation)) {
				t.Errorf("violations %v, want one about %q", p.Violations, tt.wantViolation)
			}
			if p.RequiresApproval != tt.wantApproval {
				t.Errorf("requires approval = %v (%v), want %v", p.RequiresApproval, p.ApprovalReasons, tt.wantApproval)
			}
		})
	}

	p := policy.Check(rules, policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 10}, pv, quote("AAPL", 200), policy.Committed{}, open)
	if p.EstimatedPrice != 200.05 || p.EstimatedNotional != 2000.5 || p.CurrentWeight != 0.2 || p.PostTradeWeight != 0.220005 ||
		p.BuyingPowerAfter != 27999.5 || p.PostTradeMaxWeight != 0.5 || !p.MarketOpen {
		t.Errorf("estimates: %+v", p)
	}
}

// TestCheckCommitted: cash and shares held by orders awaiting approval are
// not available to the next order.
func TestCheckCommitted(t *testing.T) {
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 100_000, ApprovalNotional: 20_000, MaxPositionWeight: 1}
	pv := backends.PortfolioValuation{Cash: 30_000, TotalValue: 100_000,
		Holdings: []backends.Holding{{Ticker: "AAPL", Quantity: 100, Price: 200, MarketValue: 20_000}}}
	q := func(t string, p float64) backends.Quote { return backends.Quote{Ticker: t, Price: p, Bid: p, Ask: p} }
	tests := []struct {
		name          string
		o             policy.Order
		q             backends.Quote
		c             policy.Committed
		wantViolation string
		wantPower     float64
	}{
		{"buy fits beside the committed cash", policy.Order{Ticker: "KO", Side: "buy", Type: "market", Quantity: 100}, q("KO", 100), policy.Committed{Cash: 20_000}, "", 10_000},
		{"buy does not fit beside it", policy.Order{Ticker: "KO", Side: "buy", Type: "market", Quantity: 200}, q("KO", 100), policy.Committed{Cash: 20_000}, "of which 20000.00 is held for buy orders awaiting approval", 10_000},
		{"sell of free shares", policy.Order{Ticker: "AAPL", Side: "sell", Type: "market", Quantity: 40}, q("AAPL", 200), policy.Committed{Shares: map[string]float64{"AAPL": 60}}, "", 30_000},
		{"sell of promised shares", policy.Order{Ticker: "AAPL", Side: "sell", Type: "market", Quantity: 41}, q("AAPL", 200), policy.Committed{Shares: map[string]float64{"AAPL": 60}}, "of which 60 are in sell orders awaiting approval", 30_000},
		{"other tickers' sells do not count", policy.Order{Ticker: "AAPL", Side: "sell", Type: "market", Quantity: 100}, q("AAPL", 200), policy.Committed{Shares: map[string]float64{"MSFT": 60}}, "", 30_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy.Check(rules, tt.o, pv, tt.q, tt.c, time.Time{})
			got := strings.Join(p.Violations, "; ")
			if (tt.wantViolation == "") != p.Allowed || !strings.Contains(got, tt.wantViolation) {
				t.Errorf("violations %q, want %q", got, tt.wantViolation)
			}
			if p.BuyingPower != tt.wantPower || p.CommittedCash != tt.c.Cash {
				t.Errorf("buying power %.2f (committed %.2f), want %.2f", p.BuyingPower, p.CommittedCash, tt.wantPower)
			}
		})
	}
}

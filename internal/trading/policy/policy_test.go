package policy_test

import (
	"math"
	"slices"
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
		Account: backends.Account{BaseCurrency: "USD"}, Cash: 30_000, TotalValue: 100_000,
		Holdings: []backends.Holding{
			{Ticker: "AAPL", Quantity: 100, Price: 200, MarketValue: 20_000},
			{Ticker: "MSFT", Quantity: 100, Price: 500, MarketValue: 50_000},
		},
	}
	quote := func(t string, p float64) backends.Quote {
		return backends.Quote{Currency: "USD", Ticker: t, Price: p, Bid: p - 0.05, Ask: p + 0.05}
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
			p := policy.Check(r, tt.o, pv, tt.q, policy.Committed{}, policy.Usage{}, tt.now)
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

	p := policy.Check(rules, policy.Order{Ticker: "AAPL", Side: "buy", Type: "market", Quantity: 10}, pv, quote("AAPL", 200), policy.Committed{}, policy.Usage{}, open)
	if p.EstimatedPrice != 200.05 || p.EstimatedNotional != 2000.5 || p.CurrentWeight != 0.2 || p.PostTradeWeight != 0.220005 ||
		p.BuyingPowerAfter != 27999.5 || p.PostTradeMaxWeight != 0.5 || !p.MarketOpen {
		t.Errorf("estimates: %+v", p)
	}
}

// TestCheckCommitted: cash and shares held by orders awaiting approval are
// not available to the next order.
func TestCheckCommitted(t *testing.T) {
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 100_000, ApprovalNotional: 20_000, MaxPositionWeight: 1}
	pv := backends.PortfolioValuation{Account: backends.Account{BaseCurrency: "USD"}, Cash: 30_000, TotalValue: 100_000,
		Holdings: []backends.Holding{{Ticker: "AAPL", Quantity: 100, Price: 200, MarketValue: 20_000}}}
	q := func(t string, p float64) backends.Quote {
		return backends.Quote{Currency: "USD", Ticker: t, Price: p, Bid: p, Ask: p}
	}
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
			p := policy.Check(rules, tt.o, pv, tt.q, tt.c, policy.Usage{}, time.Time{})
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

// TestCollar: the price collar refuses limits far from the last price on
// the side that hurts (buy above, sell below), at the band's edge
// inclusive, and sizes a market buy at the band's top.
func TestCollar(t *testing.T) {
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e9, ApprovalNotional: 1e9, MaxPositionWeight: 1, Collar: 0.05}
	pv := backends.PortfolioValuation{Account: backends.Account{BaseCurrency: "USD"}, Cash: 1e6, TotalValue: 2e6,
		Holdings: []backends.Holding{{Ticker: "AAPL", Quantity: 1000, Price: 200, MarketValue: 200_000}}}
	q := backends.Quote{Currency: "USD", Ticker: "AAPL", Price: 200, Bid: 199.9, Ask: 200.1}
	limit := func(side string, px float64) policy.Order {
		return policy.Order{Ticker: "AAPL", Side: side, Type: "limit", Quantity: 10, LimitPrice: px}
	}
	market := func(side string) policy.Order {
		return policy.Order{Ticker: "AAPL", Side: side, Type: "market", Quantity: 10}
	}
	tests := []struct {
		name          string
		o             policy.Order
		q             backends.Quote
		wantViolation string
		wantPrice     float64
	}{
		{"buy limit inside", limit("buy", 205), q, "", 205},
		{"buy limit at the top of the band", limit("buy", 210), q, "", 210},
		{"buy limit a cent above the band", limit("buy", 210.01), q, "more than 5% above the last price 200 (collar 190 to 210)", 210.01},
		{"buy limit far below is not a fat finger", limit("buy", 10), q, "", 200.1},
		{"sell limit inside", limit("sell", 195), q, "", 199.9},
		{"sell limit at the bottom of the band", limit("sell", 190), q, "", 199.9},
		{"sell limit a cent below the band", limit("sell", 189.99), q, "more than 5% below the last price", 199.9},
		{"sell limit far above is not a fat finger", limit("sell", 900), q, "", 900},
		{"market buy is sized at the band's top", market("buy"), q, "", 210},
		{"market sell is sized at the bid", market("sell"), q, "", 199.9},
		{"market buy with the ask outside the band", market("buy"), backends.Quote{Currency: "USD", Ticker: "AAPL", Price: 200, Bid: 199, Ask: 211}, "the market is outside the price collar", 211},
		{"market sell with the bid outside the band", market("sell"), backends.Quote{Currency: "USD", Ticker: "AAPL", Price: 200, Bid: 189, Ask: 201}, "the market is outside the price collar", 189},
		{"no last price", market("buy"), backends.Quote{Currency: "USD", Ticker: "AAPL", Bid: 199, Ask: 201}, "no last price", 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy.Check(rules, tt.o, pv, tt.q, policy.Committed{}, policy.Usage{}, time.Time{})
			got := strings.Join(p.Violations, "; ")
			if (tt.wantViolation == "") != p.Allowed || !strings.Contains(got, tt.wantViolation) {
				t.Errorf("violations %q, want %q", got, tt.wantViolation)
			}
			if p.EstimatedPrice != tt.wantPrice {
				t.Errorf("estimated price %.2f, want %.2f", p.EstimatedPrice, tt.wantPrice)
			}
			if tt.q.Price > 0 && (p.ReferencePrice != 200 || p.PriceBandLow != 190 || p.PriceBandHigh != 210) {
				t.Errorf("band: reference %.2f, %.2f to %.2f", p.ReferencePrice, p.PriceBandLow, p.PriceBandHigh)
			}
		})
	}
	// Non-round and sub-dime prices: the band is not widened or closed by
	// rounding to the cent.
	for _, c := range []struct {
		last, limit float64
		side        string
		allowed     bool
	}{
		{33.33, 35.00, "buy", false}, // 33.33 × 1.05 = 34.9965
		{33.33, 34.99, "buy", true},
		{33.33, 31.66, "sell", false}, // 33.33 × 0.95 = 31.6635
		{33.33, 31.67, "sell", true},
		{0.004, 0.0042, "buy", true},
		{0.004, 0.0043, "buy", false},
		{0.004, 0.0038, "sell", true},
		{0.004, 0.0037, "sell", false},
	} {
		q := backends.Quote{Currency: "USD", Ticker: "AAPL", Price: c.last, Bid: c.last, Ask: c.last}
		p := policy.Check(rules, limit(c.side, c.limit), pv, q, policy.Committed{}, policy.Usage{}, time.Time{})
		collared := strings.Contains(strings.Join(p.Violations, ";"), "collar")
		if collared == c.allowed {
			t.Errorf("%s limit %g at last %g: violations %v, want allowed %v", c.side, c.limit, c.last, p.Violations, c.allowed)
		}
	}
	off := rules
	off.Collar = 0
	if p := policy.Check(off, limit("buy", 1000), pv, q, policy.Committed{}, policy.Usage{}, time.Time{}); !p.Allowed || p.PriceBandHigh != 0 {
		t.Errorf("collar off: %v, band %.2f", p.Violations, p.PriceBandHigh)
	}
}

// TestDailyLimits: the budgets before the order are shown, and an order
// that would pass a count or a notional limit, for the principal or the
// agent, is refused.
func TestDailyLimits(t *testing.T) {
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e9, ApprovalNotional: 1e9, MaxPositionWeight: 1,
		Daily: policy.DailyLimits{PrincipalOrders: 10, PrincipalNotional: 100_000, AgentOrders: 5, AgentNotional: 50_000}}
	pv := backends.PortfolioValuation{Account: backends.Account{BaseCurrency: "USD"}, Cash: 1e6, TotalValue: 1e6}
	q := backends.Quote{Currency: "USD", Ticker: "KO", Price: 100, Bid: 100, Ask: 100}
	order := func(qty float64) policy.Order {
		return policy.Order{Ticker: "KO", Side: "buy", Type: "market", Quantity: qty}
	}
	tests := []struct {
		name          string
		qty           float64
		u             policy.Usage
		wantViolation string
	}{
		{"fresh day", 10, policy.Usage{Day: "2026-11-30"}, ""},
		{"last order of the agent's count", 10, policy.Usage{Day: "2026-11-30", Principal: policy.Used{Orders: 4}, Agent: policy.Used{Orders: 4}}, ""},
		{"agent's count used up", 10, policy.Usage{Day: "2026-11-30", Principal: policy.Used{Orders: 5}, Agent: policy.Used{Orders: 5}}, "this agent's daily order limit of 5 for trading day 2026-11-30 is used up"},
		{"principal's count used up by other agents", 10, policy.Usage{Day: "2026-11-30", Principal: policy.Used{Orders: 10}}, "your daily order limit of 10"},
		{"notional exactly to the agent's limit", 100, policy.Usage{Day: "2026-11-30", Agent: policy.Used{Notional: 40_000}}, ""},
		{"notional a share over the agent's limit", 101, policy.Usage{Day: "2026-11-30", Agent: policy.Used{Notional: 40_000}}, "exceeds this agent's remaining daily notional of 10000.00 (limit 50000.00)"},
		{"notional over the principal's limit", 100, policy.Usage{Day: "2026-11-30", Principal: policy.Used{Notional: 95_000}}, "exceeds your remaining daily notional of 5000.00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy.Check(rules, order(tt.qty), pv, q, policy.Committed{}, tt.u, time.Time{})
			got := strings.Join(p.Violations, "; ")
			if (tt.wantViolation == "") != p.Allowed || !strings.Contains(got, tt.wantViolation) {
				t.Errorf("violations %q, want %q", got, tt.wantViolation)
			}
			d := p.DailyLimits
			if d == nil || d.TradingDay != tt.u.Day || d.Principal == nil || d.Agent == nil {
				t.Fatalf("daily limits %+v", d)
			}
			if *d.Agent.OrdersRemaining != max(0, 5-tt.u.Agent.Orders) || *d.Agent.NotionalRemaining != max(0, 50_000-tt.u.Agent.Notional) ||
				d.Principal.OrdersUsed != tt.u.Principal.Orders {
				t.Errorf("budgets: principal %+v agent %+v", *d.Principal, *d.Agent)
			}
		})
	}
	none := rules
	none.Daily = policy.DailyLimits{}
	if p := policy.Check(none, order(1), pv, q, policy.Committed{}, policy.Usage{}, time.Time{}); p.DailyLimits != nil {
		t.Errorf("no limits configured, yet a budget: %+v", p.DailyLimits)
	}
}

// TestVersion: the rule-set version moves with every setting that decides,
// and not with the order of a list.
func TestVersion(t *testing.T) {
	base := policy.Rules{Mode: "paper", MaxOrderNotional: 1000, SymbolDeny: []string{"a", "b"}}
	same := base
	same.SymbolDeny = []string{"B", "A"}
	if base.Version() != same.Version() {
		t.Error("list order changed the version")
	}
	for name, change := range map[string]func(*policy.Rules){
		"collar":    func(r *policy.Rules) { r.Collar = 0.1 },
		"daily":     func(r *policy.Rules) { r.Daily.AgentOrders = 1 },
		"notional":  func(r *policy.Rules) { r.MaxOrderNotional = 1001 },
		"deny list": func(r *policy.Rules) { r.SymbolDeny = []string{"a"} },
	} {
		r := base
		r.SymbolDeny = slices.Clone(base.SymbolDeny)
		change(&r)
		if r.Version() == base.Version() {
			t.Errorf("%s did not change the version", name)
		}
	}
}

// TestEstimateAgreesWithItsPrice: the estimated price is on the tick (a
// buy's rounded up), and the notional is quantity times that very price,
// whatever the collar's top comes to (10.50 × 1.05 is 11.025).
func TestEstimateAgreesWithItsPrice(t *testing.T) {
	pv := backends.PortfolioValuation{Account: backends.Account{BaseCurrency: "USD"}, Cash: 1e7, TotalValue: 1e7}
	rules := policy.Rules{Mode: "paper", MaxOrderNotional: 1e9, ApprovalNotional: 1e9, MaxPositionWeight: 1, Collar: 0.05}
	for _, c := range []struct {
		last, ask, bid float64
		side, typ      string
		limit          float64
		want           float64
	}{
		{10.50, 10.51, 10.49, "buy", "market", 0, 11.03},
		{63.00, 63.01, 62.99, "buy", "market", 0, 66.15},
		{0.8123, 0.8125, 0.8120, "buy", "market", 0, 0.853},
		{10.50, 10.51, 10.49, "sell", "market", 0, 10.49},
		{0.8123, 0.8125, 0.8120, "buy", "limit", 0.8124, 0.8125},
	} {
		q := backends.Quote{Currency: "USD", Ticker: "X", Price: c.last, Ask: c.ask, Bid: c.bid}
		o := policy.Order{AccountID: "A", Ticker: "X", Side: c.side, Type: c.typ, Quantity: 10_000, LimitPrice: c.limit}
		p := policy.Check(rules, o, pv, q, policy.Committed{}, policy.Usage{}, time.Now())
		if p.EstimatedPrice != c.want || p.EstimatedNotional != math.Round(c.want*10_000*100)/100 {
			t.Errorf("%s %s at last %g: price %g notional %.2f, want %g and %.2f", c.side, c.typ, c.last, p.EstimatedPrice, p.EstimatedNotional, c.want, c.want*10_000)
		}
	}
}

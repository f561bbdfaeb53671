// Package policy is the pre-trade check: given a proposed order, the
// account's valued portfolio and a quote, it estimates the order and lists
// what blocks it (violations) and why it needs a human approver. It is pure:
// no I/O, so preview_order and place_order share exactly one decision.
package policy

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

// Rules are the firm's pre-trade limits (from config).
type Rules struct {
	Mode               string // paper or live
	MaxOrderNotional   float64
	ApprovalNotional   float64 // orders at or above need approval; 0: every order
	MaxPositionWeight  float64
	SymbolAllow        []string
	SymbolDeny         []string
	EnforceMarketHours bool
	Calendar           *calendar.Calendar
}

// Order is a proposed order.
type Order struct {
	AccountID  string
	Ticker     string
	Side       string
	Type       string
	Quantity   float64
	LimitPrice float64
}

// Committed is what the account's orders awaiting approval already hold:
// cash for their buys (at their estimated notional) and shares for their
// sells. The check treats both as spent, so two orders that each fit
// cannot together overdraw the account or sell the same shares twice.
type Committed struct {
	Cash   float64
	Shares map[string]float64 // by upper-case ticker
}

// Preview is the outcome of the pre-trade check.
type Preview struct {
	AccountID                string   `json:"account_id"`
	Ticker                   string   `json:"ticker"`
	Side                     string   `json:"side"`
	Quantity                 float64  `json:"quantity"`
	EstimatedPrice           float64  `json:"estimated_price" jsonschema:"expected fill price: the ask for buys, the bid for sells, or the limit if worse"`
	EstimatedNotional        float64  `json:"estimated_notional" jsonschema:"quantity times estimated price, base currency"`
	CurrentWeight            float64  `json:"current_weight" jsonschema:"position's share of account value now, 0..1"`
	PostTradeWeight          float64  `json:"post_trade_weight" jsonschema:"position's share of account value after the order, 0..1"`
	PostTradeMaxWeight       float64  `json:"post_trade_max_concentration" jsonschema:"largest single-position weight after the order"`
	BuyingPower              float64  `json:"buying_power" jsonschema:"cash available before the order: the account's cash less committed_cash"`
	CommittedCash            float64  `json:"committed_cash,omitempty" jsonschema:"cash held for the account's buy orders awaiting approval"`
	CommittedShares          float64  `json:"committed_shares,omitempty" jsonschema:"shares of this ticker held for the account's sell orders awaiting approval"`
	CommittedUnknown         bool     `json:"committed_unknown,omitempty" jsonschema:"true if orders awaiting approval could not be counted (state store unavailable): buying_power may be overstated, and placing the order would fail until it is back"`
	BuyingPowerAfter         float64  `json:"buying_power_after" jsonschema:"cash after the order at the estimated price"`
	MarketOpen               bool     `json:"market_open"`
	MarketStatus             string   `json:"market_status" jsonschema:"the session now, or when it next opens"`
	Mode                     string   `json:"mode" jsonschema:"paper or live"`
	Allowed                  bool     `json:"allowed" jsonschema:"true if no rule blocks the order"`
	Violations               []string `json:"violations,omitempty" jsonschema:"rules that block the order; fix these before placing it"`
	RequiresApproval         bool     `json:"requires_approval" jsonschema:"true if a human approver must release the order"`
	ApprovalReasons          []string `json:"approval_reasons,omitempty"`
	RequiresUserConfirmation bool     `json:"requires_user_confirmation" jsonschema:"place_order always asks the agent's user to confirm"`
}

// Check runs every rule, with what orders awaiting approval hold (c)
// counted as spent.
func Check(r Rules, o Order, pv backends.PortfolioValuation, q backends.Quote, c Committed, now time.Time) Preview {
	ticker := strings.ToUpper(q.Ticker)
	cash := pv.Cash - c.Cash
	p := Preview{
		AccountID: o.AccountID, Ticker: q.Ticker, Side: o.Side, Quantity: o.Quantity,
		BuyingPower: round2(cash), CommittedCash: round2(c.Cash), CommittedShares: c.Shares[ticker],
		Mode: r.Mode, RequiresUserConfirmation: true,
	}
	violate := func(format string, a ...any) { p.Violations = append(p.Violations, fmt.Sprintf(format, a...)) }

	// Size every order at the most it can be worth: a buy fills at the ask
	// or, resting, at its limit; a sell at the bid or better, never below
	// its limit. A limit far from the market must not shrink the estimate
	// (a sell limit at 0.01 still sells at the bid), or it would slip past
	// the notional limit and the approval threshold.
	price := q.Ask
	if o.Side == backends.SideSell {
		price = q.Bid
	}
	if o.Type == backends.OrderLimit && o.LimitPrice > price {
		price = o.LimitPrice
	}
	p.EstimatedPrice = round2(price)
	p.EstimatedNotional = round2(price * o.Quantity)

	var held, heldValue, maxOther float64
	for _, h := range pv.Holdings {
		if h.Ticker == q.Ticker {
			held, heldValue = h.Quantity, h.MarketValue
		} else {
			maxOther = math.Max(maxOther, h.MarketValue)
		}
	}
	total := pv.TotalValue
	if total > 0 {
		p.CurrentWeight = round6(heldValue / total)
	}
	// Total value is unchanged by a trade at market (cash for shares); the
	// position's value moves by the notional.
	after := heldValue + p.EstimatedNotional
	cashAfter := cash - p.EstimatedNotional
	if o.Side == backends.SideSell {
		after = heldValue - q.Price*o.Quantity
		cashAfter = cash + p.EstimatedNotional
	}
	p.BuyingPowerAfter = round2(cashAfter)
	if total > 0 {
		p.PostTradeWeight = round6(math.Max(0, after) / total)
		p.PostTradeMaxWeight = round6(math.Max(math.Max(0, after), maxOther) / total)
	}

	switch {
	case slices.Contains(upper(r.SymbolDeny), ticker):
		violate("%s is on the restricted list and cannot be traded", ticker)
	case len(r.SymbolAllow) > 0 && !slices.Contains(upper(r.SymbolAllow), ticker):
		violate("%s is not on the list of tradable symbols", ticker)
	}
	if o.Quantity != math.Trunc(o.Quantity) || o.Quantity < 1 {
		violate("quantity must be a whole number of shares, at least 1")
	}
	if p.EstimatedNotional > r.MaxOrderNotional {
		violate("estimated notional %.2f exceeds the per-order limit of %.2f; split or reduce the order", p.EstimatedNotional, r.MaxOrderNotional)
	}
	if o.Side == backends.SideBuy && cashAfter < 0 {
		if c.Cash > 0 {
			violate("insufficient buying power: the order needs %.2f, the account has %.2f in cash of which %.2f is held for buy orders awaiting approval", p.EstimatedNotional, pv.Cash, c.Cash)
		} else {
			violate("insufficient buying power: the order needs %.2f, the account has %.2f in cash", p.EstimatedNotional, pv.Cash)
		}
	}
	if free := held - c.Shares[ticker]; o.Side == backends.SideSell && o.Quantity > free {
		if c.Shares[ticker] > 0 {
			violate("cannot sell %g shares of %s: the account holds %g, of which %g are in sell orders awaiting approval (short selling is not allowed)", o.Quantity, ticker, held, c.Shares[ticker])
		} else {
			violate("cannot sell %g shares of %s: the account holds %g (short selling is not allowed)", o.Quantity, ticker, held)
		}
	}
	if o.Side == backends.SideBuy && p.PostTradeWeight > r.MaxPositionWeight {
		violate("%s would be %.1f%% of the account, above the %.1f%% concentration limit", ticker, p.PostTradeWeight*100, r.MaxPositionWeight*100)
	}

	p.MarketOpen = r.Calendar == nil || r.Calendar.IsOpen(now)
	switch {
	case r.Calendar == nil:
		p.MarketStatus = "market hours not checked"
	case p.MarketOpen:
		p.MarketStatus = "open until " + r.Calendar.NextClose(now).In(r.Calendar.Location()).Format("15:04 MST")
	default:
		p.MarketStatus = "closed; next open " + r.Calendar.NextOpen(now).In(r.Calendar.Location()).Format("Mon 2006-01-02 15:04 MST")
	}
	if r.EnforceMarketHours && !p.MarketOpen {
		violate("the market is %s; orders are accepted only in the regular session", p.MarketStatus)
	}

	if p.EstimatedNotional >= r.ApprovalNotional {
		p.RequiresApproval = true
		if r.ApprovalNotional == 0 {
			p.ApprovalReasons = append(p.ApprovalReasons, "every order needs a human approver under the current policy")
		} else {
			p.ApprovalReasons = append(p.ApprovalReasons, fmt.Sprintf("estimated notional %.2f is at or above the approval threshold of %.2f", p.EstimatedNotional, r.ApprovalNotional))
		}
	}
	p.Allowed = len(p.Violations) == 0
	return p
}

func upper(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(strings.TrimSpace(s))
	}
	return out
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }
func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

// Package policy is the pre-trade check: given a proposed order, the
// account's valued portfolio and a quote, it estimates the order and lists
// what blocks it (violations) and why it needs a human approver. It is pure:
// no I/O, so preview_order and place_order share exactly one decision.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
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
	// Collar is the price collar (fat-finger check) as a fraction of the
	// last price: a buy limit above last*(1+Collar), a sell limit below
	// last*(1-Collar), or a market order whose side of the quote is outside
	// that band is refused, and market buys are sized at the band's top.
	// 0 turns the check off.
	Collar float64
	// Daily caps what one principal (the human) and one agent (the OAuth
	// client) may place per trading day, across all replicas.
	Daily DailyLimits
}

// DailyLimits are per-trading-day budgets; a zero field is no limit.
type DailyLimits struct {
	PrincipalOrders   int
	PrincipalNotional float64
	AgentOrders       int
	AgentNotional     float64
}

func (d DailyLimits) set() bool {
	return d.PrincipalOrders > 0 || d.PrincipalNotional > 0 || d.AgentOrders > 0 || d.AgentNotional > 0
}

// Version names the rule set: a digest of every setting that can change a
// decision (calendar holidays included), recorded with each order so an
// auditor can tell which policy allowed it.
func (r Rules) Version() string {
	canon := struct {
		Mode                                            string
		MaxOrderNotional, ApprovalNotional, MaxPosition float64
		Allow, Deny                                     []string
		MarketHours                                     bool
		Holidays                                        []calendar.Date
		Collar                                          float64
		Daily                                           DailyLimits
	}{r.Mode, r.MaxOrderNotional, r.ApprovalNotional, r.MaxPositionWeight, sorted(upper(r.SymbolAllow)), sorted(upper(r.SymbolDeny)),
		r.EnforceMarketHours, nil, r.Collar, r.Daily}
	if r.Calendar != nil {
		canon.Holidays = r.Calendar.Holidays()
	}
	b, _ := json.Marshal(canon) // plain data: cannot fail
	sum := sha256.Sum256(b)
	return "rules-" + hex.EncodeToString(sum[:6])
}

func sorted(ss []string) []string { slices.Sort(ss); return ss }

// Order is a proposed order.
type Order struct {
	AccountID  string
	Ticker     string
	Side       string
	Type       string
	Quantity   float64
	LimitPrice float64
}

// Committed is what the account's orders awaiting approval and its working
// orders already hold: cash for their buys (at their estimated notional, or
// a resting buy's unfilled part at its limit) and shares for their sells. The check treats both as spent, so two orders that each fit
// cannot together overdraw the account or sell the same shares twice.
type Committed struct {
	Cash   float64
	Shares map[string]float64 // by upper-case ticker
	// Unpriced are working market buys the market does not quote now (a
	// halted stock): the cash they hold is unknown, so no buy can be
	// checked against the account's cash until they fill or are cancelled.
	Unpriced []string
}

// Usage is what a principal and an agent have placed so far on the trading
// day, from the shared state store.
type Usage struct {
	Day       string // the trading day, YYYY-MM-DD in the exchange's zone
	Principal Used
	Agent     Used
	// Unknown: the store could not say (a preview goes on without it).
	Unknown bool
}

// Used is one budget's consumption.
type Used struct {
	Orders   int
	Notional float64
}

// DailyBudget is the preview's view of the daily limits.
type DailyBudget struct {
	TradingDay string  `json:"trading_day" jsonschema:"the exchange trading day the order counts towards (it rolls over at the close)"`
	Principal  *Budget `json:"principal,omitempty" jsonschema:"the human user's budget"`
	Agent      *Budget `json:"agent,omitempty" jsonschema:"this agent's (OAuth client's) budget"`
	Unknown    bool    `json:"unknown,omitempty" jsonschema:"true if usage could not be read (state store unavailable); placing would fail until it is back"`
}

// Budget is one daily limit: used before this order, the limit, and what
// remains before it.
type Budget struct {
	OrdersUsed        int      `json:"orders_used"`
	OrdersLimit       int      `json:"orders_limit,omitempty" jsonschema:"absent: no limit on the count"`
	OrdersRemaining   *int     `json:"orders_remaining,omitempty" jsonschema:"orders left today before this one; absent: no limit"`
	NotionalUsed      float64  `json:"notional_used"`
	NotionalLimit     float64  `json:"notional_limit,omitempty" jsonschema:"absent: no limit on the notional"`
	NotionalRemaining *float64 `json:"notional_remaining,omitempty" jsonschema:"gross notional left today before this one; absent: no limit"`
}

// Preview is the outcome of the pre-trade check.
type Preview struct {
	AccountID                string       `json:"account_id"`
	Ticker                   string       `json:"ticker"`
	Side                     string       `json:"side"`
	Quantity                 float64      `json:"quantity"`
	EstimatedPrice           float64      `json:"estimated_price" jsonschema:"expected fill price, on the tick: the ask for buys, the bid for sells, or the limit if worse; a market buy under the price collar is sized at the collar's top, the worst it may fill at"`
	EstimatedNotional        float64      `json:"estimated_notional" jsonschema:"quantity times estimated price, base currency"`
	CurrentWeight            float64      `json:"current_weight" jsonschema:"position's share of account value now, 0..1"`
	PostTradeWeight          float64      `json:"post_trade_weight" jsonschema:"position's share of account value after the order, 0..1"`
	PostTradeMaxWeight       float64      `json:"post_trade_max_concentration" jsonschema:"largest single-position weight after the order"`
	BuyingPower              float64      `json:"buying_power" jsonschema:"cash available before the order: the account's cash less committed_cash"`
	CommittedCash            float64      `json:"committed_cash,omitempty" jsonschema:"cash held for the account's buy orders awaiting approval or working (unfilled)"`
	CommittedShares          float64      `json:"committed_shares,omitempty" jsonschema:"shares of this ticker held for the account's sell orders awaiting approval or working (unfilled)"`
	CommittedUnknown         bool         `json:"committed_unknown,omitempty" jsonschema:"true if orders awaiting approval or working could not be counted (state store or Trade service unavailable): buying_power may be overstated, and placing the order would fail until it is back"`
	BuyingPowerAfter         float64      `json:"buying_power_after" jsonschema:"cash after the order at the estimated price"`
	ReferencePrice           float64      `json:"reference_price,omitempty" jsonschema:"last price the price collar is centred on"`
	PriceBandLow             float64      `json:"price_band_low,omitempty" jsonschema:"lowest sell limit the price collar accepts"`
	PriceBandHigh            float64      `json:"price_band_high,omitempty" jsonschema:"highest buy limit the price collar accepts; market buys are sized at it"`
	DailyLimits              *DailyBudget `json:"daily_limits,omitempty" jsonschema:"today's order-count and gross-notional budgets, before this order"`
	PolicyVersion            string       `json:"policy_version,omitempty" jsonschema:"the pre-trade rule set that made this decision"`
	MarketOpen               bool         `json:"market_open"`
	MarketStatus             string       `json:"market_status" jsonschema:"the session now, or when it next opens"`
	Mode                     string       `json:"mode" jsonschema:"paper or live"`
	Allowed                  bool         `json:"allowed" jsonschema:"true if no rule blocks the order"`
	Violations               []string     `json:"violations,omitempty" jsonschema:"rules that block the order; fix these before placing it"`
	RequiresApproval         bool         `json:"requires_approval" jsonschema:"true if a human approver must release the order"`
	ApprovalReasons          []string     `json:"approval_reasons,omitempty"`
	RequiresUserConfirmation bool         `json:"requires_user_confirmation" jsonschema:"place_order always asks the agent's user to confirm"`
}

// Check runs every rule, with what orders awaiting approval hold (c)
// counted as spent and what was placed today (u) counted against the daily
// limits.
func Check(r Rules, o Order, pv backends.PortfolioValuation, q backends.Quote, c Committed, u Usage, now time.Time) Preview {
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
	// The collar: a limit far from the last price is a fat finger, and a
	// market buy may fill anywhere up to the band's top, so it is sized
	// there.
	// The band is compared unrounded (rounding to the cent would widen it
	// by up to half a cent, and close it on sub-dime prices); it is shown
	// to four decimals.
	var lo, hi float64
	if r.Collar > 0 && q.Price > 0 {
		lo, hi = q.Price*(1-r.Collar), q.Price*(1+r.Collar)
		p.ReferencePrice, p.PriceBandLow, p.PriceBandHigh = q.Price, round4(lo), round4(hi)
		if o.Type == backends.OrderMarket && o.Side == backends.SideBuy && hi > price {
			price = hi
		}
	}
	// The price as a venue could fill it (on the tick: up for a buy, the
	// worse side), and the notional from that very price, so the two agree.
	p.EstimatedPrice = onTickPrice(price, o.Side == backends.SideBuy)
	p.EstimatedNotional = round2(p.EstimatedPrice * o.Quantity)

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
	switch pct := r.Collar * 100; {
	case r.Collar <= 0:
	case q.Price <= 0:
		violate("%s has no last price to check the order against the price collar; try again when it trades", ticker)
	case o.Type == backends.OrderLimit && o.Side == backends.SideBuy && o.LimitPrice > hi*(1+bandSlack):
		violate("buy limit %g is more than %g%% above the last price %g (collar %g to %g): check the price", o.LimitPrice, pct, q.Price, round4(lo), round4(hi))
	case o.Type == backends.OrderLimit && o.Side == backends.SideSell && o.LimitPrice < lo*(1-bandSlack):
		violate("sell limit %g is more than %g%% below the last price %g (collar %g to %g): check the price", o.LimitPrice, pct, q.Price, round4(lo), round4(hi))
	case o.Type == backends.OrderMarket && o.Side == backends.SideBuy && q.Ask > hi:
		violate("the ask %.2f is more than %g%% above the last price %.2f: the market is outside the price collar, use a limit order", q.Ask, pct, q.Price)
	case o.Type == backends.OrderMarket && o.Side == backends.SideSell && q.Bid < lo:
		violate("the bid %.2f is more than %g%% below the last price %.2f: the market is outside the price collar, use a limit order", q.Bid, pct, q.Price)
	}
	if r.Daily.set() {
		p.DailyLimits = daily(r.Daily, u, p.EstimatedNotional, violate)
	}
	if o.Quantity != math.Trunc(o.Quantity) || o.Quantity < 1 {
		violate("quantity must be a whole number of shares, at least 1")
	}
	// A market order has no price of its own: without its side of the
	// quote it could not be sized, and would slip past every limit below
	// at a notional of 0.
	switch {
	case o.Type == backends.OrderMarket && o.Side == backends.SideBuy && q.Ask <= 0:
		violate("%s has no ask (no offer in the market now) to size a market buy; use a limit order or try again when it is quoted", ticker)
	case o.Type == backends.OrderMarket && o.Side == backends.SideSell && q.Bid <= 0:
		violate("%s has no bid (no buyer in the market now) for a market sell; use a limit order or try again when it is quoted", ticker)
	}
	if o.Type == backends.OrderLimit {
		if tick := TickSize(o.LimitPrice); !onTick(o.LimitPrice, tick) {
			violate("limit price %s is not a multiple of the tick size %s; round it", Price(o.LimitPrice), Price(tick))
		}
	}
	// Every amount is compared in the account's base currency, and nothing
	// here converts: a quote in another currency cannot be checked.
	if cur, base := strings.ToUpper(q.Currency), strings.ToUpper(pv.BaseCurrency); cur == "" || base == "" || cur != base {
		violate("%s is quoted in %q and the account's base currency is %q: only orders in the account's base currency can be checked", ticker, q.Currency, pv.BaseCurrency)
	}
	if p.EstimatedNotional > r.MaxOrderNotional {
		violate("estimated notional %.2f exceeds the per-order limit of %.2f; split or reduce the order", p.EstimatedNotional, r.MaxOrderNotional)
	}
	if o.Side == backends.SideBuy && len(c.Unpriced) > 0 {
		violate("the account's working market buy %s cannot be priced (its stock is not quoted now), so the cash it holds is unknown: cancel it, or buy when it is quoted", strings.Join(c.Unpriced, ", "))
	}
	if o.Side == backends.SideBuy && cashAfter < 0 {
		if c.Cash > 0 {
			violate("insufficient buying power: the order needs %.2f, the account has %.2f in cash of which %.2f is held for buy orders awaiting approval or working", p.EstimatedNotional, pv.Cash, c.Cash)
		} else {
			violate("insufficient buying power: the order needs %.2f, the account has %.2f in cash", p.EstimatedNotional, pv.Cash)
		}
	}
	if free := held - c.Shares[ticker]; o.Side == backends.SideSell && o.Quantity > free {
		if c.Shares[ticker] > 0 {
			violate("cannot sell %g shares of %s: the account holds %g, of which %g are in sell orders awaiting approval or working (short selling is not allowed)", o.Quantity, ticker, held, c.Shares[ticker])
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

// daily reports the day's budgets before the order and refuses an order
// that would exceed one.
func daily(l DailyLimits, u Usage, notional float64, violate func(string, ...any)) *DailyBudget {
	d := &DailyBudget{TradingDay: u.Day, Unknown: u.Unknown}
	budget := func(who string, used Used, orders int, limit float64) *Budget {
		if orders <= 0 && limit <= 0 {
			return nil
		}
		b := &Budget{OrdersUsed: used.Orders, OrdersLimit: orders, NotionalUsed: round2(used.Notional), NotionalLimit: limit}
		if orders > 0 {
			left := max(0, orders-used.Orders)
			b.OrdersRemaining = &left
			if used.Orders+1 > orders {
				violate("%s daily order limit of %d for trading day %s is used up", who, orders, u.Day)
			}
		}
		if limit > 0 {
			left := round2(max(0, limit-used.Notional))
			b.NotionalRemaining = &left
			if used.Notional+notional > limit {
				violate("estimated notional %.2f exceeds %s remaining daily notional of %.2f (limit %.2f) for trading day %s", notional, who, left, limit, u.Day)
			}
		}
		return b
	}
	d.Principal = budget("your", u.Principal, l.PrincipalOrders, l.PrincipalNotional)
	d.Agent = budget("this agent's", u.Agent, l.AgentOrders, l.AgentNotional)
	return d
}

// TickSize is the minimum price increment of a US equity order (Reg NMS
// Rule 612): a cent at or above one dollar, a hundredth of a cent below.
func TickSize(price float64) float64 {
	if price < 1 {
		return 0.0001
	}
	return 0.01
}

// onTickPrice is price on its tick: rounded up (a buy's worst case) or to
// the nearest.
func onTickPrice(price float64, up bool) float64 {
	tick := TickSize(price)
	n := price / tick
	if up {
		n = math.Ceil(n - 1e-9)
	} else {
		n = math.Round(n)
	}
	return round4(n * tick)
}

// onTick reports whether price is a whole number of ticks, within binary
// rounding (62.37 is not exactly representable).
func onTick(price, tick float64) bool {
	n := price / tick
	return math.Abs(n-math.Round(n)) < 1e-6
}

// Price formats a price exactly as given, so that what a user confirms is
// what is sent: to the cent, or to as many decimals as it has below that.
func Price(p float64) string {
	if onTick(p, 0.01) {
		return strconv.FormatFloat(p, 'f', 2, 64)
	}
	return strconv.FormatFloat(p, 'f', -1, 64)
}

func upper(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(strings.TrimSpace(s))
	}
	return out
}

func round2(x float64) float64 { return math.Round(x*100) / 100 }

// bandSlack keeps the band's edges inside it despite binary rounding
// (200 × 1.05 is 210.00000000000003).
const bandSlack = 1e-12

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }
func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }

// Package backends defines what the MCP handlers need from the firm's
// Portfolio, Trade and Risk services: the interfaces, their wire types (the
// JSON the services speak, see CONTRACT.md) and the errors a handler can turn
// into a safe message for an agent. Implementations live in subpackages: demo
// (in-process, the default) and httpclient (the real services).
package backends

import (
	"context"
	"errors"
	"strings"
	"time"
)

// Errors every implementation maps its failures to. Handlers branch on them
// with errors.Is; anything else is an internal error.
var (
	// ErrNotFound: the account, ticker or order does not exist (or the caller
	// may not know that it does).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the backend refused the request as malformed. Wrap it with a
	// message that is safe to show an agent.
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable: the backend could not be reached or failed; the call may
	// succeed later.
	ErrUnavailable = errors.New("backend unavailable")
)

// Portfolio is the system of record for accounts and their valued holdings.
type Portfolio interface {
	ListAccounts(ctx context.Context) ([]Account, error)
	GetPortfolio(ctx context.Context, accountID string) (PortfolioValuation, error)
}

// MarketData serves reference data (the equity universe) and quotes.
type MarketData interface {
	SearchEquities(ctx context.Context, q EquityQuery) (EquityPage, error)
	// Quotes returns a quote for each known ticker; unknown tickers are
	// listed in Missing rather than failing the call.
	Quotes(ctx context.Context, tickers []string) (QuoteSet, error)
}

// Risk computes risk views of an account.
type Risk interface {
	RiskSummary(ctx context.Context, accountID string) (RiskSummary, error)
}

// Trade is order entry. PlaceOrder is idempotent on ClientOrderID: a repeat
// returns the order first created for it and never executes twice.
// OrderByClientID is how the server learns, after a lost answer or a crash,
// whether the Trade service ever saw an order: ErrNotFound means it did not,
// and only then may the order be checked and sent again.
type Trade interface {
	PlaceOrder(ctx context.Context, req OrderRequest) (Order, error)
	GetOrder(ctx context.Context, orderID string) (Order, error)
	OrderByClientID(ctx context.Context, clientOrderID string) (Order, error)
	CancelOrder(ctx context.Context, orderID string) (Order, error)
}

// Set bundles one implementation of each service, as main wires them.
type Set struct {
	Portfolio  Portfolio
	MarketData MarketData
	Risk       Risk
	Trade      Trade
}

// Account identifies an account and who it belongs to.
type Account struct {
	ID           string `json:"account_id" jsonschema:"account identifier, e.g. ACC-1001"`
	Name         string `json:"name" jsonschema:"display name of the account"`
	Type         string `json:"type" jsonschema:"account type: individual, ira, trust or institutional"`
	Owner        string `json:"owner" jsonschema:"account holder"`
	BaseCurrency string `json:"base_currency" jsonschema:"ISO 4217 currency of all amounts"`
}

// Holding is one valued position.
type Holding struct {
	Ticker        string  `json:"ticker"`
	Name          string  `json:"name"`
	Sector        string  `json:"sector" jsonschema:"GICS sector"`
	Quantity      float64 `json:"quantity" jsonschema:"shares held"`
	AverageCost   float64 `json:"average_cost" jsonschema:"average cost per share"`
	CostBasis     float64 `json:"cost_basis" jsonschema:"total cost of the position"`
	Price         float64 `json:"price" jsonschema:"last price per share"`
	MarketValue   float64 `json:"market_value" jsonschema:"quantity times price"`
	UnrealizedPnL float64 `json:"unrealized_pnl" jsonschema:"market value minus cost basis"`
	Weight        float64 `json:"weight" jsonschema:"share of total account value, 0..1"`
}

// PortfolioValuation is an account's holdings valued at AsOf.
type PortfolioValuation struct {
	Account
	Holdings       []Holding `json:"holdings" jsonschema:"positions, largest market value first"`
	Cash           float64   `json:"cash" jsonschema:"cash balance"`
	CashWeight     float64   `json:"cash_weight" jsonschema:"cash share of total value, 0..1"`
	PositionsValue float64   `json:"positions_value" jsonschema:"sum of holdings' market value"`
	TotalValue     float64   `json:"total_value" jsonschema:"positions value plus cash"`
	TotalCostBasis float64   `json:"total_cost_basis"`
	UnrealizedPnL  float64   `json:"unrealized_pnl"`
	AsOf           time.Time `json:"as_of" jsonschema:"time the prices were taken"`
}

// Equity is one listed equity in the reference universe.
type Equity struct {
	Ticker    string  `json:"ticker"`
	Name      string  `json:"name"`
	Exchange  string  `json:"exchange" jsonschema:"primary listing: NYSE or NASDAQ"`
	Sector    string  `json:"sector" jsonschema:"GICS sector"`
	Industry  string  `json:"industry,omitempty" jsonschema:"GICS industry, e.g. Banks or Semiconductors & Semiconductor Equipment"`
	MarketCap float64 `json:"market_cap" jsonschema:"market capitalisation in USD"`
	Currency  string  `json:"currency"`
}

// EquityQuery filters and pages the equity universe. Zero fields do not
// filter. Text matches tickers, names, GICS industries and sectors, ranked:
// exact ticker, ticker prefix, name prefix, ticker or name substring,
// industry, sector; ties by market cap, largest first.
type EquityQuery struct {
	Text         string
	Sector       string
	Exchange     string
	MinMarketCap float64
	MaxMarketCap float64
	Limit        int
	Cursor       string
}

// EquityPage is one page of search results.
type EquityPage struct {
	Equities   []Equity `json:"equities"`
	Total      int      `json:"total" jsonschema:"number of matches across all pages"`
	NextCursor string   `json:"next_cursor,omitempty" jsonschema:"pass as cursor to get the next page; absent on the last page"`
}

// Quote is the latest market data for one ticker.
type Quote struct {
	Ticker        string    `json:"ticker"`
	Price         float64   `json:"price" jsonschema:"last trade price"`
	PreviousClose float64   `json:"previous_close"`
	Change        float64   `json:"change" jsonschema:"price minus previous close"`
	ChangePercent float64   `json:"change_percent" jsonschema:"change as a percentage of previous close"`
	Bid           float64   `json:"bid"`
	Ask           float64   `json:"ask"`
	Volume        int64     `json:"volume" jsonschema:"shares traded in the session"`
	Currency      string    `json:"currency"`
	AsOf          time.Time `json:"as_of"`
}

// QuoteSet answers a multi-ticker quote request.
type QuoteSet struct {
	Quotes  []Quote  `json:"quotes" jsonschema:"one quote per known ticker, in request order"`
	Missing []string `json:"missing,omitempty" jsonschema:"requested tickers that are not known"`
}

// SectorExposure is the share of an account in one GICS sector.
type SectorExposure struct {
	Sector      string  `json:"sector"`
	MarketValue float64 `json:"market_value"`
	Weight      float64 `json:"weight" jsonschema:"share of total account value, 0..1"`
}

// Concentration is one large single-name position.
type Concentration struct {
	Ticker      string  `json:"ticker"`
	Name        string  `json:"name"`
	MarketValue float64 `json:"market_value"`
	Weight      float64 `json:"weight" jsonschema:"share of total account value, 0..1"`
}

// ValueAtRisk is a one-day loss that is exceeded with probability 1-Confidence.
type ValueAtRisk struct {
	Confidence float64 `json:"confidence" jsonschema:"0.95 or 0.99"`
	Amount     float64 `json:"amount" jsonschema:"loss in base currency, positive"`
	Percent    float64 `json:"percent" jsonschema:"loss as a percentage of total value"`
}

// RiskSummary is the risk view of one account.
type RiskSummary struct {
	AccountID         string           `json:"account_id"`
	BaseCurrency      string           `json:"base_currency"`
	TotalValue        float64          `json:"total_value"`
	SectorExposure    []SectorExposure `json:"sector_exposure" jsonschema:"largest first"`
	TopConcentrations []Concentration  `json:"top_concentrations" jsonschema:"the five largest positions"`
	Beta              float64          `json:"beta" jsonschema:"value-weighted beta to the S&P 500 (cash has beta 0)"`
	VaRMethod         string           `json:"var_method" jsonschema:"how VaR was computed"`
	VaRHorizonDays    int              `json:"var_horizon_days"`
	VaRLookbackDays   int              `json:"var_lookback_days" jsonschema:"trading days of history used"`
	VaR               []ValueAtRisk    `json:"var" jsonschema:"at 95% and 99% confidence"`
	AsOf              time.Time        `json:"as_of"`
}

// Order sides and types on the wire.
const (
	SideBuy  = "buy"
	SideSell = "sell"

	OrderMarket = "market"
	OrderLimit  = "limit"
)

// Order statuses on the wire, after FIX's OrdStatus: an order is working
// (accepted, partially_filled) until it reaches a terminal state.
const (
	// StatusAccepted: the order is working at the venue, nothing filled yet
	// (FIX New).
	StatusAccepted = "accepted"
	// StatusPartiallyFilled: working, with FilledQuantity of Quantity done.
	StatusPartiallyFilled = "partially_filled"
	// StatusFilled: done; FilledQuantity equals Quantity.
	StatusFilled = "filled"
	// StatusCancelled: withdrawn; FilledQuantity may be above zero.
	StatusCancelled = "cancelled"
	// StatusRejected: refused by the venue or the Trade service.
	StatusRejected = "rejected"
	// StatusExpired: its time in force ended; FilledQuantity may be above zero.
	StatusExpired = "expired"
)

// Working reports whether an order in status may still fill or be
// cancelled, so what is known about it can change.
func Working(status string) bool {
	return status == StatusAccepted || status == StatusPartiallyFilled
}

// OrderRequest asks the Trade service for an order. ClientOrderID is the
// caller's idempotency key: the same id always names the same order.
type OrderRequest struct {
	ClientOrderID string  `json:"client_order_id"`
	AccountID     string  `json:"account_id"`
	Ticker        string  `json:"ticker"`
	Side          string  `json:"side"`
	Type          string  `json:"type"`
	Quantity      float64 `json:"quantity"`
	LimitPrice    float64 `json:"limit_price,omitempty"`
}

// Matches reports whether o is the order r asks for: what the Trade
// service compares to dedup a client order id, and what a client checks
// before it takes a looked-up order for its own.
func (o Order) Matches(r OrderRequest) bool {
	return o.AccountID == r.AccountID && strings.EqualFold(o.Ticker, r.Ticker) && o.Side == r.Side &&
		o.Type == r.Type && o.Quantity == r.Quantity && o.LimitPrice == r.LimitPrice
}

// Order is the Trade service's record of an order.
type Order struct {
	OrderID        string    `json:"order_id"`
	ClientOrderID  string    `json:"client_order_id"`
	AccountID      string    `json:"account_id"`
	Ticker         string    `json:"ticker"`
	Side           string    `json:"side"`
	Type           string    `json:"type"`
	Quantity       float64   `json:"quantity"`
	LimitPrice     float64   `json:"limit_price,omitempty"`
	Status         string    `json:"status"`
	FilledQuantity float64   `json:"filled_quantity"`
	AveragePrice   float64   `json:"average_price,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

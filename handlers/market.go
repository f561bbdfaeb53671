package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
)

// MaxQuoteTickers bounds one get_quotes call.
const MaxQuoteTickers = 50

// GICSSectors are the eleven sector names search_equities accepts.
var GICSSectors = []any{
	"Communication Services", "Consumer Discretionary", "Consumer Staples", "Energy", "Financials",
	"Health Care", "Industrials", "Information Technology", "Materials", "Real Estate", "Utilities",
}

// SearchInput is the input of search_equities.
type SearchInput struct {
	Query        string  `json:"query,omitempty" jsonschema:"free text matched case-insensitively against ticker and company name; exact ticker ranks first, then ticker prefix, then name prefix, then substring"`
	Sector       string  `json:"sector,omitempty" jsonschema:"GICS sector to restrict to"`
	Exchange     string  `json:"exchange,omitempty" jsonschema:"primary listing exchange to restrict to"`
	MinMarketCap float64 `json:"min_market_cap,omitempty" jsonschema:"minimum market capitalisation in USD, e.g. 10000000000 for 10bn"`
	MaxMarketCap float64 `json:"max_market_cap,omitempty" jsonschema:"maximum market capitalisation in USD"`
	Limit        int     `json:"limit,omitempty" jsonschema:"page size, 1 to 100 (default 20)"`
	Cursor       string  `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page of the same search"`
}

// QuotesInput is the input of get_quotes.
type QuotesInput struct {
	Tickers []string `json:"tickers" jsonschema:"tickers to quote, 1 to 50, e.g. [\"AAPL\", \"MSFT\"]"`
}

func (h *handlers) registerMarket(r registrar) {
	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:  "search_equities",
		Title: "Search equities",
		Description: "Search the listed equity universe by ticker, company name or kind of business (a GICS industry or sector word: \"bank\", \"semiconductor\", \"insurance\"), " +
			"and filter by GICS sector, exchange and market-cap range. " +
			"Results are ranked (exact ticker, ticker prefix, name prefix, name substring, industry, sector; then by market cap) and paginated: " +
			"pass next_cursor back as cursor for the next page. With no filters it lists the whole universe.",
		Annotations: readOnly,
	}, inputSchema[SearchInput](func(p map[string]*jsonschema.Schema) {
		p["query"].MaxLength = ptr(64)
		p["sector"].Enum = GICSSectors
		p["exchange"].Enum = []any{"NYSE", "NASDAQ"}
		p["min_market_cap"].Minimum = ptr(0.0)
		p["max_market_cap"].Minimum = ptr(0.0)
		p["limit"].Minimum, p["limit"].Maximum = ptr(1.0), ptr(float64(backends.MaxSearchLimit))
		p["limit"].Default = []byte("20")
		p["cursor"].MaxLength = ptr(64)
	}), h.searchEquities)

	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:  "get_quotes",
		Title: "Get quotes",
		Description: "Latest quote for up to 50 tickers: price, previous close, change, bid/ask, volume and time. " +
			"Unknown tickers are listed under missing instead of failing the call.",
		Annotations: readOnly,
	}, inputSchema[QuotesInput](func(p map[string]*jsonschema.Schema) {
		t := p["tickers"]
		// A Go slice derives as ["null","array"]; a required list is an array.
		t.Type, t.Types = "array", nil
		t.MinItems, t.MaxItems = ptr(1), ptr(MaxQuoteTickers)
		t.Items.Pattern = tickerPattern
	}), h.getQuotes)

	r.s.AddResourceTemplate(&mcp.ResourceTemplate{
		Name:        "quote",
		Title:       "Quote of a ticker",
		URITemplate: QuoteURITemplate,
		Description: "Latest quote of one listed equity as JSON (an entry of get_quotes' output). The ticker completes (completion/complete).",
		MIMEType:    "application/json",
	}, h.readQuote)
}

// QuoteURITemplate is the quote resource template.
const QuoteURITemplate = "quote://tickers/{ticker}"

const quoteURIPrefix = "quote://tickers/"

// validTicker is tickerPattern as code: 1 to 10 ASCII letters, digits, '.'
// or '-', starting with a letter. TestValidTicker holds the two to the
// same answers.
func validTicker(t string) bool {
	if t == "" || len(t) > 10 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && ('0' <= c && c <= '9' || c == '.' || c == '-')) {
			return false
		}
	}
	return true
}

func (h *handlers) readQuote(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := req.Params.URI
	ticker, err := url.PathUnescape(strings.TrimPrefix(uri, quoteURIPrefix))
	if !strings.HasPrefix(uri, quoteURIPrefix) || err != nil || !validTicker(ticker) {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	set, err := h.Backends.MarketData.Quotes(ctx, []string{strings.ToUpper(ticker)})
	if err != nil {
		return nil, h.toolError(ctx, fmt.Sprintf("ticker %q", ticker), err)
	}
	if len(set.Quotes) == 0 {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	body, err := json.Marshal(set.Quotes[0])
	if err != nil {
		return nil, fmt.Errorf("encoding quote: %w", err)
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(body)}}}, nil
}

func (h *handlers) searchEquities(ctx context.Context, _ *mcp.CallToolRequest, in SearchInput) (*mcp.CallToolResult, backends.EquityPage, error) {
	page, err := h.Backends.MarketData.SearchEquities(ctx, backends.EquityQuery{
		Text: in.Query, Sector: in.Sector, Exchange: in.Exchange,
		MinMarketCap: in.MinMarketCap, MaxMarketCap: in.MaxMarketCap, Limit: in.Limit, Cursor: in.Cursor,
	})
	if err != nil {
		return nil, backends.EquityPage{}, h.toolError(ctx, "the equity search", err)
	}
	return nil, page, nil
}

func (h *handlers) getQuotes(ctx context.Context, _ *mcp.CallToolRequest, in QuotesInput) (*mcp.CallToolResult, backends.QuoteSet, error) {
	// Deduplicate case-insensitively so a repeated ticker costs one lookup.
	seen := make(map[string]bool, len(in.Tickers))
	tickers := make([]string, 0, len(in.Tickers))
	for _, t := range in.Tickers {
		u := strings.ToUpper(t)
		if !seen[u] {
			seen[u] = true
			tickers = append(tickers, u)
		}
	}
	set, err := h.Backends.MarketData.Quotes(ctx, tickers)
	if err != nil {
		return nil, backends.QuoteSet{}, h.toolError(ctx, "quotes", err)
	}
	return nil, set, nil
}

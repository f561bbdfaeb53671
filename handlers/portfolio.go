package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// PortfolioURITemplate is the get_portfolio resource template.
const PortfolioURITemplate = catalog.PortfolioURITemplate

const portfolioURIPrefix = "portfolio://accounts/"

// AccountInput names one account.
type AccountInput struct {
	AccountID string `json:"account_id" jsonschema:"the account to read, as returned by list_accounts (e.g. ACC-1001)"`
}

// AccountList is the output of list_accounts.
type AccountList struct {
	Accounts []backends.Account `json:"accounts"`
}

func accountSchema() schemaSource {
	return inputSchema[AccountInput](func(p map[string]*jsonschema.Schema) {
		p["account_id"].Pattern = accountIDPattern
	})
}

func (h *handlers) registerPortfolio(r registrar) {
	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:        "list_accounts",
		Title:       "List accounts",
		Description: "List the accounts you may view: id, name, type, owner and base currency. Start here to find an account_id for the other tools.",
		Annotations: readOnly,
	}, inputSchema[struct{}](nil), h.listAccounts)

	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:  "get_portfolio",
		Title: "Get portfolio",
		Description: "Holdings of one account valued at the latest prices: per position quantity, average cost, cost basis, price, " +
			"market value, unrealized P&L and weight (largest first), plus cash, totals and the valuation time. " +
			"Same data as the resource " + PortfolioURITemplate + ".",
		Annotations: readOnly,
	}, accountSchema(), h.getPortfolio)

	r.s.AddResourceTemplate(&mcp.ResourceTemplate{
		Name:        "get_portfolio",
		Title:       "Portfolio of an account",
		URITemplate: PortfolioURITemplate,
		Description: "Valued holdings, cash and totals of one account as JSON (the get_portfolio tool's output).",
		MIMEType:    "application/json",
	}, h.readPortfolio)
}

func (h *handlers) listAccounts(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, AccountList, error) {
	accts, err := h.Backends.Portfolio.ListAccounts(ctx)
	if err != nil {
		return nil, AccountList{}, h.toolError(ctx, "the account list", err)
	}
	// Only the accounts the caller is entitled to; no principal, none.
	// A new slice: the backend may share the one it returned.
	p, _ := principal.From(ctx)
	mine := make([]backends.Account, 0, len(accts))
	for _, a := range accts {
		if p.Entitled(a.ID) {
			mine = append(mine, a)
		}
	}
	return nil, AccountList{Accounts: mine}, nil
}

func (h *handlers) getPortfolio(ctx context.Context, _ *mcp.CallToolRequest, in AccountInput) (*mcp.CallToolResult, backends.PortfolioValuation, error) {
	v, err := h.Backends.Portfolio.GetPortfolio(ctx, in.AccountID)
	if err != nil {
		return nil, backends.PortfolioValuation{}, h.toolError(ctx, fmt.Sprintf("account %q", in.AccountID), err)
	}
	return nil, v, nil
}

func (h *handlers) readPortfolio(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	uri := req.Params.URI
	id, err := url.PathUnescape(strings.TrimPrefix(uri, portfolioURIPrefix))
	if !strings.HasPrefix(uri, portfolioURIPrefix) || err != nil || !principal.ValidAccountID(id) {
		return nil, mcp.ResourceNotFoundError(uri)
	}
	v, err := h.Backends.Portfolio.GetPortfolio(ctx, id)
	if err != nil {
		if errors.Is(err, backends.ErrNotFound) {
			return nil, mcp.ResourceNotFoundError(uri)
		}
		return nil, h.toolError(ctx, fmt.Sprintf("account %q", id), err)
	}
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding portfolio: %w", err)
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(body)}}}, nil
}

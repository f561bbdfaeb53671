package handlers

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// maxCompletions is the most values one completion/complete returns (the
// protocol's limit).
const maxCompletions = 100

// Completion answers completion/complete for the arguments agents and
// people type: account_id (only accounts the caller is entitled to, by id
// or name prefix) and ticker (by ticker prefix, then name). Set it as
// mcp.ServerOptions.CompletionHandler.
func Completion(bs backends.Set) func(context.Context, *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
	return func(ctx context.Context, req *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
		args, err := refArguments(req.Params.Ref)
		if err != nil {
			return nil, err
		}
		prefix := strings.ToUpper(req.Params.Argument.Value)
		var values []string
		total := 0
		name := req.Params.Argument.Name
		if !slices.Contains(args, name) {
			name = "" // not an argument of that prompt or template: nothing to offer
		}
		switch name {
		case "account_id":
			accts, err := entitledAccounts(ctx, bs)
			if err != nil {
				return nil, unavailable("the account list")
			}
			for _, a := range accts {
				if strings.HasPrefix(strings.ToUpper(a.ID), prefix) || strings.HasPrefix(strings.ToUpper(a.Name), prefix) {
					values = append(values, a.ID)
				}
			}
			total = len(values)
		case "ticker":
			if prefix == "" {
				break // the whole universe helps nobody
			}
			page, err := bs.MarketData.SearchEquities(ctx, backends.EquityQuery{Text: prefix, Limit: maxCompletions})
			if err != nil {
				return nil, unavailable("the equity universe")
			}
			for _, e := range page.Equities {
				values = append(values, e.Ticker)
			}
			total = page.Total
		}
		values = values[:min(len(values), maxCompletions)]
		if values == nil {
			values = []string{} // never null on the wire
		}
		return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: values, Total: total, HasMore: total > len(values)}}, nil
	}
}

// refArguments are the arguments of the prompt or resource template ref
// names; one this server does not have is invalid params, as the protocol
// asks.
func refArguments(ref *mcp.CompleteReference) ([]string, error) {
	switch {
	case ref == nil:
	case ref.Type == "ref/prompt" && ref.Name == portfolioReviewPrompt().Name:
		var names []string
		for _, a := range portfolioReviewPrompt().Arguments {
			names = append(names, a.Name)
		}
		return names, nil
	case ref.Type == "ref/resource" && ref.URI == PortfolioURITemplate:
		return []string{"account_id"}, nil
	case ref.Type == "ref/resource" && ref.URI == QuoteURITemplate:
		return []string{"ticker"}, nil
	case ref.Type == "ref/prompt":
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown prompt %q; see prompts/list", ref.Name)}
	case ref.Type == "ref/resource":
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown resource template %q; see resources/templates/list", ref.URI)}
	}
	return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: `ref must name a prompt ("ref/prompt") or a resource template ("ref/resource")`}
}

// unavailable is the JSON-RPC error for a backend that failed behind a
// non-tool method (tool calls answer with toolError instead).
func unavailable(what string) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: what + " is temporarily unavailable; retry in a few seconds"}
}

// entitledAccounts are the accounts the caller may see, in the backend's
// order.
func entitledAccounts(ctx context.Context, bs backends.Set) ([]backends.Account, error) {
	accts, err := bs.Portfolio.ListAccounts(ctx)
	if err != nil {
		return nil, err
	}
	p, _ := principal.From(ctx)
	return slices.DeleteFunc(slices.Clone(accts), func(a backends.Account) bool { return !p.Entitled(a.ID) }), nil
}

// listAccountResources answers resources/list with the portfolio of every
// account the caller may see, as concrete portfolio://accounts/... resources
// (the template alone tells an agent nothing about which ids exist). The
// list depends on who asks; authz marks it private.
func listAccountResources(bs backends.Set) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if method != "resources/list" {
				return next(ctx, method, req)
			}
			// One page, always: a cursor is one this server never issued,
			// refused as the SDK refuses one for the lists it pages.
			if r, ok := req.(*mcp.ListResourcesRequest); ok && r.Params != nil && r.Params.Cursor != "" {
				return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid cursor: resources/list returns every resource at once, without one"}
			}
			accts, err := entitledAccounts(ctx, bs)
			if err != nil {
				return nil, unavailable("the account list")
			}
			res := &mcp.ListResourcesResult{Resources: make([]*mcp.Resource, 0, len(accts))}
			for _, a := range accts {
				res.Resources = append(res.Resources, &mcp.Resource{
					URI:         portfolioURIPrefix + url.PathEscape(a.ID),
					Name:        "portfolio-" + a.ID,
					Title:       "Portfolio of " + a.Name + " (" + a.ID + ")",
					Description: "Valued holdings, cash and totals of " + a.Type + " account " + a.ID + " owned by " + a.Owner + ", as JSON.",
					MIMEType:    "application/json",
				})
			}
			return res, nil
		}
	}
}

// Package authz decides what an authenticated principal may do: which tools
// it may see and call (a scope per tool class) and which accounts it may
// see or trade (entitlements). It enforces this twice: as MCP middleware on
// every call, which is authoritative, and in front of the MCP handler as an
// HTTP step-up challenge (403 with WWW-Authenticate error="insufficient_scope"),
// which is what the MCP authorization spec asks a server to send so that a
// client can obtain a token with the missing scope.
package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// JSON-RPC error codes of this package, in the implementation-defined
// server error range.
const (
	// CodeUnauthenticated: a request reached MCP without a principal (a
	// wiring fault; it cannot happen behind the oauth middleware).
	CodeUnauthenticated = -32001
	// CodeInsufficientScope: the principal's token lacks the tool's scope.
	CodeInsufficientScope = -32003
)

// Policy maps tool classes to scopes and checks principals against them.
type Policy struct {
	catalog *catalog.Catalog
	scopes  catalog.Scopes
}

// New returns the policy for the tools in cat. The catalog is read at call
// time, so tools registered after New are covered.
func New(cat *catalog.Catalog, s catalog.Scopes) *Policy {
	return &Policy{catalog: cat, scopes: s}
}

// Scope is the scope call c needs and the class it is recorded under; ok
// is false for a tool that is not in the catalog (and so may not be called
// at all) or a method that needs no scope of its own.
func (p *Policy) Scope(c *call.Call) (scope string, class catalog.Class, ok bool) {
	switch c.Method {
	case "resources/read", "completion/complete":
		return p.scopes.For(catalog.Read), catalog.Read, true
	case "tools/call":
		t, ok := p.catalog.Lookup(c.Tool)
		if !ok {
			return "", "", false
		}
		return p.scopes.For(t.Class), t.Class, true
	}
	return "", "", false
}

// Middleware enforces the policy on every MCP request: tools/list shows only
// the tools the principal may call; tools/call needs the tool's scope and an
// entitlement to every account_id in its arguments; resources need the read
// scope and an entitlement to the portfolio they name. A call about an
// account the principal is not entitled to gets exactly the answer a call
// about an account that does not exist gets.
func (p *Policy) Middleware() mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			pr, ok := principal.From(ctx)
			if !ok {
				return nil, &jsonrpc.Error{Code: CodeUnauthenticated, Message: "unauthenticated"}
			}
			readable := pr.HasScope(p.scopes.For(catalog.Read))
			if c := call.From(ctx); c != nil && c.Governed() {
				if err := p.check(pr, c); err != nil {
					return nil, err
				}
			}
			if method == "resources/list" && !readable {
				// Listed as the templates are: empty, and without asking the
				// Portfolio service. A scope challenge here would send
				// clients that list resources when they connect (an
				// approver's agent, a risk officer's) into step-up sign-in.
				empty := &mcp.ListResourcesResult{Resources: []*mcp.Resource{}}
				empty.CacheScope = "private"
				return empty, nil
			}
			res, err := next(ctx, method, req)
			if err != nil {
				return res, err
			}
			switch r := res.(type) {
			case *mcp.ListToolsResult:
				r.Tools = slices.DeleteFunc(r.Tools, func(t *mcp.Tool) bool {
					e, ok := p.catalog.Lookup(t.Name)
					return !ok || !pr.HasScope(p.scopes.For(e.Class))
				})
				r.CacheScope = "private" // the list depends on who asks
			case *mcp.ListResourceTemplatesResult:
				if !readable {
					r.ResourceTemplates = nil
				}
				r.CacheScope = "private"
			case *mcp.ListResourcesResult:
				r.CacheScope = "private" // the caller's accounts
			case *mcp.ReadResourceResult:
				r.CacheScope = "private" // an account's data, for those entitled to it
			}
			return res, nil
		}
	}
}

// Known reports whether tool is one of the server's, for the steps that name
// a call before it is authorised (an unknown name is the caller's to make
// up).
func (p *Policy) Known(tool string) bool {
	_, ok := p.catalog.Lookup(tool)
	return ok
}

// check decides call c for pr: nil, or the refusal to answer.
func (p *Policy) check(pr principal.Principal, c *call.Call) error {
	if c.Method == "resources/list" {
		return nil // the caller's own accounts, and none without the read scope (Middleware)
	}
	scope, _, known := p.Scope(c)
	if !known {
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown tool %q", c.Tool)}
	}
	if !pr.HasScope(scope) {
		return denied(scope, p.challengeScope(pr, c, scope), what(c))
	}
	switch c.Method {
	case "completion/complete":
		return nil // it completes the caller's own accounts only
	case "resources/read":
		if id, ok := portfolioAccount(c.URI); ok && !pr.Entitled(id) {
			return &outcome.Refused{Outcome: outcome.Denied, Reason: "not entitled to the account", Err: mcp.ResourceNotFoundError(c.URI).(*jsonrpc.Error)}
		}
		return nil
	}
	accounts, err := c.Accounts()
	if err != nil {
		// Bad input is a tool error the model reads and can correct, as
		// every other invalid argument is (not a JSON-RPC error, which a
		// 2026-07-28 client sees as an HTTP 400).
		res := &mcp.CallToolResult{}
		res.SetError(fmt.Errorf("invalid arguments: %v; send the arguments as one JSON object that names each argument once", err))
		return &outcome.Refused{Outcome: outcome.ToolError, Reason: "invalid arguments: " + err.Error(), Result: res}
	}
	for _, id := range accounts {
		if !pr.Entitled(id) {
			res := &mcp.CallToolResult{}
			res.SetError(catalog.AccountNotAccessible(id))
			return &outcome.Refused{Outcome: outcome.Denied, Reason: "not entitled to the account", Result: res}
		}
	}
	return nil
}

// what names the operation of c in a refusal.
func what(c *call.Call) string {
	if c.Method == "tools/call" {
		return fmt.Sprintf("the tool %q", c.Tool)
	}
	return whatPlain(c)
}

// whatPlain is what, without quotes: for a header's quoted string.
func whatPlain(c *call.Call) string {
	switch c.Method {
	case "tools/call":
		return "the tool " + c.Tool
	case "completion/complete":
		return "completing arguments"
	}
	return "reading resources"
}

// denied is the MCP-level refusal for a missing scope. (The HTTP challenge
// usually answers first; this is the authoritative check.)
func denied(scope, ask, what string) error {
	data, _ := json.Marshal(map[string]string{"error": "insufficient_scope", "scope": ask})
	return &outcome.Refused{Outcome: outcome.Denied, Reason: "insufficient_scope: " + scope, Err: &jsonrpc.Error{
		Code:    CodeInsufficientScope,
		Message: fmt.Sprintf("insufficient scope: %s requires the scope %q; obtain a token that grants it", what, scope),
		Data:    data,
	}}
}

// portfolioAccount extracts the account id from a portfolio resource URI,
// exactly as the resource handler does.
func portfolioAccount(uri string) (string, bool) {
	rest, ok := catalog.PortfolioAccount(uri)
	if !ok {
		return "", false
	}
	id, err := url.PathUnescape(rest)
	if err != nil {
		return "", false
	}
	return id, true
}

// Package authz decides what an authenticated principal may do: which tools
// it may see and call (a scope per tool class) and which accounts it may
// see or trade (entitlements). It enforces this twice: as MCP middleware on
// every call, which is authoritative, and in front of the MCP handler as an
// HTTP step-up challenge (403 with WWW-Authenticate error="insufficient_scope"),
// which is what the MCP authorization spec asks a server to send so that a
// client can obtain a token with the missing scope.
package authz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/handlers"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
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

// accountArg is the argument that names an account, in every tool that
// takes one (the convention all tools follow).
const accountArg = "account_id"

// portfolioURIPrefix is where the portfolio resource template's account id
// starts.
var portfolioURIPrefix = strings.TrimSuffix(handlers.PortfolioURITemplate, "{account_id}")

// Policy maps tool classes to scopes and checks principals against them.
type Policy struct {
	catalog handlers.Catalog
	scopes  map[handlers.Class]string
}

// Scopes names the scope granting each tool class.
type Scopes struct {
	Read, Trade, Approve string
}

// New returns the policy for the tools in catalog. The catalog is read at
// call time, so tools registered after New are covered.
func New(catalog handlers.Catalog, s Scopes) *Policy {
	return &Policy{catalog: catalog, scopes: map[handlers.Class]string{
		handlers.ClassRead:    s.Read,
		handlers.ClassTrade:   s.Trade,
		handlers.ClassApprove: s.Approve,
	}}
}

// All lists the scopes in the order read, trade, approve.
func (s Scopes) All() []string { return []string{s.Read, s.Trade, s.Approve} }

// ToolScope is the scope needed to call tool; ok is false for a tool that
// is not in the catalog (and so may not be called at all).
func (p *Policy) ToolScope(tool string) (scope string, ok bool) {
	class, ok := p.catalog[tool]
	if !ok {
		return "", false
	}
	scope, ok = p.scopes[class]
	return scope, ok
}

// ClassOf is the class of tool as a string, "" if unknown: the classifier
// the audit and rate-limit middleware take.
func (p *Policy) ClassOf(tool string) string {
	return string(p.catalog[tool])
}

// ReadScope is the scope needed to read resources.
func (p *Policy) ReadScope() string { return p.scopes[handlers.ClassRead] }

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
			switch params := req.GetParams().(type) {
			case *mcp.CallToolParamsRaw:
				return p.callTool(ctx, pr, params, func() (mcp.Result, error) { return next(ctx, method, req) })
			case *mcp.ReadResourceParams:
				if !pr.HasScope(p.ReadScope()) {
					return nil, denied(ctx, p.ReadScope(), "reading resources")
				}
				if id, ok := portfolioAccount(params.URI); ok && !pr.Entitled(id) {
					audit.Annotate(ctx, func(e *audit.Event) { e.Outcome, e.Error = audit.OutcomeDenied, "not entitled to the account" })
					return nil, mcp.ResourceNotFoundError(params.URI)
				}
			}
			res, err := next(ctx, method, req)
			if err != nil {
				return res, err
			}
			switch r := res.(type) {
			case *mcp.ListToolsResult:
				r.Tools = slices.DeleteFunc(r.Tools, func(t *mcp.Tool) bool {
					scope, ok := p.ToolScope(t.Name)
					return !ok || !pr.HasScope(scope)
				})
				r.CacheScope = "private" // the list depends on who asks
			case *mcp.ListResourceTemplatesResult:
				if !pr.HasScope(p.ReadScope()) {
					r.ResourceTemplates = nil
				}
				r.CacheScope = "private"
			case *mcp.ListResourcesResult:
				if !pr.HasScope(p.ReadScope()) {
					r.Resources = nil
				}
				r.CacheScope = "private"
			}
			return res, nil
		}
	}
}

func (p *Policy) callTool(ctx context.Context, pr principal.Principal, params *mcp.CallToolParamsRaw, next func() (mcp.Result, error)) (mcp.Result, error) {
	scope, known := p.ToolScope(params.Name)
	if !known {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("unknown tool %q", params.Name)}
	}
	if !pr.HasScope(scope) {
		return nil, denied(ctx, scope, fmt.Sprintf("the tool %q", params.Name))
	}
	accounts, err := Accounts(params.Arguments)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid arguments: " + err.Error()}
	}
	for _, id := range accounts {
		if !pr.Entitled(id) {
			audit.Annotate(ctx, func(e *audit.Event) { e.Outcome, e.Error = audit.OutcomeDenied, "not entitled to the account" })
			res := &mcp.CallToolResult{}
			res.SetError(handlers.AccountNotAccessible(id))
			return res, nil
		}
	}
	return next()
}

// denied is the MCP-level refusal for a missing scope. (The HTTP challenge
// usually answers first; this is the authoritative check.)
func denied(ctx context.Context, scope, what string) error {
	audit.Annotate(ctx, func(e *audit.Event) { e.Outcome, e.Error = audit.OutcomeDenied, "insufficient_scope: "+scope })
	data, _ := json.Marshal(map[string]string{"error": "insufficient_scope", "scope": scope})
	return &jsonrpc.Error{
		Code:    CodeInsufficientScope,
		Message: fmt.Sprintf("insufficient scope: %s requires the scope %q; obtain a token that grants it", what, scope),
		Data:    data,
	}
}

// Accounts returns every account id named by an account_id key (matched
// case-insensitively, at any depth) in a tool's JSON arguments. Arguments
// that repeat a key in one object are refused: parsers disagree on which
// copy wins, and the check must see what the tool will see.
func Accounts(args json.RawMessage) ([]string, error) {
	if len(bytes.TrimSpace(args)) == 0 {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(args))
	d.UseNumber()
	var ids []string
	if err := walk(d, 0, &ids); err != nil {
		return nil, err
	}
	if _, err := d.Token(); err == nil {
		return nil, errors.New("trailing data after the arguments")
	}
	return ids, nil
}

const maxArgsDepth = 64

// walk reads one JSON value from d, collecting account ids.
func walk(d *json.Decoder, depth int, ids *[]string) error {
	if depth > maxArgsDepth {
		return errors.New("arguments nest too deeply")
	}
	tok, err := d.Token()
	if err != nil {
		return errors.New("arguments are not valid JSON")
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return errors.New("arguments are not valid JSON")
			}
			key := kt.(string)
			if seen[key] {
				return fmt.Errorf("duplicate key %q", key)
			}
			seen[key] = true
			if strings.EqualFold(key, accountArg) {
				var v any
				if err := d.Decode(&v); err != nil {
					return errors.New("arguments are not valid JSON")
				}
				if s, ok := v.(string); ok {
					*ids = append(*ids, s)
				}
				continue // a non-string id fails the tool's own schema
			}
			if err := walk(d, depth+1, ids); err != nil {
				return err
			}
		}
		_, err = d.Token() // '}'
	case json.Delim('['):
		for d.More() {
			if err := walk(d, depth+1, ids); err != nil {
				return err
			}
		}
		_, err = d.Token() // ']'
	}
	if err != nil {
		return errors.New("arguments are not valid JSON")
	}
	return nil
}

// portfolioAccount extracts the account id from a portfolio resource URI,
// exactly as the resource handler does.
func portfolioAccount(uri string) (string, bool) {
	rest, ok := strings.CutPrefix(uri, portfolioURIPrefix)
	if !ok {
		return "", false
	}
	id, err := url.PathUnescape(rest)
	if err != nil {
		return "", false
	}
	return id, true
}

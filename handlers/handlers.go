// Package handlers is the MCP surface of the server: tools, the portfolio
// resource template and prompts. Handlers speak to the firm's services only
// through the backends interfaces and know nothing of HTTP, tokens or
// transports; cross-cutting policy (auth, scopes, rate limits, audit) wraps
// them as MCP middleware.
package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// Deps are what the handlers need, wired in main.
type Deps struct {
	Backends backends.Set
	Logger   *slog.Logger
	// Trading enables the order tools; nil leaves them out.
	Trading *trading.Service
	// TypedSDK registers tools with the go-sdk's typed mcp.AddTool (input
	// and output validated on every call) instead of compileTool, so the
	// differential tests and benchmarks can run both side by side.
	TypedSDK bool
}

// Surface is what Register added: the catalog of its tools (for
// governance) and the handlers' own MCP middleware.
type Surface struct {
	Catalog *catalog.Catalog
	// Middleware runs innermost, next to the tools: the tools' own
	// validation errors explained in their terms, and resources/list
	// listing the accounts' portfolios.
	Middleware []mcp.Middleware
	// Direct are the handlers of the tools that never ask the client for
	// input (every tool but the trade tools), by name: a stateless call of
	// one needs nothing of an MCP session, so the edge may answer it without
	// creating one (see internal/edge/direct). Empty with TypedSDK.
	Direct map[string]mcp.ToolHandler
}

// Register adds the finance capabilities to s and returns what it added.
// The caller installs Surface.Middleware innermost in its middleware list.
func Register(s *mcp.Server, d Deps) Surface {
	h := &handlers{Deps: d}
	r := registrar{s: s, cat: catalog.New(), typed: d.TypedSDK, outputs: outputSchemas{}, inputs: map[string]*jsonschema.Schema{}, direct: map[string]mcp.ToolHandler{}}
	h.registerPortfolio(r)
	h.registerMarket(r)
	h.registerRisk(r)
	if d.Trading != nil {
		h.registerTrading(r)
	}
	h.registerPrompts(s)
	return Surface{Catalog: r.cat, Middleware: []mcp.Middleware{explainInvalidArguments(r.inputs), listAccountResources(d.Backends)}, Direct: r.direct}
}

type handlers struct {
	Deps
}

// addTool registers a typed tool with an explicit input schema (so bounds and
// patterns are part of the contract an agent sees) and records its class.
// The input schema is resolved once, on the tool's first call, and enforced
// on every call; the output shape is guaranteed by Out and checked against the declared output
// schema by tests (see compileTool).
func addTool[In, Out any](r registrar, entry catalog.Tool, t *mcp.Tool, in *jsonschema.Schema, h mcp.ToolHandlerFor[In, Out]) {
	t.InputSchema = in
	entry.Name = t.Name
	r.cat.Add(entry)
	r.inputs[t.Name] = in
	if r.typed {
		mcp.AddTool(r.s, t, h)
		return
	}
	tt, th := compileTool(t, h, r.outputs)
	r.s.AddTool(tt, th)
	if entry.Class != catalog.Trade {
		r.direct[t.Name] = th
	}
}

// registrar is where tools are being registered.
type registrar struct {
	s       *mcp.Server
	cat     *catalog.Catalog
	typed   bool
	outputs outputSchemas
	inputs  map[string]*jsonschema.Schema // by tool name
	direct  map[string]mcp.ToolHandler    // by tool name: see Surface.Direct
}

// inputSchema derives the JSON schema of T and lets edit add bounds that Go
// types cannot express.
func inputSchema[T any](edit func(props map[string]*jsonschema.Schema)) *jsonschema.Schema {
	sch, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("schema for %T: %v", *new(T), err))
	}
	if edit != nil {
		edit(sch.Properties)
	}
	return sch
}

// Patterns shared by inputs; they double as the first line of defence
// against injection into backend URLs.
const (
	accountIDPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`
	tickerPattern    = `^[A-Za-z][A-Za-z0-9.\-]{0,9}$`
)

func ptr[T any](v T) *T { return &v }

var readOnly = &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)}

// notAccessible is the answer for something that does not exist or that
// the caller may not see: the two are worded alike on purpose, so an answer
// never reveals whether an account exists.
func notAccessible(what string) error {
	return fmt.Errorf("%s was not found or is not accessible to you", what)
}

// toolError turns a backend failure into the message an agent sees: what
// went wrong and what to do next, never a URL, body or stack. The full
// error goes to the log under the request id the message quotes.
func (h *handlers) toolError(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(err, backends.ErrNotFound):
		return notAccessible(what)
	case errors.Is(err, backends.ErrInvalid):
		return err
	case errors.Is(err, context.Canceled):
		return errors.New("the request was cancelled")
	}
	h.Logger.WarnContext(ctx, "backend call failed", "what", what, "error", err)
	ref := telemetry.RequestID(ctx)
	if errors.Is(err, backends.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("the service behind %s is temporarily unavailable; retry in a few seconds (ref %s)", what, ref)
	}
	return fmt.Errorf("internal error while reading %s (ref %s)", what, ref)
}

// Coded gives every error a JSON-RPC code. A handler's plain Go error would
// otherwise leave as code 0, which no client can act on; its message was
// written for the agent (toolError and friends), so it is kept, under
// -32603. Errors that carry a code (invalid params, rate limits, missing
// scopes) pass as they are.
func Coded() mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			var wire *jsonrpc.Error
			var refused *outcome.Refused
			if err != nil && !errors.As(err, &wire) && !errors.As(err, &refused) {
				return res, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
			}
			return res, err
		}
	}
}

// Recover turns a panic in any MCP method into an internal JSON-RPC error
// and a log line, so no input can take a replica down or leak a stack.
func Recover(log *slog.Logger) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (res mcp.Result, err error) {
			defer func() {
				if p := recover(); p != nil {
					log.ErrorContext(ctx, "panic in MCP handler", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					res, err = nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "internal error (ref " + telemetry.RequestID(ctx) + ")"}
				}
			}()
			return next(ctx, method, req)
		}
	}
}

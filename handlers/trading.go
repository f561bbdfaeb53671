package handlers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// OrderInput is a proposed order (preview_order).
type OrderInput struct {
	AccountID  string  `json:"account_id" jsonschema:"account to trade in (see list_accounts)"`
	Ticker     string  `json:"ticker" jsonschema:"equity to trade, e.g. AAPL"`
	Side       string  `json:"side" jsonschema:"buy or sell"`
	Quantity   float64 `json:"quantity" jsonschema:"whole number of shares"`
	OrderType  string  `json:"order_type,omitempty" jsonschema:"market (default) or limit"`
	LimitPrice float64 `json:"limit_price,omitempty" jsonschema:"limit price per share, on the tick: required for limit orders, refused with a market order"`
}

// PlaceInput is place_order's input.
type PlaceInput struct {
	OrderInput
	IdempotencyKey string `json:"idempotency_key" jsonschema:"a unique key you choose for this order (e.g. a UUID); retrying with the same key and arguments never places a second order"`
	Confirm        bool   `json:"confirm,omitempty" jsonschema:"for clients without multi round-trip input requests: set true only after the user has seen the order summary and confirmed it"`
	// AcknowledgeDuplicate answers a possible_duplicate warning.
	AcknowledgeDuplicate string `json:"acknowledge_duplicate,omitempty" jsonschema:"the possible_duplicate's idempotency_key, only after the user, shown that warning, confirmed they want a second, separate order"`
}

// IDInput names an order or an approval.
type IDInput struct {
	ID string `json:"id" jsonschema:"an order_id (ORD-...) or an approval_id (APR-...)"`
}

// PendingInput is list_pending_approvals' input.
type PendingInput struct {
	Limit int `json:"limit,omitempty" jsonschema:"maximum approvals to return, 1 to 100 (default 50)"`
}

// ListOrdersInput is list_orders' input.
type ListOrdersInput struct {
	AccountID string   `json:"account_id" jsonschema:"the account whose orders to list (see list_accounts)"`
	States    []string `json:"states,omitempty" jsonschema:"keep only orders in these states; open means every state that may still change"`
	Since     string   `json:"since,omitempty" jsonschema:"only orders placed at or after this time (RFC 3339, e.g. 2026-12-01T14:30:00Z)"`
	Until     string   `json:"until,omitempty" jsonschema:"only orders placed at or before this time (RFC 3339)"`
	Limit     int      `json:"limit,omitempty" jsonschema:"page size, 1 to 50 (default 20)"`
	Cursor    string   `json:"cursor,omitempty" jsonschema:"next_cursor from the previous page of the same listing"`
}

// PendingList is list_pending_approvals' output.
type PendingList struct {
	Approvals []trading.Approval `json:"approvals" jsonschema:"pending approvals, oldest first"`
}

const idempotencyKeyPattern = `^[A-Za-z0-9._:-]{8,128}$`

func orderProps(p map[string]*jsonschema.Schema) {
	p["account_id"].Pattern = accountIDPattern
	p["ticker"].Pattern = tickerPattern
	p["side"].Enum = []any{"buy", "sell"}
	p["quantity"].Minimum, p["quantity"].Maximum = ptr(1.0), ptr(1e7)
	p["order_type"].Enum = []any{"market", "limit"}
	p["order_type"].Default = []byte(`"market"`)
	p["limit_price"].ExclusiveMinimum, p["limit_price"].Maximum = ptr(0.0), ptr(1e7)
}

func (h *handlers) registerTrading(r registrar) {
	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:  "preview_order",
		Title: "Preview order",
		Description: "Pre-trade check of a proposed order without placing it: estimated price and notional, position weight before and after, " +
			"largest concentration after, buying power, market hours, rule violations, and whether a human approval will be needed and why.",
		Annotations: readOnly,
	}, inputSchema[OrderInput](orderProps), h.previewOrder)

	addTool(r, catalog.Tool{Class: catalog.Trade, ConfirmFirst: true}, &mcp.Tool{
		Name:  "place_order",
		Title: "Place order",
		Description: "Place an equity order after the user's confirmation. Runs the same checks as preview_order; then either executes, " +
			"or records a pending approval for a human approver (someone other than you) and returns its approval_id and expiry. " +
			"Always pass a fresh idempotency_key; retry with the same key and arguments after any error: it never places a second order. " +
			"Clients on protocol 2026-07-28 that declare the elicitation capability are asked to confirm through an input request; other clients must show the summary to the user and call again with confirm=true. " +
			"An order identical to one entered moments ago under another key is flagged possible_duplicate and needs the user's explicit acknowledgement. " +
			"Refused while a risk officer's kill switch halts trading for you, this agent or the account.",
		Annotations: &mcp.ToolAnnotations{Title: "Place order", DestructiveHint: ptr(true), IdempotentHint: false, OpenWorldHint: ptr(true)},
	}, inputSchema[PlaceInput](func(p map[string]*jsonschema.Schema) {
		orderProps(p)
		p["idempotency_key"].Pattern = idempotencyKeyPattern
		p["acknowledge_duplicate"].Pattern = idempotencyKeyPattern
	}), h.placeOrder)

	addTool(r, catalog.Tool{Class: catalog.Trade, Bucket: catalog.CancelBudget}, &mcp.Tool{
		Name:        "cancel_order",
		Title:       "Cancel order",
		Description: "Cancel a resting order (order_id) or withdraw your own pending approval request (approval_id). Cancelling twice is harmless.",
		Annotations: &mcp.ToolAnnotations{Title: "Cancel order", DestructiveHint: ptr(true), IdempotentHint: true, OpenWorldHint: ptr(true)},
	}, idSchema(), h.cancelOrder)

	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:  "get_order_status",
		Title: "Get order status",
		Description: "Status of an order (order_id) or of an approval request (approval_id): pending_approval, approved (being sent), then its order's own state " +
			"(accepted, partially_filled, filled, cancelled, rejected, expired), or submitted when that could not be read just now; " +
			"with its provenance: who placed it through which agent, how the user confirmed it, the policy version that allowed it and who approved it. " +
			"Reading the status of an approved order whose sending was interrupted sends it.",
		Annotations: readOnly,
	}, idSchema(), h.getOrderStatus)

	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:  "list_orders",
		Title: "List orders",
		Description: "Your orders and approval requests on one account, newest first, each in its current state (working orders and approvals re-read, as get_order_status does): " +
			"filter by state (open for everything that may still change) and by time placed, page with next_cursor. " +
			"It lists what was placed through this server; get_order_status is the authority on one order.",
		Annotations: readOnly,
	}, inputSchema[ListOrdersInput](func(p map[string]*jsonschema.Schema) {
		p["account_id"].Pattern = accountIDPattern
		p["states"].Type, p["states"].Types = "array", nil
		p["states"].Items.Enum = []any{"open", trading.StatusPendingApproval, trading.StatusApproved, backends.StatusAccepted, backends.StatusPartiallyFilled,
			backends.StatusFilled, backends.StatusCancelled, backends.StatusRejected, backends.StatusExpired, trading.StatusSubmitted, trading.StatusInProgress}
		p["since"].Format, p["until"].Format = "date-time", "date-time"
		p["limit"].Minimum, p["limit"].Maximum = ptr(1.0), ptr(50.0)
		p["cursor"].MaxLength = ptr(256)
	}), h.listOrders)

	addTool(r, catalog.Tool{Class: catalog.Approve}, &mcp.Tool{
		Name:  "list_pending_approvals",
		Title: "List pending approvals",
		Description: "For approvers: orders waiting for a human decision on accounts you may see, oldest first, with the pre-trade check taken when each was requested. " +
			"Decisions are made by people through the approvals API, not through this server's tools.",
		Annotations: readOnly,
	}, inputSchema[PendingInput](func(p map[string]*jsonschema.Schema) {
		p["limit"].Minimum, p["limit"].Maximum = ptr(1.0), ptr(100.0)
	}), h.listPending)
}

func idSchema() schemaSource {
	return inputSchema[IDInput](func(p map[string]*jsonschema.Schema) {
		p["id"].Pattern = `^(ORD|APR)-[A-Za-z0-9]{1,40}$`
	})
}

func (in OrderInput) args(key string) trading.OrderArgs {
	return trading.OrderArgs{AccountID: in.AccountID, Ticker: in.Ticker, Side: in.Side, Type: in.OrderType,
		Quantity: in.Quantity, LimitPrice: in.LimitPrice, IdempotencyKey: key}.Normalize()
}

// caller is the authenticated principal; the HTTP layer always sets one.
func caller(ctx context.Context) (principal.Principal, error) {
	p, ok := principal.From(ctx)
	if !ok {
		return principal.Principal{}, errors.New("unauthenticated: no principal on this call")
	}
	return p, nil
}

func (h *handlers) previewOrder(ctx context.Context, _ *mcp.CallToolRequest, in OrderInput) (*mcp.CallToolResult, policy.Preview, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, policy.Preview{}, err
	}
	pre, err := h.Trading.Preview(ctx, p, in.args(""))
	if err != nil {
		return nil, policy.Preview{}, h.tradeError(ctx, fmt.Sprintf("account %q", in.AccountID), err)
	}
	return nil, pre, nil
}

// placeOrder maps place_order to the trading service: the confirmation as
// the protocol carried it in, and a question for the user (an input
// request) or the outcome out.
func (h *handlers) placeOrder(ctx context.Context, req *mcp.CallToolRequest, in PlaceInput) (*mcp.CallToolResult, trading.Outcome, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, trading.Outcome{}, err
	}
	c := trading.Confirmation{Askable: supportsInputRequests(req), State: req.Params.RequestState,
		Accepted: accepted(req.Params.InputResponses["confirm"]), Claimed: in.Confirm, DuplicateAcknowledged: in.AcknowledgeDuplicate}
	pl, err := h.Trading.PlaceOrder(ctx, p, in.args(in.IdempotencyKey), c)
	switch {
	case err != nil:
		return nil, trading.Outcome{}, h.tradeError(ctx, fmt.Sprintf("account %q", in.AccountID), err)
	case pl.Ask != nil:
		return confirmationRequest(pl.Ask), trading.Outcome{}, nil
	}
	return nil, pl.Outcome, nil
}

// supportsInputRequests reports whether the server may ask this client for
// the user's confirmation with an input request: only on 2026-07-28 (multi
// round-trip results; older clients in a stateless server cannot be asked
// mid-call) and only if this request declares the elicitation capability in
// form mode (a server must not send input requests the client did not
// declare). Everyone else confirms with the confirm argument.
func supportsInputRequests(req *mcp.CallToolRequest) bool {
	if req.ProtocolVersion() < "2026-07-28" {
		return false
	}
	c := req.ClientCapabilities()
	if c == nil || c.Elicitation == nil {
		return false
	}
	// An empty elicitation capability means form mode.
	return c.Elicitation.Form != nil || c.Elicitation.URL == nil
}

func confirmationRequest(a *trading.Ask) *mcp.CallToolResult {
	return &mcp.CallToolResult{
		InputRequests: mcp.InputRequestMap{"confirm": &mcp.ElicitParams{
			Mode:    "form",
			Message: a.Message,
			RequestedSchema: &jsonschema.Schema{
				Type: "object",
				Properties: map[string]*jsonschema.Schema{
					"confirm": {Type: "boolean", Title: "Place this order", Description: "true to place the order as summarised"},
				},
				Required: []string{"confirm"},
			},
		}},
		RequestState: a.State,
	}
}

func accepted(r mcp.InputResponse) bool {
	er, ok := r.(*mcp.ElicitResult)
	if !ok || er == nil || er.Action != "accept" {
		return false
	}
	v, _ := er.Content["confirm"].(bool)
	return v
}

func (h *handlers) cancelOrder(ctx context.Context, _ *mcp.CallToolRequest, in IDInput) (*mcp.CallToolResult, trading.Outcome, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, trading.Outcome{}, err
	}
	out, err := h.Trading.Cancel(ctx, p, in.ID)
	if err != nil {
		return nil, trading.Outcome{}, h.tradeError(ctx, fmt.Sprintf("%q", in.ID), err)
	}
	return nil, out, nil
}

func (h *handlers) getOrderStatus(ctx context.Context, _ *mcp.CallToolRequest, in IDInput) (*mcp.CallToolResult, trading.Outcome, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, trading.Outcome{}, err
	}
	out, err := h.Trading.Status(ctx, p, in.ID)
	if err != nil {
		return nil, trading.Outcome{}, h.tradeError(ctx, fmt.Sprintf("%q", in.ID), err)
	}
	return nil, out, nil
}

func (h *handlers) listOrders(ctx context.Context, _ *mcp.CallToolRequest, in ListOrdersInput) (*mcp.CallToolResult, trading.OrderList, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, trading.OrderList{}, err
	}
	q := trading.ListQuery{AccountID: in.AccountID, States: in.States, Limit: in.Limit, Cursor: in.Cursor}
	if q.Limit == 0 {
		q.Limit = 20
	}
	for _, t := range []struct {
		name, value string
		dst         *time.Time
	}{{"since", in.Since, &q.Since}, {"until", in.Until, &q.Until}} {
		if t.value == "" {
			continue
		}
		if *t.dst, err = time.Parse(time.RFC3339, t.value); err != nil {
			return nil, trading.OrderList{}, fmt.Errorf("%s must be an RFC 3339 time such as 2026-12-01T14:30:00Z; got %q", t.name, t.value)
		}
	}
	list, err := h.Trading.ListOrders(ctx, p, q)
	if err != nil {
		return nil, trading.OrderList{}, h.tradeError(ctx, fmt.Sprintf("account %q", in.AccountID), err)
	}
	return nil, list, nil
}

func (h *handlers) listPending(ctx context.Context, _ *mcp.CallToolRequest, in PendingInput) (*mcp.CallToolResult, PendingList, error) {
	p, err := caller(ctx)
	if err != nil {
		return nil, PendingList{}, err
	}
	if in.Limit == 0 {
		in.Limit = 50
	}
	as, err := h.Trading.ListPending(ctx, p, in.Limit)
	if err != nil {
		return nil, PendingList{}, h.tradeError(ctx, "pending approvals", err)
	}
	return nil, PendingList{Approvals: as}, nil
}

// tradeError passes the trading package's safe errors through and maps the
// rest like any backend failure.
func (h *handlers) tradeError(ctx context.Context, what string, err error) error {
	var safe *trading.AgentError
	if errors.As(err, &safe) {
		return safe // written for the agent (no list to forget one)
	}
	return h.toolError(ctx, what, err) // what reads like "account \"ACC-1\"", as in the read tools
}

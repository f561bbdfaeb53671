package demo

import (
	"context"
	"fmt"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// PlaceOrder implements backends.Trade as a paper order book: market orders
// fill at the quote, marketable limit orders fill at the limit or better, the
// rest rest as accepted. A repeated ClientOrderID returns the first order.
func (b *Backend) PlaceOrder(ctx context.Context, req backends.OrderRequest) (backends.Order, error) {
	if err := b.checkOrder(req); err != nil {
		return backends.Order{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if o, ok := b.byClient[req.ClientOrderID]; ok {
		if !o.Matches(req) {
			return backends.Order{}, fmt.Errorf("%w: client_order_id %q was already used for a different order", backends.ErrInvalid, req.ClientOrderID)
		}
		return *o, nil
	}
	ticker := strings.ToUpper(req.Ticker)
	q, _ := b.quote(ticker)
	fill := q.Ask
	if req.Side == backends.SideSell {
		fill = q.Bid
	}
	marketable := req.Type == backends.OrderMarket ||
		req.Side == backends.SideBuy && req.LimitPrice >= fill ||
		req.Side == backends.SideSell && req.LimitPrice <= fill
	if marketable {
		// The demo market is frozen, so a resting order never fills and
		// only a marketable one moves the book.
		if err := b.bookOf(b.accounts[req.AccountID]).fill(ticker, req.Side == backends.SideBuy, req.Quantity, fill); err != nil {
			return backends.Order{}, fmt.Errorf("%w: %v", backends.ErrInvalid, err)
		}
	}
	b.seq++
	now := b.now().UTC()
	o := &backends.Order{
		OrderID: fmt.Sprintf("ORD-%08d", b.seq), ClientOrderID: req.ClientOrderID, AccountID: req.AccountID,
		Ticker: ticker, Side: req.Side, Type: req.Type, Quantity: req.Quantity,
		LimitPrice: req.LimitPrice, Status: backends.StatusAccepted, CreatedAt: now, UpdatedAt: now,
	}
	if marketable {
		o.Status, o.FilledQuantity, o.AveragePrice = backends.StatusFilled, o.Quantity, fill
	}
	b.orders[o.OrderID] = o
	b.byClient[o.ClientOrderID] = o
	return *o, nil
}

func (b *Backend) checkOrder(req backends.OrderRequest) error {
	switch {
	case req.ClientOrderID == "":
		return fmt.Errorf("%w: client_order_id is required", backends.ErrInvalid)
	case b.accounts[req.AccountID].ID == "":
		return fmt.Errorf("account %q: %w", req.AccountID, backends.ErrNotFound)
	case !listed(strings.ToUpper(req.Ticker)):
		return fmt.Errorf("ticker %q: %w", req.Ticker, backends.ErrNotFound)
	case req.Side != backends.SideBuy && req.Side != backends.SideSell:
		return fmt.Errorf("%w: side must be buy or sell", backends.ErrInvalid)
	case req.Type != backends.OrderMarket && req.Type != backends.OrderLimit:
		return fmt.Errorf("%w: type must be market or limit", backends.ErrInvalid)
	case req.Quantity <= 0:
		return fmt.Errorf("%w: quantity must be positive", backends.ErrInvalid)
	case req.Type == backends.OrderLimit && req.LimitPrice <= 0:
		return fmt.Errorf("%w: a limit order needs a positive limit_price", backends.ErrInvalid)
	}
	return nil
}

// GetOrder implements backends.Trade.
func (b *Backend) GetOrder(ctx context.Context, orderID string) (backends.Order, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.orders[orderID]
	if !ok {
		return backends.Order{}, fmt.Errorf("order %q: %w", orderID, backends.ErrNotFound)
	}
	return *o, nil
}

// OrderByClientID implements backends.Trade.
func (b *Backend) OrderByClientID(ctx context.Context, clientOrderID string) (backends.Order, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.byClient[clientOrderID]
	if !ok {
		return backends.Order{}, fmt.Errorf("client order %q: %w", clientOrderID, backends.ErrNotFound)
	}
	return *o, nil
}

// Orders lists every order the book holds, oldest first: what a test or an
// operator compares the server's answers with.
func (b *Backend) Orders() []backends.Order {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]backends.Order, 0, len(b.orders))
	for i := 1; i <= b.seq; i++ {
		if o, ok := b.orders[fmt.Sprintf("ORD-%08d", i)]; ok {
			out = append(out, *o)
		}
	}
	return out
}

// Fill executes qty more shares of a working order at its limit price, as
// the frozen demo market never would by itself: how a test or a demo moves
// an order through partially_filled to filled.
func (b *Backend) Fill(orderID string, qty float64) (backends.Order, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.orders[orderID]
	switch {
	case !ok:
		return backends.Order{}, fmt.Errorf("order %q: %w", orderID, backends.ErrNotFound)
	case !backends.Working(o.Status):
		return backends.Order{}, fmt.Errorf("%w: order %s is %s and can no longer fill", backends.ErrInvalid, orderID, o.Status)
	case qty <= 0 || o.FilledQuantity+qty > o.Quantity:
		return backends.Order{}, fmt.Errorf("%w: can fill between 0 and %g more shares", backends.ErrInvalid, o.Quantity-o.FilledQuantity)
	}
	if err := b.bookOf(b.accounts[o.AccountID]).fill(o.Ticker, o.Side == backends.SideBuy, qty, o.LimitPrice); err != nil {
		return backends.Order{}, fmt.Errorf("%w: %v", backends.ErrInvalid, err)
	}
	o.AveragePrice = (o.AveragePrice*o.FilledQuantity + o.LimitPrice*qty) / (o.FilledQuantity + qty)
	o.FilledQuantity += qty
	o.Status, o.UpdatedAt = backends.StatusPartiallyFilled, b.now().UTC()
	if o.FilledQuantity == o.Quantity {
		o.Status = backends.StatusFilled
	}
	return *o, nil
}

// CancelOrder implements backends.Trade. Only a working order can be
// cancelled (what filled stays filled); cancelling a cancelled order is a
// no-op, so retries are safe.
func (b *Backend) CancelOrder(ctx context.Context, orderID string) (backends.Order, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.orders[orderID]
	if !ok {
		return backends.Order{}, fmt.Errorf("order %q: %w", orderID, backends.ErrNotFound)
	}
	switch o.Status {
	case backends.StatusAccepted, backends.StatusPartiallyFilled:
		o.Status, o.UpdatedAt = backends.StatusCancelled, b.now().UTC()
	case backends.StatusCancelled:
	default:
		return backends.Order{}, fmt.Errorf("%w: order %s is %s and can no longer be cancelled", backends.ErrInvalid, orderID, o.Status)
	}
	return *o, nil
}

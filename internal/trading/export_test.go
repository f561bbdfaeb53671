package trading

import (
	"context"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// Place is the confirmed-order primitive under PlaceOrder, for the tests of
// exactly-once placement that need no confirmation step.
func (s *Service) Place(ctx context.Context, p principal.Principal, o OrderArgs, approvalReason string) (Outcome, error) {
	return s.place(ctx, p, o, approvalReason, nil)
}

// Resolve is PlaceOrder's first step, answering a retry from what its key left.
func (s *Service) Resolve(ctx context.Context, p principal.Principal, o OrderArgs) (resolution, error) {
	return s.resolve(ctx, p, o)
}

// OnRefreshed tells f when each refresh of the approval gauges has ended.
// Set it before the refresher starts.
func (m *Metrics) OnRefreshed(f func(error)) { m.refreshed = f }

// ClientOrderID is the Trade service's idempotency key for p's key, as the
// service derives it.
func ClientOrderID(subject, key string) string { return clientOrderID(subject, key) }

// OnLeaseWait tells f whenever a call starts waiting for a lease held by
// another call on this replica. Set it before the calls start.
func (s *Service) OnLeaseWait(f func(key string)) { s.leases.onWait = f }

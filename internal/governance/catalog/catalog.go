// Package catalog is what governance knows about each tool: its class (what
// it may do), hence the scope it needs, the rate budget it draws on and how
// its calls are audited. The handlers fill it as they register tools;
// authorization, rate limits, audit and approvals read it. Classes and
// budgets are typed values, so a misspelt class does not compile where a
// string would have silently drawn on the read budget.
package catalog

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Class groups tools by what they may do: scopes and rate limits are
// granted per class.
type Class string

// Tool classes.
const (
	Read    Class = "read"    // read-only views
	Trade   Class = "trade"   // state-changing orders
	Approve Class = "approve" // deciding approvals
)

// StateChanging reports whether calls of the class change state: they are
// audited synchronously and fail closed when the record cannot be made.
func (c Class) StateChanging() bool { return c == Trade || c == Approve }

// Bucket is a rate budget.
type Bucket string

// Rate budgets.
const (
	ReadBudget    Bucket = "read"
	TradeBudget   Bucket = "trade"
	ApproveBudget Bucket = "approve"
	// CancelBudget is cancel_order's own budget: a cancel is how a user
	// stops damage, so placements must never use it up.
	CancelBudget Bucket = "cancel"
)

// Scopes names the OAuth scope granting each class (configurable names).
type Scopes struct {
	Read, Trade, Approve string
}

// For is the scope that grants class c.
func (s Scopes) For(c Class) string {
	switch c {
	case Trade:
		return s.Trade
	case Approve:
		return s.Approve
	}
	return s.Read
}

// All lists the scopes in the order read, trade, approve.
func (s Scopes) All() []string { return []string{s.Read, s.Trade, s.Approve} }

// Tool is the catalog entry of one tool.
type Tool struct {
	Name  string
	Class Class
	// Bucket is the rate budget a call draws on; empty: its class's.
	Bucket Bucket
	// ConfirmFirst marks a tool whose unconfirmed round only asks for the
	// user's confirmation (place_order): such a round draws on the read
	// budget, so confirming an order never costs two trade calls.
	ConfirmFirst bool
}

// Budget is the rate budget of one call of t; confirms says whether the
// call carries the user's confirmation.
func (t Tool) Budget(confirms bool) Bucket {
	switch {
	case t.ConfirmFirst && !confirms:
		return ReadBudget
	case t.Bucket != "":
		return t.Bucket
	}
	return Bucket(t.Class)
}

// PortfolioURITemplate is the portfolio resource: authorization reads the
// account id out of it as the resource handler does.
const PortfolioURITemplate = "portfolio://accounts/{account_id}"

// PortfolioAccount extracts the (still escaped) account id named by a
// portfolio resource URI.
func PortfolioAccount(uri string) (string, bool) {
	return strings.CutPrefix(uri, strings.TrimSuffix(PortfolioURITemplate, "{account_id}"))
}

// Catalog is the set of registered tools. Safe for concurrent use; tools
// are added at start-up and read on every call.
type Catalog struct {
	mu    sync.RWMutex
	tools map[string]Tool
}

// New returns an empty catalog.
func New() *Catalog { return &Catalog{tools: map[string]Tool{}} }

// Add registers t.
func (c *Catalog) Add(t Tool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tools[t.Name] = t
}

// Lookup returns the entry of the tool called name.
func (c *Catalog) Lookup(name string) (Tool, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.tools[name]
	return t, ok
}

// Names lists the registered tools, sorted.
func (c *Catalog) Names() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.tools))
	for n := range c.tools {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// AccountNotAccessible is the tool error for account id when it does not
// exist or the caller is not entitled to it: both read the same on purpose,
// so an answer never reveals whether an account exists.
func AccountNotAccessible(id string) error {
	return fmt.Errorf("account %q was not found or is not accessible to you", id)
}

package approvals

import (
	"context"
	"errors"
	"net/http"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/httpserver"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
)

// HaltRequest is the body of POST /halts, /halts/release and
// /halts/cancel-open.
type HaltRequest struct {
	Scope  string `json:"scope"`            // global, account, principal or agent
	Target string `json:"target,omitempty"` // the account id, subject or client id
	Reason string `json:"reason"`
}

const haltShape = `{"scope": "global"|"account"|"principal"|"agent", "target": "...", "reason": "..."}`

// officer admits a caller holding the halt scope, through the firm's tools
// when approver clients are configured, and entitled to what the halt
// covers: the account for an account halt, every account otherwise (a
// principal or an agent trades across accounts).
func (a *API) officer(w http.ResponseWriter, r *http.Request, scope, target string) (principal.Principal, bool) {
	p, ok := caller(w, r)
	if !ok {
		return p, false
	}
	note(r.Context(), func(n *auditNote) { n.approver = p.Subject }) // refusals are audited with who asked
	switch {
	case !a.admit(w, p, a.o.HaltScope, "the kill switch is operated through the firm's tools, not this client"):
	case scope != "" && !halt.Entitled(p, scope, target):
		httpserver.WriteError(w, http.StatusForbidden, "you are not entitled to every account this halt covers")
	default:
		return p, true
	}
	return p, false
}

func (a *API) halts(w http.ResponseWriter, r *http.Request) {
	if p, ok := a.officer(w, r, "", ""); !ok || !a.within(w, r, p) {
		return
	}
	st, err := a.o.Halt.State(r.Context())
	if err != nil {
		a.o.Logger.ErrorContext(r.Context(), "kill switch unreadable", "error", err)
		httpserver.WriteError(w, http.StatusServiceUnavailable, halt.ErrUnknown.Error())
		return
	}
	hist, err := a.o.Halt.History(r.Context(), 100)
	if err != nil {
		a.o.Logger.WarnContext(r.Context(), "kill switch history unreadable", "error", err)
	}
	httpserver.WriteJSON(w, http.StatusOK, map[string]any{"halts": nonNil(st.Halts), "history": nonNil(hist)})
}

// engage is never limited: an emergency does not wait for a budget.
func (a *API) engage(w http.ResponseWriter, r *http.Request) {
	a.change(w, r, a.o.Halt.Engage, false)
}

func (a *API) release(w http.ResponseWriter, r *http.Request) {
	a.change(w, r, a.o.Halt.Release, true)
}

// change engages or releases a halt (do); limited: the change draws on the
// officer's approve budget.
func (a *API) change(w http.ResponseWriter, r *http.Request, do func(ctx context.Context, by, scope, target, reason string) (halt.State, error), limited bool) {
	var req HaltRequest
	if !readJSON(w, r, &req, haltShape) {
		return
	}
	p, ok := a.officer(w, r, req.Scope, req.Target)
	if !ok || limited && !a.within(w, r, p) {
		return
	}
	st, err := do(r.Context(), p.Subject, req.Scope, req.Target, req.Reason)
	switch {
	case errors.Is(err, halt.ErrScope), errors.Is(err, halt.ErrReason):
		httpserver.WriteError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, halt.ErrNotEngaged):
		httpserver.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, halt.ErrChanged):
		httpserver.WriteError(w, http.StatusConflict, err.Error())
	case err != nil:
		a.o.Logger.ErrorContext(r.Context(), "kill switch change failed", "error", err)
		httpserver.WriteError(w, http.StatusServiceUnavailable, "the kill switch could not be changed (state store or audit trail unavailable); nothing changed unless GET /halts shows it, retry")
	default:
		httpserver.WriteJSON(w, http.StatusOK, map[string]any{"halts": nonNil(st.Halts)})
	}
}

func (a *API) cancelOpen(w http.ResponseWriter, r *http.Request) {
	var req HaltRequest
	if !readJSON(w, r, &req, haltShape) {
		return
	}
	if _, err := halt.Parse(req.Scope, req.Target); err != nil || req.Reason == "" {
		httpserver.WriteError(w, http.StatusBadRequest, halt.ErrScope.Error()+"; and a reason is required")
		return
	}
	p, ok := a.officer(w, r, req.Scope, req.Target)
	if !ok {
		return
	}
	rep, err := a.o.CancelAll(r.Context(), p, req.Scope, req.Target, req.Reason)
	if err != nil {
		// What was done before the error stopped it, with the error.
		a.o.Logger.ErrorContext(r.Context(), "cancel-all stopped", "error", err)
		httpserver.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "cancel-all stopped (state store unavailable); run it again", "report": rep})
		return
	}
	httpserver.WriteJSON(w, http.StatusOK, rep)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

package console

import (
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
)

type haltsData struct {
	History []halt.Event
	Error   string
	Result  string
	Report  *trading.CancelReport
}

// haltResults are the fixed texts an action's redirect may name.
var haltResults = map[string]string{
	"engaged":   "Halt engaged: every replica refuses new orders in its scope from now on.",
	"released":  "Halt released: orders in its scope are accepted again.",
	"invalid":   "Name a scope (and, except for global, its account, person or agent) and a reason.",
	"forbidden": "You are not entitled to every account this halt covers.",
	"none":      "No such halt is engaged.",
	"changed":   "The halt was released and engaged again meanwhile; nothing was changed. Review it above and release it again.",
	"failed":    "The kill switch could not be changed just now (state store or audit trail unavailable). Check the state above and try again.",
	"limited":   "You have released more halts than your rate limit allows just now; nothing was changed. Wait a minute and try again. (Engaging a halt is never limited.)",
}

// halts shows the kill switch: what is engaged, its journal, and (with
// trade:halt) the forms to engage, release and cancel a scope's orders.
func (c *Console) halts(w http.ResponseWriter, r *http.Request, sess Session) {
	c.showHalts(w, r, sess, haltsData{Result: haltResults[c.resultOf(r, sess)]})
}

// showHalts renders the kill switch page with d and the switch's journal.
func (c *Console) showHalts(w http.ResponseWriter, r *http.Request, sess Session, d haltsData) {
	hist, err := c.o.Halt.History(r.Context(), 100)
	if err != nil {
		c.o.Logger.WarnContext(r.Context(), "console kill switch history", "error", err)
		d.Error = "The kill switch's journal cannot be read just now."
	}
	d.History = hist
	c.render(w, r, http.StatusOK, page{Title: "Kill switch", Nav: "halts", Session: &sess, CSRF: c.o.Sessions.CSRF(sess), Data: d})
}

// haltAction engages or releases a halt, or cancels a scope's open
// orders, for a session holding trade:halt and entitled to the scope.
func (c *Console) haltAction(w http.ResponseWriter, r *http.Request, sess Session) {
	p, action := sess.Principal(), r.PathValue("action")
	scope, target := strings.TrimSpace(r.PostFormValue("scope")), strings.TrimSpace(r.PostFormValue("target"))
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if utf8.RuneCountInString(reason) > maxReason {
		reason = string([]rune(reason)[:maxReason])
	}
	op := audit.Operation{Name: "console.halt." + action, Class: catalog.Approve, Start: c.o.Now(), Principal: p.Subject, Outcome: outcome.OK}
	back := func(result string) {
		http.Redirect(w, r, c.resultURL(sess, prefix+"halts", result), http.StatusSeeOther)
	}
	deny := func(result, why string) {
		op.Outcome, op.Error = outcome.Denied, why
		c.audit(r.Context(), op)
		back(result)
	}
	switch {
	case action != "engage" && action != "release" && action != "cancel-open":
		c.message(w, r, http.StatusNotFound, &sess, "Not found", "No such kill switch action.")
		return
	case !p.HasScope(c.o.HaltScope):
		op.Outcome, op.Error = outcome.Denied, "missing scope "+c.o.HaltScope
		c.audit(r.Context(), op)
		c.message(w, r, http.StatusForbidden, &sess, "Not a risk officer", "The kill switch needs the "+c.o.HaltScope+" scope, which your sign-in does not hold.")
		return
	case !halt.Entitled(p, scope, target):
		deny("forbidden", "not entitled to the halt's scope")
		return
	}
	if action == "release" && !c.within(r.Context(), p.Subject, &op) {
		c.audit(r.Context(), op)
		back("limited")
		return
	}
	var err error
	switch action {
	case "engage":
		_, err = c.o.Halt.Engage(r.Context(), p.Subject, scope, target, reason)
	case "release":
		_, err = c.o.Halt.Release(r.Context(), p.Subject, scope, target, reason)
	case "cancel-open":
		if _, err := halt.Parse(scope, target); err != nil || reason == "" {
			deny("invalid", "scope or reason missing")
			return
		}
		var rep trading.CancelReport
		if rep, err = c.o.Service.CancelAll(r.Context(), p, scope, target, reason); err == nil {
			c.audit(r.Context(), op)
			c.showHalts(w, r, sess, haltsData{Report: &rep})
			return
		}
	}
	switch {
	case errors.Is(err, halt.ErrScope), errors.Is(err, halt.ErrReason):
		deny("invalid", err.Error())
	case errors.Is(err, halt.ErrNotEngaged):
		deny("none", err.Error())
	case errors.Is(err, halt.ErrChanged):
		deny("changed", err.Error())
	case err != nil:
		c.o.Logger.ErrorContext(r.Context(), "console kill switch action failed", "action", action, "error", err)
		op.Outcome, op.Error = outcome.Failed, err.Error()
		c.audit(r.Context(), op)
		back("failed")
	default:
		c.audit(r.Context(), op)
		back(map[string]string{"engage": "engaged", "release": "released"}[action])
	}
}

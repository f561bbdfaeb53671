package console

import (
	"crypto/hmac"
	"crypto/subtle"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// maxReason bounds a decision's reason.
const maxReason = 500

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// --- sign-in

type signinData struct {
	Next     consolePath
	OIDC     bool
	Personas []Persona
	// PersonaKey is the key the page was opened with; NeedKey is set when
	// it was not (the personas are not offered then).
	PersonaKey string
	NeedKey    bool
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	d := signinData{Next: next, OIDC: c.o.OIDC != nil}
	if len(c.o.Personas) > 0 {
		if key := r.URL.Query().Get("key"); c.personaKey(key) {
			d.Personas, d.PersonaKey = c.o.Personas, key
		} else {
			d.NeedKey = true
		}
	}
	c.render(w, r, http.StatusOK, page{Title: "Sign in", Data: d})
}

// personaKey reports whether key is the server's persona key.
func (c *Console) personaKey(key string) bool {
	return c.o.PersonaKey != "" && subtle.ConstantTimeCompare([]byte(key), []byte(c.o.PersonaKey)) == 1
}

// login sends the browser to the issuer.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.o.OIDC == nil {
		http.Redirect(w, r, prefix+"signin", http.StatusSeeOther)
		return
	}
	to, err := c.o.OIDC.begin(r.Context(), c.o.Sessions, w, safeNext(r.URL.Query().Get("next")))
	if err != nil {
		c.o.Logger.ErrorContext(r.Context(), "console sign-in: issuer unavailable", "error", err)
		c.message(w, r, http.StatusServiceUnavailable, nil, "Sign-in unavailable", "The identity provider cannot be reached just now. Try again in a moment.")
		return
	}
	http.Redirect(w, r, to, http.StatusFound)
}

// callback completes an OIDC sign-in. It answers with a page that moves on
// by itself rather than a redirect: the browser arrived here from the
// issuer's site, and a Strict session cookie set in a cross-site redirect
// chain is not sent on its next hop.
func (c *Console) callback(w http.ResponseWriter, r *http.Request) {
	if c.o.OIDC == nil {
		http.NotFound(w, r)
		return
	}
	start := c.o.Now()
	p, exp, next, err := c.o.OIDC.finish(r.Context(), c.o.Sessions, w, r)
	if err != nil {
		var se *signInError
		text := "The sign-in failed. Try again."
		if errors.As(err, &se) {
			text = se.public + "."
		}
		c.o.Logger.InfoContext(r.Context(), "console sign-in refused", "error", err)
		c.audit(r.Context(), audit.Operation{Name: "console.signin", Class: catalog.Approve, Start: start, Outcome: outcome.Denied, Error: text})
		c.message(w, r, http.StatusForbidden, nil, "Sign-in failed", text)
		return
	}
	c.startSession(w, r, p, exp, next, start)
}

// personaLogin signs in as a built-in persona (laptop runs only: the
// console has personas only when the server runs unauthenticated, which
// config allows on loopback).
func (c *Console) personaLogin(w http.ResponseWriter, r *http.Request) {
	if !c.personaKey(r.PostFormValue("key")) {
		c.audit(r.Context(), audit.Operation{Name: "console.signin", Class: catalog.Approve, Start: c.o.Now(), Outcome: outcome.Denied, Error: "persona sign-in without the key"})
		c.message(w, r, http.StatusForbidden, nil, "Sign-in refused", "Open the console with the link the server printed when it started.")
		return
	}
	pe, err := persona(c.o.Personas, r.PostFormValue("persona"))
	if err != nil {
		c.message(w, r, http.StatusBadRequest, nil, "Sign-in failed", "No such persona.")
		return
	}
	p := principal.Principal{Subject: pe.Subject, ClientID: "portfolio-mcp-console", Scopes: pe.Scopes, Accounts: []string{principal.AllAccounts}}
	c.startSession(w, r, p, c.o.Now().Add(c.o.SessionTTL), r.PostFormValue("next"), c.o.Now())
}

func (c *Console) startSession(w http.ResponseWriter, r *http.Request, p principal.Principal, exp time.Time, next string, start time.Time) {
	if limit := c.o.Now().Add(c.o.SessionTTL); exp.After(limit) {
		exp = limit
	}
	sess := Session{Subject: p.Subject, ClientID: p.ClientID, Scopes: p.Scopes, Accounts: p.Accounts, Expires: exp}
	if err := c.o.Sessions.Start(w, sess); err != nil {
		text := "The session could not be started."
		if errors.Is(err, ErrSessionTooLarge) {
			text = "Your sign-in carries more accounts than the console can hold in a session; ask for a narrower entitlement (or \"*\" for all accounts)."
		}
		c.o.Logger.WarnContext(r.Context(), "console session not started", "subject", p.Subject, "error", err)
		c.message(w, r, http.StatusForbidden, nil, "Sign-in failed", text)
		return
	}
	c.audit(r.Context(), audit.Operation{Name: "console.signin", Class: catalog.Approve, Start: start, Principal: p.Subject, Outcome: outcome.OK})
	c.render(w, r, http.StatusOK, page{Title: "Signed in", Data: safeNext(next)})
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, sess Session) {
	c.o.Sessions.End(w)
	c.audit(r.Context(), audit.Operation{Name: "console.signout", Class: catalog.Approve, Start: c.o.Now(), Principal: sess.Subject, Outcome: outcome.OK})
	http.Redirect(w, r, prefix+"signin", http.StatusSeeOther)
}

// --- queue

// row is one approval as the lists show it.
type row struct {
	trading.Approval
	Own bool
}

type queueData struct {
	Rows    []row
	Updated time.Time
	Error   string
	// Older: pending approvals not shown, older than every row shown.
	Older int
	// Overflow: more are pending than the queue can read; the rows are the
	// ones that expire first.
	Overflow bool
}

// queueShown is the most rows the queue shows; queueRead the most pending
// approvals it reads, to say how many more there are.
const queueShown, queueRead = 500, 1000

// queue lists the pending approvals the approver may see, newest first;
// with ?fragment=rows only the table body, for the live update.
func (c *Console) queue(w http.ResponseWriter, r *http.Request, sess Session) {
	p := sess.Principal()
	d := queueData{Updated: c.o.Now()}
	as, err := c.o.Service.ListPending(r.Context(), p, queueRead) // oldest first
	if err != nil {
		c.o.Logger.WarnContext(r.Context(), "console queue", "error", err)
		d.Error = "The queue cannot be read just now: the approvals store does not answer. This page tries again by itself."
	}
	switch {
	case len(as) >= queueRead:
		// More than can be read, so which are the newest is not known:
		// the ones that expire first.
		as, d.Overflow = as[:queueShown], true
	case len(as) > queueShown:
		as, d.Older = as[len(as)-queueShown:], len(as)-queueShown
	}
	slices.Reverse(as)
	for _, a := range as {
		d.Rows = append(d.Rows, row{Approval: a, Own: a.RequestedBy(p.Subject)})
	}
	pg := page{Title: "Approval queue", Nav: "queue", Session: &sess, CSRF: c.o.Sessions.CSRF(sess), Data: d}
	if r.URL.Query().Get("fragment") == "rows" {
		var out htmlWriter
		c.queueRows(&out, d)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if d.Error != "" {
			// The live update keeps the rows it has and says it is behind.
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write(out.b)
		return
	}
	c.render(w, r, http.StatusOK, pg)
}

// --- detail and decision

type detailData struct {
	trading.Approval
	OrderState string
	Check      *policy.Preview
	CheckError string
	Args       string
	Own        bool
	Pending    bool
	Result     string
}

// resultURL is page with result for it to show, bound to sess (the
// result last, so the URL still ends in result=<result>).
func (c *Console) resultURL(sess Session, page, result string) string {
	return page + "?rt=" + c.o.Sessions.resultMAC(sess, page, result) + "&result=" + url.QueryEscape(result)
}

// resultOf is the result r's URL names, if this session's own redirect put
// it there; else "".
func (c *Console) resultOf(r *http.Request, sess Session) string {
	q := r.URL.Query()
	result := q.Get("result")
	if result == "" || !hmac.Equal([]byte(q.Get("rt")), []byte(c.o.Sessions.resultMAC(sess, r.URL.Path, result))) {
		return ""
	}
	return result
}

// results are the fixed texts a decision's redirect may name (never text
// from the request).
var results = map[string]string{
	"approved":   "Approved. The order was sent to the Trade service; its state is below.",
	"notplaced":  "Approved, but the order was not placed; the reason is below.",
	"recorded":   "Approved. The order could not be sent just now (the Trade service did not answer); it is sent as soon as it answers, the next time this approval's state is read, as this page does.",
	"rejected":   "Rejected. The order will not be placed.",
	"decided":    "This approval was already decided by someone else; nothing was changed.",
	"yours":      "You already decided this approval the other way (in another tab or window); nothing was changed. Its state is below.",
	"withdrawn":  "This approval was withdrawn before the decision (by its requester, or by the kill switch's cancel-all); nothing was changed.",
	"heldbyhalt": "This approval is approved, and the kill switch (see the banner) stops its order. An earlier send of it got no answer and may still land: the Trade service is asked again whenever this approval's state is read. If the order never arrived, the approval is marked failed, since the halt was meant to stop it; the requester places it again if still wanted. Its state is below.",
	"expired":    "This approval expired before the decision; the order was not placed.",
	"foureyes":   "You requested this order, so you cannot decide it (four eyes).",
	"reason":     "A rejection needs a reason.",
	"mismatch":   "The approval no longer holds the order this page showed; nothing was changed. Review it again.",
	"halted":     "Trading is halted by the kill switch (see the banner): nothing is released while it holds. The approval stays pending; a rejection still works.",
	"failed":     "The decision could not be completed just now; see the approval's state below and try again.",
	"limited":    "You have decided more than your rate limit allows just now; nothing was changed. Wait a minute and decide again.",
}

func (c *Console) detail(w http.ResponseWriter, r *http.Request, sess Session) {
	p, id, start := sess.Principal(), r.PathValue("id"), c.o.Now()
	op := audit.Operation{Name: "console.view", Class: catalog.Approve, Start: start, Principal: p.Subject, ApprovalID: id, Outcome: outcome.OK}
	out, err := c.o.Service.Status(r.Context(), p, id)
	if err != nil && out.Approval != nil {
		// Read, but driving its order on failed: show it as it stands.
		c.o.Logger.WarnContext(r.Context(), "console detail: approval read, its order's state not", "approval_id", id, "error", err)
		err = nil
	}
	if err != nil && !errors.Is(err, trading.ErrNotFound) {
		// It may well exist: say what is true, that it cannot be read now.
		op.Outcome, op.Error = outcome.Failed, err.Error()
		c.audit(r.Context(), op)
		c.message(w, r, http.StatusServiceUnavailable, &sess, "Unavailable", "This approval cannot be read just now ("+agentText(err)+"). Reload the page in a moment.")
		return
	}
	if err != nil || out.Approval == nil {
		op.Outcome, op.Error = outcome.Denied, "not found"
		c.audit(r.Context(), op)
		c.message(w, r, http.StatusNotFound, &sess, "Not found", "No such approval, or it is not for an account you may see.")
		return
	}
	c.audit(r.Context(), op)
	a := *out.Approval
	d := detailData{Approval: a, OrderState: out.Status, Own: a.RequestedBy(p.Subject), Pending: a.Status == trading.ApprovalPending,
		Result: results[c.resultOf(r, sess)]}
	args, _ := json.MarshalIndent(a.Order, "", "  ")
	d.Args = string(args)
	if d.Pending {
		pre, err := c.o.Service.Recheck(r.Context(), p, a)
		if err != nil {
			d.CheckError = "The pre-trade check could not run just now (" + agentText(err) + ")."
		} else {
			d.Check = &pre
		}
	}
	c.render(w, r, http.StatusOK, page{Title: "Approval " + a.ID, Nav: "queue", Session: &sess, CSRF: c.o.Sessions.CSRF(sess), Data: d})
}

// decide applies a decision and redirects back to the approval (so a
// reload does not post again). The same decision twice (a double click,
// two tabs) is the trading service's no-op.
func (c *Console) decide(w http.ResponseWriter, r *http.Request, sess Session) {
	p, id := sess.Principal(), r.PathValue("id")
	decision := r.PostFormValue("decision")
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	op := audit.Operation{Name: "console.decide", Class: catalog.Approve, Start: c.o.Now(), Principal: p.Subject, ApprovalID: id, Outcome: outcome.OK}
	back := func(result string) {
		http.Redirect(w, r, c.resultURL(sess, prefix+"approvals/"+url.PathEscape(id), result), http.StatusSeeOther)
	}
	if !p.HasScope(c.o.ApproveScope) {
		op.Outcome, op.Error = outcome.Denied, "missing scope "+c.o.ApproveScope
		c.audit(r.Context(), op)
		c.message(w, r, http.StatusForbidden, &sess, "Not an approver", "Deciding needs the "+c.o.ApproveScope+" scope, which your sign-in does not hold.")
		return
	}
	if decision != trading.DecisionApprove && decision != trading.DecisionReject {
		op.Outcome, op.Error = outcome.Denied, "decision must be approve or reject"
		c.audit(r.Context(), op)
		c.message(w, r, http.StatusBadRequest, &sess, "Refused", "The decision must be approve or reject.")
		return
	}
	if decision == trading.DecisionReject && reason == "" {
		op.Outcome, op.Error = outcome.Denied, "reject without a reason"
		c.audit(r.Context(), op)
		back("reason")
		return
	}
	if !c.within(r.Context(), p.Subject, &op) {
		c.audit(r.Context(), op)
		back("limited")
		return
	}
	if utf8.RuneCountInString(reason) > maxReason {
		reason = string([]rune(reason)[:maxReason])
	}
	// The decision is for the order the approver was shown.
	expect := &trading.Expect{ArgsDigest: r.PostFormValue("args_digest"), Requester: r.PostFormValue("requester")}
	out, err := c.o.Service.Decide(r.Context(), p, id, decision, reason, expect)
	result := map[string]string{trading.DecisionApprove: "approved", trading.DecisionReject: "rejected"}[decision]
	switch {
	case err == nil && out.Approval != nil && out.Approval.Status == trading.ApprovalFailed:
		// Approved, and then not placed (the re-check at execution, a
		// halt, the Trade service's refusal): the approver must not read
		// "sent".
		result = "notplaced"
	case errors.Is(err, trading.ErrSendPending):
		// Recorded; reading the approval (as this page does) sends it.
		c.o.Logger.WarnContext(r.Context(), "console approval recorded; its order is not sent yet", "approval_id", id, "error", err)
		result = "recorded"
	case err == nil:
	case errors.Is(err, trading.ErrFourEyes):
		result, op.Outcome, op.Error = "foureyes", outcome.Denied, err.Error()
	case errors.Is(err, trading.ErrAlreadyDecided):
		result, op.Outcome, op.Error = "decided", outcome.Denied, err.Error()
		switch {
		case out.Approval == nil:
		case out.Approval.Status == trading.ApprovalCancelled:
			result = "withdrawn"
		case out.Approval.DecidedBy == p.Subject:
			result = "yours"
		}
	case errors.Is(err, trading.ErrExpired):
		result, op.Outcome, op.Error = "expired", outcome.Denied, err.Error()
	case errors.Is(err, trading.ErrMismatch):
		result, op.Outcome, op.Error = "mismatch", outcome.Denied, err.Error()
	case errors.Is(err, trading.ErrHalted):
		result, op.Outcome, op.Error = "halted", outcome.Denied, err.Error()
		if out.Approval != nil && out.Approval.AwaitingSend() {
			result = "heldbyhalt" // approved earlier; its send waits for the halt's release
		}
	case errors.Is(err, trading.ErrNotFound):
		op.Outcome, op.Error = outcome.Denied, err.Error()
		c.audit(r.Context(), op)
		c.message(w, r, http.StatusNotFound, &sess, "Not found", "No such approval, or it is not for an account you may see.")
		return
	default:
		c.o.Logger.WarnContext(r.Context(), "console decision failed", "approval_id", id, "error", err)
		result, op.Outcome, op.Error = "failed", outcome.Failed, err.Error()
	}
	c.audit(r.Context(), op)
	back(result)
}

// --- history

type historyData struct {
	Rows     []historyRow
	Account  string
	Status   string
	Statuses []string
	Error    string
}

type historyRow struct {
	trading.Approval
	OrderState string
}

var historyStatuses = []string{trading.ApprovalSubmitted, trading.ApprovalApproved, trading.ApprovalExecuting, trading.ApprovalRejected,
	trading.ApprovalExpired, trading.ApprovalCancelled, trading.ApprovalFailed, trading.ApprovalPending}

// historyRows reads the filtered history, with each submitted order's
// state now (for the rows shown).
// orderLookups bounds the Trade service reads one history page makes.
const orderLookups = 25

func (c *Console) historyRows(r *http.Request, p principal.Principal, limit int, lookups int) (historyData, error) {
	q := r.URL.Query()
	d := historyData{Account: strings.TrimSpace(q.Get("account")), Status: q.Get("status"), Statuses: historyStatuses}
	hq := trading.HistoryQuery{AccountID: d.Account, Limit: limit}
	if slices.Contains(historyStatuses, d.Status) {
		hq.Statuses = []string{d.Status}
		if d.Status == trading.ApprovalApproved {
			// Approved and being sent is approved too, for an approver.
			hq.Statuses = append(hq.Statuses, trading.ApprovalExecuting)
		}
	} else {
		d.Status = ""
		hq.Statuses = historyStatuses[:len(historyStatuses)-1] // decided, expired, cancelled, failed
	}
	as, err := c.o.Service.History(r.Context(), p, hq)
	if err != nil {
		return d, err
	}
	for _, a := range as {
		hr := historyRow{Approval: a, OrderState: "-"}
		// An approved order not sent yet (the Trade service did not answer)
		// is read through its status, which sends it: the history is where
		// an approver finds it again.
		if a.OrderID != "" || a.AwaitingSend() {
			hr.OrderState = "see the order"
			if lookups > 0 {
				lookups--
				hr.OrderState = "unknown"
				if out, err := c.o.Service.Status(r.Context(), p, a.ID); err == nil {
					hr.OrderState = out.Status
					if out.Approval != nil {
						hr.Approval = *out.Approval
					}
				}
			}
		}
		d.Rows = append(d.Rows, hr)
	}
	return d, nil
}

func (c *Console) history(w http.ResponseWriter, r *http.Request, sess Session) {
	d, err := c.historyRows(r, sess.Principal(), 100, orderLookups)
	if err != nil {
		c.o.Logger.WarnContext(r.Context(), "console history", "error", err)
		d.Error = "The history cannot be read just now (" + agentText(err) + ")."
	}
	c.render(w, r, http.StatusOK, page{Title: "History", Nav: "history", Session: &sess, CSRF: c.o.Sessions.CSRF(sess), Data: d})
}

// historyCSV exports the filtered history. Cells that a spreadsheet would
// read as a formula are prefixed with a quote.
func (c *Console) historyCSV(w http.ResponseWriter, r *http.Request, sess Session) {
	op := audit.Operation{Name: "console.export", Class: catalog.Approve, Start: c.o.Now(), Principal: sess.Subject, Outcome: outcome.OK}
	d, err := c.historyRows(r, sess.Principal(), 500, 0)
	if err != nil {
		op.Outcome, op.Error = outcome.Failed, err.Error()
		c.audit(r.Context(), op)
		c.message(w, r, http.StatusServiceUnavailable, &sess, "Unavailable", "The history cannot be read just now.")
		return
	}
	c.audit(r.Context(), op)
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="approvals.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"approval_id", "status", "order_id", "account_id", "side", "quantity", "ticker", "type", "limit_price",
		"requester", "requester_client", "requested_at", "decided_by", "decided_at", "reason", "args_digest", "not_placed_because"})
	for _, h := range d.Rows {
		a := h.Approval
		_ = cw.Write(safeCells(a.ID, a.Status, a.OrderID, a.Order.AccountID, a.Order.Side, quantity(a.Order.Quantity), a.Order.Ticker,
			a.Order.Type, limitPrice(a.Order), a.Requester, a.RequesterClient, iso(a.CreatedAt), a.DecidedBy,
			optionalTime(a.DecidedAt), a.Reason, a.ArgsDigest, a.Error))
	}
	cw.Flush()
}

// safeCells neutralises spreadsheet formulas (CSV injection).
func safeCells(cells ...string) []string {
	for i, s := range cells {
		if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
			cells[i] = "'" + s
		}
	}
	return cells
}

// --- formatting

func money(v float64) string {
	neg := v < 0
	s := strconv.FormatFloat(abs(v), 'f', 2, 64)
	whole, frac, _ := strings.Cut(s, ".")
	for i := len(whole) - 3; i > 0; i -= 3 {
		whole = whole[:i] + "," + whole[i:]
	}
	if neg {
		whole = "-" + whole
	}
	return whole + "." + frac
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

func quantity(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func percent(v float64) string { return strconv.FormatFloat(100*v, 'f', 1, 64) + "%" }

func limitPrice(o trading.OrderArgs) string {
	if o.LimitPrice == 0 {
		return ""
	}
	return strconv.FormatFloat(o.LimitPrice, 'f', -1, 64)
}

func optionalTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return iso(*t)
}

// timeLeft is "12m 30s" until t, or "expired".
func timeLeft(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return "expired"
	}
	if d >= time.Hour {
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
}

// approvalLabel names a status for people.
func approvalLabel(status string) string {
	switch status {
	case trading.ApprovalSubmitted:
		return "approved, sent"
	case trading.ApprovalApproved, trading.ApprovalExecuting:
		return "approved, sending"
	}
	return status
}

// agentText is the safe message of a trading error (its sentinels are
// written to be shown), or a generic one.
func agentText(err error) string {
	var ae *trading.AgentError
	if errors.As(err, &ae) {
		return ae.Error()
	}
	return "temporarily unavailable"
}

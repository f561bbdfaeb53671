package console

import (
	"strconv"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// The pages, written as html.go describes. Each view writes its page's
// main content for the Data its handler gives; layout wraps it.

// view writes the content of a page, chosen by its Data's type; ok is
// false for Data no page takes (a bug the console's tests catch).
func (c *Console) view(w *htmlWriter, p page) (head func(), content func(), ok bool) {
	switch d := p.Data.(type) {
	case signinData:
		return nil, func() { signinView(w, d) }, true
	case queueData:
		return nil, func() { c.queueView(w, d) }, true
	case detailData:
		return nil, func() { c.detailView(w, p, d) }, true
	case historyData:
		return nil, func() { historyView(w, d) }, true
	case haltsData:
		return nil, func() { haltsView(w, p, d) }, true
	case messageData:
		return nil, func() { messageView(w, p.Title, d.text) }, true
	case consolePath: // signed in: on to where the sign-in began
		return func() { w.m(`<meta http-equiv="refresh" content="0;url=`); w.text(string(d)); w.m(`">`) },
			func() { signedInView(w, d) }, true
	}
	return nil, nil, false
}

// layout writes the page around its content: the header with the session
// and its sign-out form, and the kill switch's banner.
func layout(w *htmlWriter, p page, head, content func()) {
	w.m("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>")
	w.text(p.Title)
	w.m(" · Portfolio MCP approvals</title>\n<link rel=\"stylesheet\" href=\"/console/static/console.css\">\n",
		"<script src=\"/console/static/console.js\" defer></script>\n")
	if head != nil {
		head()
	}
	w.m("\n</head>\n<body>\n<header>\n  <span class=\"brand\">Portfolio MCP · Approvals</span>\n")
	if p.Mode != "" {
		w.el(`  <span class="mode mode-`, p.Mode, `">`)
		w.text(p.Mode)
		w.m("</span>\n")
	}
	if p.Session != nil {
		w.m("  <nav>\n")
		for _, n := range []struct {
			nav, href, label markup
		}{{"queue", "/console/queue", "Queue"}, {"history", "/console/history", "History"}, {"halts", "/console/halts", "Kill switch"}} {
			w.m(`    <a href="`, n.href, `"`)
			w.when(p.Nav == string(n.nav), ` aria-current="page"`)
			w.m(">", n.label, "</a>\n")
		}
		w.m("  </nav>\n  <form method=\"post\" action=\"/console/logout\" class=\"signout\">\n")
		hidden(w, "csrf", p.CSRF)
		w.el(`    <span class="who" id="who">`, p.Session.Subject, "</span>\n    <button type=\"submit\">Sign out</button>\n  </form>\n")
	}
	w.m("</header>\n")
	if p.Session != nil {
		switch {
		case p.HaltUnknown:
			w.m(`<p class="halt-banner" id="halt-banner" role="alert">Kill switch state unknown: trading is halted on every replica until it can be read.</p>` + "\n")
		case len(p.Halts) > 0:
			w.m(`<p class="halt-banner" id="halt-banner" role="alert">Trading halted: `)
			for i, h := range p.Halts {
				w.when(i > 0, "; ")
				w.el("<strong>", h.Describe(), "</strong> (")
				w.text(h.Reason)
				w.m(")")
			}
			w.m(`. <a href="/console/halts">Kill switch</a></p>`)
		}
	}
	w.m("\n<main>\n")
	content()
	w.m("\n</main>\n</body>\n</html>\n")
}

// why is an approval's "why" in lists: the decider's reason and, for an
// approved order that was not placed, the cause.
func why(a trading.Approval) string {
	switch {
	case a.Error == "":
		return a.Reason
	case a.Reason == "":
		return "not placed: " + a.Error
	}
	return a.Reason + "; not placed: " + a.Error
}

// hidden writes a hidden form field.
func hidden(w *htmlWriter, name markup, value string) {
	w.m(`  <input type="hidden"`)
	w.attr("name", string(name))
	w.attr("value", value)
	w.m(">\n")
}

func messageView(w *htmlWriter, title, text string) {
	w.el("<h1>", title, "</h1>\n<p class=\"message\" id=\"message\">")
	w.text(text)
	w.m("</p>\n<p><a href=\"/console/queue\">Back to the queue</a></p>\n")
}

// messageData is the text of a page that only says something.
type messageData struct{ text string }

func signedInView(w *htmlWriter, next consolePath) {
	w.m("<h1>Signed in</h1>\n<p><a")
	w.attr("href", string(next))
	w.m(" id=\"continue\">Continue</a></p>\n")
}

func signinView(w *htmlWriter, d signinData) {
	w.m("<h1>Sign in to decide orders</h1>\n")
	switch {
	case d.OIDC:
		w.m("<p>Approvers sign in with the firm's identity provider. Deciding needs the approve scope and entitlement to the order's account.</p>\n",
			`<p><a class="button" id="signin" href="/console/login?next=`)
		w.query(string(d.Next))
		w.m("\">Sign in</a></p>\n")
	case d.NeedKey:
		w.m(`<p class="note" id="need-key">This server runs without an identity provider (a laptop run). Open the console with the link the server printed when it started (it carries a key, so that only you, not an agent that can reach this port, can sign in as one of its people).</p>` + "\n")
	default:
		w.m(`<p class="note">This server runs without an identity provider (a laptop run). Sign in as one of its built-in people; MCP clients act as the trader.</p>` + "\n<ul class=\"personas\">\n")
		for _, p := range d.Personas {
			w.m("  <li>\n    <form method=\"post\" action=\"/console/login/persona\">\n")
			hidden(w, "persona", p.Key)
			hidden(w, "key", d.PersonaKey)
			hidden(w, "next", string(d.Next))
			w.m(`      <button type="submit"`)
			w.attr("id", "persona-"+p.Key)
			w.el(">Sign in as ", p.Name, "</button>\n      <span class=\"subject\">")
			w.text(p.Subject)
			w.el("</span>: ", p.About, "\n    </form>\n  </li>\n")
		}
		w.m("</ul>\n")
	}
}

func (c *Console) queueView(w *htmlWriter, d queueData) {
	w.m("<h1>Waiting for a decision</h1>\n",
		`<p class="note">Newest first, for the accounts you may approve. <span id="live" data-live="/console/queue?fragment=rows">Updated `)
	w.text(when(d.Updated))
	w.m(".</span></p>\n")
	// An error is a row of the table, which the live update replaces.
	w.m("<table class=\"list\">\n",
		`  <thead><tr><th>Asked</th><th>Account</th><th>Order</th><th class="num">Est. notional</th><th>Requester</th><th>Agent</th><th>Time left</th><th></th></tr></thead>`+"\n",
		`  <tbody id="rows">`)
	c.queueRows(w, d)
	w.m("</tbody>\n</table>\n")
}

// queueRows writes the queue's rows: part of its page, and alone for the
// page's live update.
func (c *Console) queueRows(w *htmlWriter, d queueData) {
	for _, r := range d.Rows {
		w.m("<tr")
		w.attr("data-id", r.ID)
		w.when(r.Own, ` class="own"`)
		w.el(">\n  <td>", when(r.CreatedAt), "</td>\n  <td>")
		w.text(r.Order.AccountID)
		w.m("</td>\n  <td>")
		orderText(w, r.Order, " ", " @ ")
		w.m("</td>\n  <td class=\"num\">")
		if r.Preview != nil {
			w.text(money(r.Preview.EstimatedNotional))
		}
		w.m("</td>\n  <td>")
		w.text(r.Requester)
		w.when(r.Own, ` <span class="tag">yours: not decidable</span>`)
		w.el("</td>\n  <td>", r.RequesterClient, "</td>\n  <td><span class=\"countdown\"")
		w.attr("data-expires", iso(r.ExpiresAt))
		w.el(">", timeLeft(r.ExpiresAt, c.o.Now()), "</span></td>\n  <td><a href=\"/console/approvals/")
		w.path(r.ID)
		w.m("\">Open</a></td>\n</tr>\n")
	}
	switch {
	case d.Overflow:
		w.m(`<tr class="more"><td colspan="8">`)
		w.text("More than " + strconv.Itoa(queueRead) + " approvals are waiting, more than the queue can read: shown are the " + strconv.Itoa(len(d.Rows)) + " that expire first.")
		w.m("</td></tr>\n")
	case d.Older > 0:
		w.m(`<tr class="more"><td colspan="8">`)
		w.text(strconv.Itoa(d.Older) + " older approvals waiting are not shown: the queue shows the newest " + strconv.Itoa(len(d.Rows)) + ".")
		w.m("</td></tr>\n")
	case len(d.Rows) > 0:
	case d.Error != "":
		// Never "nothing is waiting" about a queue that was not read.
		w.m(`<tr class="empty"><td colspan="8">`)
		w.text(d.Error)
		w.m("</td></tr>\n")
	default:
		w.m(`<tr class="empty"><td colspan="8">Nothing is waiting for a decision.</td></tr>` + "\n")
	}
}

// orderText writes "buy 10 AAPL limit" and the limit price, if any, after
// sep ("buy 10 AAPL limit @ 1.00" in lists).
func orderText(w *htmlWriter, o trading.OrderArgs, typeSep, limitSep markup) {
	w.text(o.Side)
	w.el(" ", quantity(o.Quantity), " ")
	w.text(o.Ticker)
	w.m(typeSep)
	w.text(o.Type)
	if o.LimitPrice != 0 {
		w.m(limitSep)
		w.text(policy.Price(o.LimitPrice)) // exactly as sent: sub-dollar limits have four decimals
	}
}

// fact writes a <dt>/<dd> pair whose value is text.
func fact(w *htmlWriter, term markup, value string) {
	w.m("  <dt>", term, "</dt><dd>")
	w.text(value)
	w.m("</dd>\n")
}

// factID writes a <dt>/<dd> pair whose <dd> has an id.
func factID(w *htmlWriter, term, id markup, value string) {
	w.m("  <dt>", term, `</dt><dd id="`, id, `">`)
	w.text(value)
	w.m("</dd>\n")
}

// list writes items as a <ul>.
func list(w *htmlWriter, items []string) {
	w.m("<ul>")
	for _, s := range items {
		w.el("<li>", s, "</li>")
	}
	w.m("</ul>")
}

func (c *Console) detailView(w *htmlWriter, p page, d detailData) {
	w.el("<h1>", d.Order.Side, " ")
	w.text(quantity(d.Order.Quantity))
	w.el(" ", d.Order.Ticker, ` <span class="status status-`)
	w.text(d.Status)
	w.el(`" id="status">`, approvalLabel(d.Status), "</span></h1>\n")
	if d.Result != "" {
		w.el(`<p class="result" id="result">`, d.Result, "</p>\n")
	}
	w.m("\n<section class=\"facts\">\n<dl>\n")
	fact(w, "Approval", d.ID)
	factID(w, "Account", "account", d.Order.AccountID)
	w.m("  <dt>Order</dt><dd>")
	orderText(w, d.Order, ", ", ", limit ")
	w.m("</dd>\n  <dt>Estimated notional</dt><dd>")
	if d.Preview != nil {
		w.text(money(d.Preview.EstimatedNotional))
		w.m(" (at the request)")
	}
	w.m("</dd>\n")
	factID(w, "Requested by", "requester", d.Requester)
	factID(w, "Agent (OAuth client)", "agent", d.RequesterClient)
	fact(w, "Asked", when(d.CreatedAt))
	w.m("  <dt>Expires</dt><dd>")
	w.text(when(d.ExpiresAt))
	if d.Pending {
		w.m(` (<span class="countdown"`)
		w.attr("data-expires", iso(d.ExpiresAt))
		w.el(">", timeLeft(d.ExpiresAt, c.o.Now()), "</span> left)")
	}
	w.m("</dd>\n")
	if d.Preview != nil && len(d.Preview.ApprovalReasons) > 0 {
		w.m("  <dt>Why it needs approval</dt><dd>")
		list(w, d.Preview.ApprovalReasons)
		w.m("</dd>\n")
	}
	if d.DecidedBy != "" {
		factID(w, "Decided by", "decided-by", d.DecidedBy+", "+optionalTime(d.DecidedAt))
	}
	if d.Reason != "" {
		factID(w, "Reason", "reason", d.Reason)
	}
	if d.OrderID != "" {
		w.el(`  <dt>Order at the Trade service</dt><dd><span id="order-id">`, d.OrderID, `</span>: <span id="order-state">`)
		w.text(d.OrderState)
		w.m("</span></dd>\n")
	}
	if d.Error != "" {
		fact(w, "Error", d.Error)
	}
	w.m("</dl>\n</section>\n")
	if d.Provenance != nil {
		provenanceView(w, d.Provenance)
	}
	if d.Pending {
		checkView(w, d)
	}
	w.el("\n<section class=\"args\">\n<h2>What the agent sent</h2>\n<pre id=\"args\">", d.Args, "</pre>\n<p class=\"note\">SHA-256 digest of the order, which the approval is bound to: <code id=\"digest\">")
	w.text(d.ArgsDigest)
	w.m("</code></p>\n</section>\n")
	if d.Pending {
		decisionView(w, p, d)
	}
}

func provenanceView(w *htmlWriter, pv *trading.Provenance) {
	w.m("\n<section class=\"provenance\" id=\"provenance\">\n<h2>Provenance</h2>\n<dl>\n  <dt>Person</dt><dd>")
	w.text(pv.Subject)
	if pv.Actor != "" {
		w.el(" (acted for by ", pv.Actor, ")")
	}
	w.m("</dd>\n  <dt>Agent</dt><dd>")
	w.text(pv.Agent)
	if pv.AuthorizedParty != "" {
		w.el(" (azp ", pv.AuthorizedParty, ")")
	}
	w.m("</dd>\n")
	switch pv.Confirmation {
	case "input_request":
		factID(w, "User's confirmation", "confirmation", "asked by the server; the signed answer was verified")
	case "confirm_argument":
		factID(w, "User's confirmation", "confirmation", "the agent's confirm=true (not verifiable by the server)")
	default:
		factID(w, "User's confirmation", "confirmation", pv.Confirmation)
	}
	if pv.PreviewDigest != "" {
		w.el("  <dt>Pre-trade check confirmed</dt><dd><code>", pv.PreviewDigest, "</code></dd>\n")
	}
	if pv.DuplicateOf != "" {
		factID(w, "Possible duplicate", "duplicate", "the user confirmed it is not a duplicate of "+pv.DuplicateOf)
	}
	w.el(`  <dt>Policy version</dt><dd><code id="policy-version">`, pv.PolicyVersion, "</code></dd>\n")
	if pv.TraceID != "" {
		w.el("  <dt>Trace</dt><dd><code>", pv.TraceID, "</code></dd>\n")
	}
	fact(w, "Entered", when(pv.EnteredAt))
	w.m("</dl>\n</section>\n")
}

func checkView(w *htmlWriter, d detailData) {
	w.m("\n<section class=\"check\">\n<h2>Pre-trade check, as of now</h2>\n")
	if d.CheckError != "" {
		w.el(`<p class="error">`, d.CheckError, "</p>\n")
	}
	if ck := d.Check; ck != nil {
		unknown := ck.CommittedUnknown || ck.DailyLimits != nil && ck.DailyLimits.Unknown
		switch {
		case ck.Allowed && unknown:
			// The check ran without what other orders hold or today's usage:
			// it may pass here and fail when the order is released.
			w.m(`<p class="error" id="check">The check could not count the account's other orders or today's usage just now (a service is not answering): buying power may be overstated. Approving records your decision; the order is checked again, and sent only if it passes, once they can be read.</p>` + "\n")
		case ck.Allowed:
			w.m(`<p class="ok" id="check">No rule blocks this order now.</p>` + "\n")
		default:
			w.m(`<p class="error" id="check">Rules block this order now: approving it will fail the check again.</p>` + "\n")
		}
		w.m("<dl>\n")
		fact(w, "Estimated price / notional", policy.Price(ck.EstimatedPrice)+" / "+money(ck.EstimatedNotional))
		fact(w, "Buying power before / after", money(ck.BuyingPower)+" / "+money(ck.BuyingPowerAfter))
		fact(w, "Position weight now / after", percent(ck.CurrentWeight)+" / "+percent(ck.PostTradeWeight))
		fact(w, "Market", ck.MarketStatus)
		if len(ck.Violations) > 0 {
			w.m("  <dt>Violations</dt><dd>")
			list(w, ck.Violations)
			w.m("</dd>\n")
		}
		w.m("</dl>\n")
	}
	w.m("</section>\n")
}

func decisionView(w *htmlWriter, p page, d detailData) {
	w.m("\n<section class=\"decision\">\n<h2>Decision</h2>\n")
	switch {
	case !p.CanDecide:
		w.m(`<p class="rule">Deciding needs the trade:approve scope, which your sign-in does not hold.</p>` + "\n")
	case d.Own:
		w.el(`<p class="foureyes" id="foureyes">You requested this order. Four eyes: someone other than `, d.Requester, " must decide it.</p>\n")
	default:
		w.m(`<p class="rule">Four eyes: the requester (`)
		w.text(d.Requester)
		w.m(") cannot decide their own order; you can. Approving sends the order to the Trade service at once.</p>\n",
			`<form method="post" action="/console/approvals/`)
		w.path(d.ID)
		w.m("/decision\" class=\"decide\" id=\"decide\">\n")
		hidden(w, "csrf", p.CSRF)
		hidden(w, "args_digest", d.ArgsDigest)
		hidden(w, "requester", d.Requester)
		w.m(`  <label for="reason-input">Reason (required to reject)</label>`+"\n",
			`  <textarea name="reason" id="reason-input" maxlength="500" rows="3"></textarea>`+"\n",
			"  <div class=\"buttons\">\n",
			`    <button type="submit" name="decision" value="approve" class="approve" id="approve">Approve</button>`+"\n",
			`    <button type="submit" name="decision" value="reject" class="reject" id="reject">Reject</button>`+"\n",
			"  </div>\n</form>\n")
	}
	w.m("</section>\n")
}

func historyView(w *htmlWriter, d historyData) {
	w.m("<h1>History</h1>\n<form method=\"get\" action=\"/console/history\" class=\"filters\">\n  <label>Account <input name=\"account\"")
	w.attr("value", d.Account)
	w.m(` maxlength="64"></label>`+"\n", "  <label>State <select name=\"status\">\n    <option value=\"\">decided, expired, cancelled</option>\n    ")
	for _, s := range d.Statuses {
		w.m("<option")
		w.attr("value", s)
		w.when(s == d.Status, " selected")
		w.el(">", s, "</option>")
	}
	w.m("\n  </select></label>\n  <button type=\"submit\">Filter</button>\n  <a href=\"/console/history.csv?account=")
	w.query(d.Account)
	w.m("&amp;status=")
	w.query(d.Status)
	w.m("\" id=\"csv\">Export CSV</a>\n</form>\n")
	if d.Error != "" {
		w.el(`<p class="error">`, d.Error, "</p>\n")
	}
	w.m("<table class=\"list\">\n",
		"  <thead><tr><th>Asked</th><th>Account</th><th>Order</th><th>Requester</th><th>State</th><th>Decided by</th><th>When</th><th>Why</th><th>Order state</th></tr></thead>\n",
		"  <tbody>\n")
	for _, r := range d.Rows {
		w.m("  <tr>\n    <td><a href=\"/console/approvals/")
		w.path(r.ID)
		w.el("\">", when(r.CreatedAt), "</a></td>\n")
		for _, s := range []string{r.Order.AccountID, r.Order.Side + " " + quantity(r.Order.Quantity) + " " + r.Order.Ticker,
			r.Requester, approvalLabel(r.Status), r.DecidedBy, optionalTime(r.DecidedAt), why(r.Approval), r.OrderState} {
			w.el("    <td>", s, "</td>\n")
		}
		w.m("  </tr>\n")
	}
	if len(d.Rows) == 0 {
		w.m(`  <tr class="empty"><td colspan="9">No approvals match.</td></tr>` + "\n")
	}
	w.m("  </tbody>\n</table>\n")
}

func haltsView(w *htmlWriter, p page, d haltsData) {
	w.m("<h1>Kill switch</h1>\n")
	if d.Result != "" {
		w.el(`<p class="result" id="result">`, d.Result, "</p>\n")
	}
	if d.Error != "" {
		w.el(`<p class="error">`, d.Error, "</p>\n")
	}
	if rep := d.Report; rep != nil {
		w.m("<section class=\"report\" id=\"report\">\n<h2>Cancelled in scope ")
		w.text(rep.Scope)
		if rep.Target != "" {
			w.m(" ")
			w.text(rep.Target)
		}
		w.el("</h2>\n<p>Orders cancelled: <span id=\"cancelled\">", strconv.Itoa(len(rep.Cancelled)), "</span>")
		codes(w, rep.Cancelled)
		w.el(".\nApprovals withdrawn: <span id=\"withdrawn\">", strconv.Itoa(len(rep.Withdrawn)), "</span>")
		codes(w, rep.Withdrawn)
		w.m(".</p>\n")
		if len(rep.Failed) > 0 {
			w.m(`<p class="error">Not cancelled (try again):`)
			codes(w, rep.Failed)
			w.m("</p>\n")
		}
		w.m("</section>\n")
	}
	w.m("\n<section class=\"halts\">\n<h2>Engaged now</h2>\n")
	if p.HaltUnknown {
		w.m(`<p class="error">The kill switch state cannot be read, so every replica refuses orders until it can.</p>` + "\n")
	}
	w.m("<table class=\"list\" id=\"engaged\">\n  <thead><tr><th>Scope</th><th>Target</th><th>Reason</th><th>Engaged by</th><th>Since</th>")
	w.when(p.CanHalt, "<th></th>")
	w.m("</tr></thead>\n  <tbody>\n")
	for _, h := range p.Halts {
		haltRow(w, p, h)
	}
	if len(p.Halts) == 0 {
		w.m(`  <tr class="empty"><td colspan="6">`)
		if p.HaltUnknown {
			w.m("Unknown.")
		} else {
			w.m("Nothing is halted: orders are accepted.")
		}
		w.m("</td></tr>\n")
	}
	w.m("  </tbody>\n</table>\n</section>\n")
	if p.CanHalt {
		w.m("\n<section class=\"decision\">\n<h2>Halt trading</h2>\n",
			`<p class="rule">New orders and approval releases in the scope are refused on every replica within a second; cancels and reads keep working. If the switch cannot be read, trading halts.</p>`+"\n",
			`<form method="post" action="/console/halts/engage" class="decide" id="engage">`+"\n")
		hidden(w, "csrf", p.CSRF)
		w.m(`  <label for="scope">Scope</label>`+"\n", `  <select name="scope" id="scope">`)
		for _, s := range halt.Scopes {
			w.m("<option")
			w.attr("value", s)
			w.el(">", s, "</option>")
		}
		w.m("</select>\n",
			`  <label for="target">Account id, person (subject) or agent (OAuth client id); empty for global</label>`+"\n",
			`  <input name="target" id="target" maxlength="256">`+"\n",
			`  <label for="halt-reason">Reason (required, shown to agents)</label>`+"\n",
			`  <textarea name="reason" id="halt-reason" maxlength="500" rows="2" required></textarea>`+"\n",
			"  <div class=\"buttons\">\n",
			`    <button type="submit" class="reject" id="engage-button">Engage halt</button>`+"\n",
			`    <button type="submit" formaction="/console/halts/cancel-open" class="reject" id="cancel-open">Cancel all open orders in this scope</button>`+"\n",
			"  </div>\n</form>\n</section>\n")
	}
	w.m("\n<section class=\"history\">\n<h2>Journal</h2>\n<table class=\"list\" id=\"journal\">\n",
		"  <thead><tr><th>When</th><th>Action</th><th>Scope</th><th>Target</th><th>By</th><th>Reason</th></tr></thead>\n  <tbody>\n")
	for _, e := range d.History {
		w.m("  <tr>")
		for _, s := range []string{when(e.At), e.Action, e.Scope, e.Target, e.By, e.Reason} {
			w.el("<td>", s, "</td>")
		}
		w.m("</tr>\n")
	}
	if len(d.History) == 0 {
		w.m(`  <tr class="empty"><td colspan="6">No halt was ever engaged.</td></tr>` + "\n")
	}
	w.m("  </tbody>\n</table>\n</section>\n")
}

// haltRow is one engaged halt, with its release form for a risk officer.
func haltRow(w *htmlWriter, p page, h halt.Halt) {
	w.m("  <tr>\n    ")
	for _, s := range []string{h.Scope, h.Target, h.Reason, h.EngagedBy, when(h.EngagedAt)} {
		w.el("<td>", s, "</td>")
	}
	w.m("\n")
	if p.CanHalt {
		w.m("    <td>\n      <form method=\"post\" action=\"/console/halts/release\" class=\"inline\">\n")
		hidden(w, "csrf", p.CSRF)
		hidden(w, "scope", h.Scope)
		hidden(w, "target", h.Target)
		w.m(`        <input name="reason" placeholder="why release" required maxlength="500">`+"\n",
			`        <button type="submit" class="approve">Release</button>`+"\n      </form>\n    </td>\n")
	}
	w.m("  </tr>\n")
}

// codes writes each of ids as " <code>id</code>".
func codes(w *htmlWriter, ids []string) {
	for _, id := range ids {
		w.el(" <code>", id, "</code>")
	}
}

// when and iso are the console's two ways of writing a time.
func when(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }
func iso(t time.Time) string  { return t.UTC().Format(time.RFC3339) }

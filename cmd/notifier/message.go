package main

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// The event contract with portfolio-mcp (internal/governance/audit): the
// CloudEvent type of a journaled trading step, and the steps notified.
const (
	// StepEventType is audit.StepEventType.
	StepEventType = "com.portfolio-mcp.trade.step"
	// ActionRequested is the step recorded when an order waits for an approver.
	ActionRequested = "approval.requested"
	// ActionDecided is the step recorded when an approver approves or rejects.
	ActionDecided = "approval.decided"
	// ActionSuperseded follows an ActionDecided that never took effect:
	// another approver's decision, or a cancellation, came first.
	ActionSuperseded = "approval.decided.superseded"
)

// errIgnored marks an event that is not the notifier's business: it is
// acknowledged (so the Broker does not redeliver it) and dropped.
var errIgnored = errors.New("not an approval request or decision")

// errBadEvent marks an approval event that cannot be notified safely (no
// or malformed approval id, undecodable data); it is refused with a 4xx.
var errBadEvent = errors.New("malformed approval event")

// approvalID is the shape of an approval id: "APR-" and upper-case base32
// or hex (the server derives it from a SHA-256). Nothing else goes into a
// console URL.
var approvalID = regexp.MustCompile(`^APR-[0-9A-Z]{4,64}$`)

// tradingMode is the shape of the tradingmode extension the SinkBinding
// adds (paper, live).
var tradingMode = regexp.MustCompile(`^[a-z]{1,16}$`)

// step is the part of the audit event (audit.Event, the CloudEvent's data)
// a notification needs; the JSON names are audit's.
type step struct {
	Action     string         `json:"action"`
	Principal  string         `json:"principal"`
	ApprovalID string         `json:"approval_id"`
	Args       map[string]any `json:"args"` // account_id, detail
}

// notification is one message to post, and what the log says about it.
type notification struct {
	action, approvalID string
	text               string
}

// Field bounds: a message stays one readable line however long a reason is.
const (
	maxNameRunes   = 128
	maxReasonRunes = 300
)

// approvalMessage turns an event into the message to post. It returns
// errIgnored for every event that is not an approval request or decision,
// and an error wrapping errBadEvent for one that cannot be notified safely.
//
// The step is the data's action. The CloudEvent subject names it too (what
// the Triggers filter on), but servers before that change set the subject
// of a step taken inside a tool call to the tool, so the data decides.
func approvalMessage(ev cloudevents.Event, console *url.URL) (notification, error) {
	if ev.Type() != StepEventType {
		return notification{}, errIgnored
	}
	var s step
	if err := ev.DataAs(&s); err != nil {
		return notification{}, fmt.Errorf("%w: data: %v", errBadEvent, err)
	}
	if s.Action == "" {
		s.Action = ev.Subject()
	}
	if s.Action != ActionRequested && s.Action != ActionDecided && s.Action != ActionSuperseded {
		return notification{}, errIgnored
	}
	if !approvalID.MatchString(s.ApprovalID) {
		return notification{}, fmt.Errorf("%w: approval_id %q is not APR- and base32 or hex", errBadEvent, truncate(s.ApprovalID, 80))
	}
	link := console.JoinPath("console", "approvals", s.ApprovalID).String()

	var b strings.Builder
	if m, _ := ev.Extensions()["tradingmode"].(string); tradingMode.MatchString(m) {
		fmt.Fprintf(&b, "[%s] ", m)
	}
	fmt.Fprintf(&b, "Approval %s ", s.ApprovalID)
	who := escape(s.Principal, maxNameRunes)
	if who == "" {
		who = "an unknown principal"
	}
	reason := ""
	switch s.Action {
	case ActionRequested:
		fmt.Fprintf(&b, "requested by %s", who)
		reason = str(s.Args["detail"])
	case ActionSuperseded:
		fmt.Fprintf(&b, "decision by %s did not take effect", who)
		reason = str(s.Args["detail"])
	default:
		verb, why := decision(str(s.Args["detail"]))
		fmt.Fprintf(&b, "%s by %s", verb, who)
		reason = why
	}
	if acct := escape(str(s.Args["account_id"]), maxNameRunes); acct != "" {
		fmt.Fprintf(&b, " on account %s", acct)
	}
	if r := escape(reason, maxReasonRunes); r != "" {
		fmt.Fprintf(&b, " (reason: %s)", r)
	}
	fmt.Fprintf(&b, ": <%s|open in the approvals console>", link)
	return notification{action: s.Action, approvalID: s.ApprovalID, text: b.String()}, nil
}

// decision reads an approval.decided step's detail, "approve: <reason>" or
// "reject: <reason>" (trading.Service.Decide), into the verb to show and
// the reason.
func decision(detail string) (verb, reason string) {
	d, r, ok := strings.Cut(detail, ":")
	if ok {
		switch strings.TrimSpace(d) {
		case "approve":
			return "approved", strings.TrimSpace(r)
		case "reject":
			return "rejected", strings.TrimSpace(r)
		}
	}
	return "decided", strings.TrimSpace(detail)
}

// str is v if it is a string, else "".
func str(v any) string {
	s, _ := v.(string)
	return s
}

// mrkdwn escapes the three characters Slack's mrkdwn gives a meaning to in
// message text: with them escaped, "<!channel>" or "<https://x|y>" in a
// field is shown as typed and neither pings nor links.
var mrkdwn = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// escape makes untrusted text safe to put in a message: control and format
// characters (new lines, bidi overrides, zero-width characters) become
// spaces so a field cannot fake a second line or reorder the text, it is
// cut to max runes, and mrkdwn's special characters are escaped.
func escape(s string, max int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	return mrkdwn.Replace(truncate(strings.Join(strings.Fields(s), " "), max))
}

// truncate cuts s to at most max runes, marking a cut with an ellipsis.
func truncate(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

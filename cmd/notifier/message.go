package main

import (
	"encoding/base64"
	"encoding/json"
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
	// DecisionEventType is approvals.EventType: a decision an approval
	// workflow sends the server. One reaches the notifier only as a dead
	// letter (the approvals Trigger's deadLetterSink): the server refused it
	// for good, or never took it within the Broker's retries.
	DecisionEventType = "com.portfolio-mcp.approval.decided"
	// ActionUndelivered names that notification in the logs.
	ActionUndelivered = "approval.decision.undelivered"
)

// The extensions Knative adds to a dead letter: where it was going, the
// HTTP status of the last attempt, and the body it answered (base64).
const (
	errorDest = "knativeerrordest"
	errorCode = "knativeerrorcode"
	errorData = "knativeerrordata"
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
	if ev.Type() == DecisionEventType {
		return undelivered(ev, console)
	}
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

// decisionEvent is the part of a decision event (approvals.Decision) a dead
// letter's message needs.
type decisionEvent struct {
	ApprovalID string `json:"approval_id"`
	Decision   string `json:"decision"`
	Approver   string `json:"approver"`
}

// undelivered is the message for a dead-lettered decision: it did not take
// effect, and the approver must decide again (a workflow resending it needs
// a new event id). Only an event Knative dead-lettered is one: a decision
// event without knativeerrordest is not the notifier's business.
func undelivered(ev cloudevents.Event, console *url.URL) (notification, error) {
	exts := ev.Extensions()
	if _, ok := exts[errorDest]; !ok {
		return notification{}, errIgnored
	}
	var d decisionEvent
	if err := ev.DataAs(&d); err != nil {
		return notification{}, fmt.Errorf("%w: data: %v", errBadEvent, err)
	}
	if !approvalID.MatchString(d.ApprovalID) {
		return notification{}, fmt.Errorf("%w: approval_id %q is not APR- and base32 or hex", errBadEvent, truncate(d.ApprovalID, 80))
	}
	var b strings.Builder
	if m, _ := exts["tradingmode"].(string); tradingMode.MatchString(m) {
		fmt.Fprintf(&b, "[%s] ", m)
	}
	verb := "decision"
	if d.Decision == "approve" || d.Decision == "reject" {
		verb = "decision to " + d.Decision
	}
	fmt.Fprintf(&b, "Approval %s: the %s", d.ApprovalID, verb)
	if who := escape(d.Approver, maxNameRunes); who != "" {
		fmt.Fprintf(&b, " by %s", who)
	}
	code := fmt.Sprint(exts[errorCode])
	switch {
	case strings.HasPrefix(code, "4"):
		fmt.Fprintf(&b, " was refused by the server (HTTP %s", escape(code, 3))
		if why := escape(refusal(exts[errorData]), maxReasonRunes); why != "" {
			fmt.Fprintf(&b, ": %s", why)
		}
		b.WriteString(") and did not take effect")
	case code != "" && code != "<nil>":
		fmt.Fprintf(&b, " did not reach the server (HTTP %s after the Broker's retries) and did not take effect", escape(code, 3))
	default:
		b.WriteString(" did not reach the server within the Broker's retries and did not take effect")
	}
	link := console.JoinPath("console", "approvals", d.ApprovalID).String()
	fmt.Fprintf(&b, "; decide again: <%s|open in the approvals console>", link)
	return notification{action: ActionUndelivered, approvalID: d.ApprovalID, text: b.String()}, nil
}

// refusal is the server's reason in a dead letter's knativeerrordata: the
// base64 of its answer, {"error": "..."}.
func refusal(data any) string {
	raw, _ := data.(string)
	body, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return ""
	}
	var answer struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &answer) != nil {
		return ""
	}
	return answer.Error
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

// Package console is the approvals console: the web interface in which the
// humans of the approval gate see the queue of orders waiting for them,
// open one with its whole context (the order, the pre-trade check as it is
// now, what the agent sent), approve or reject it, and look back at what
// was decided. It is served by the server itself under /console/:
// server-rendered HTML (written by typed Go code that escapes everything
// a user or an agent typed: html.go), one small script for live updates,
// and a strict Content-Security-Policy.
//
// Sign-in is OpenID Connect against the server's issuer (OIDC), or, on an
// unauthenticated laptop run, one of a few built-in personas. Sessions are
// sealed cookies; every form carries a CSRF token bound to the session.
// Deciding goes through trading.Service.Decide with the session's
// principal, exactly as the approvals API does: trade:approve, entitlement
// to the account, four eyes.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/outcome"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

// prefix is where the console is mounted.
const prefix = "/console/"

// Service is the trading service as the console uses it.
type Service interface {
	ListPending(ctx context.Context, p principal.Principal, limit int) ([]trading.Approval, error)
	History(ctx context.Context, p principal.Principal, q trading.HistoryQuery) ([]trading.Approval, error)
	Status(ctx context.Context, p principal.Principal, id string) (trading.Outcome, error)
	Recheck(ctx context.Context, p principal.Principal, a trading.Approval) (policy.Preview, error)
	Decide(ctx context.Context, approver principal.Principal, id, decision, reason string, expect *trading.Expect) (trading.Outcome, error)
	CancelAll(ctx context.Context, by principal.Principal, scope, target, reason string) (trading.CancelReport, error)
}

// Options configure the console.
type Options struct {
	Service  Service
	Sessions *Sessions
	// Exactly one of OIDC and Personas signs people in.
	OIDC     *OIDC
	Personas []Persona
	// PersonaKey is required to sign in as a persona: the link the server
	// prints at start carries it, so what can merely reach the port (an
	// agent with an HTTP tool, on the same laptop) cannot approve its own
	// orders as another persona.
	PersonaKey string
	// ApproveScope is what deciding needs; the console admits sessions
	// holding it or HaltScope.
	ApproveScope string
	// Halt is the kill switch, shown on every page and operated on its
	// own page by sessions holding HaltScope (trade:halt).
	Halt      *halt.Switch
	HaltScope string
	// ApproverClients, if set, are the only OAuth clients whose sessions
	// may decide (as for the approvals API): the console's client id must
	// be one of them.
	ApproverClients []string
	// SessionTTL bounds a session (the access token's expiry bounds it too).
	SessionTTL time.Duration
	// Mode is the trading mode (paper or live), shown in every page.
	Mode string
	// Limit takes a decision or a halt release from the person's approve
	// budget, the bucket the approvals API and the MCP approval tools draw
	// on (nil: no limit), so the console is no way around their limit.
	// Engaging a halt and cancel-all are never limited.
	Limit func(ctx context.Context, subject string) (retryAfter time.Duration, reason string, ok bool)
	// Audit records page views of an order, decisions, exports and
	// sign-ins (nil: none).
	Audit  func(ctx context.Context, op audit.Operation)
	Logger *slog.Logger
	Now    func() time.Time
}

// Console serves the pages.
type Console struct {
	o Options
}

//go:embed static
var staticFS embed.FS

// New returns the console.
func New(o Options) (*Console, error) {
	if o.Service == nil || o.Sessions == nil || (o.OIDC == nil) == (len(o.Personas) == 0) {
		return nil, errors.New("console: needs a service, sessions, and exactly one of OIDC and personas")
	}
	if len(o.Personas) > 0 && len(o.PersonaKey) < 16 {
		return nil, errors.New("console: personas need a persona key of at least 16 characters")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 8 * time.Hour
	}
	if o.Halt == nil {
		return nil, errors.New("console: needs the kill switch")
	}
	return &Console{o: o}, nil
}

// Handler serves everything under /console/. Mount it behind the request
// id, body limit and Host/Origin guard, like every route.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", cacheStatic(http.FileServerFS(static))))
	mux.HandleFunc("GET /console/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, prefix+"queue", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /console/signin", c.signinPage)
	mux.HandleFunc("GET /console/login", c.login)
	mux.HandleFunc("GET /console/callback", c.callback)
	mux.HandleFunc("POST /console/login/persona", c.personaLogin)
	mux.HandleFunc("POST /console/logout", c.signedIn(c.logout))
	mux.HandleFunc("GET /console/queue", c.signedIn(c.queue))
	mux.HandleFunc("GET /console/approvals/{id}", c.signedIn(c.detail))
	mux.HandleFunc("POST /console/approvals/{id}/decision", c.signedIn(c.decide))
	mux.HandleFunc("GET /console/history", c.signedIn(c.history))
	mux.HandleFunc("GET /console/history.csv", c.signedIn(c.historyCSV))
	mux.HandleFunc("GET /console/halts", c.signedIn(c.halts))
	mux.HandleFunc("POST /console/halts/{action}", c.signedIn(c.haltAction))
	return secureHeaders(mux)
}

// secureHeaders: nothing but our own script, styles and forms; no framing;
// no caching of pages that show orders; no referrer leaking approval ids.
func secureHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// cacheStatic lets a browser keep the console's script and styles,
// asking again on each use (they change with a release): set before the
// file is written, or it would not reach the response.
func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// page is what every page template sees.
type page struct {
	Title   string
	Nav     string
	Session *Session
	CSRF    string
	Mode    string
	Data    any
	// Halts are the kill switch's engaged halts, in a banner on every
	// page; HaltUnknown: the switch could not be read (trading is halted).
	Halts       []halt.Halt
	HaltUnknown bool
	// CanDecide and CanHalt say which forms the session may use.
	CanDecide, CanHalt bool
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, p page) {
	p.Mode = c.o.Mode
	if p.Session != nil {
		sp := p.Session.Principal()
		p.CanDecide, p.CanHalt = sp.HasScope(c.o.ApproveScope), sp.HasScope(c.o.HaltScope)
		st, err := c.o.Halt.State(r.Context())
		p.Halts, p.HaltUnknown = st.Halts, err != nil
	}
	var out htmlWriter
	head, content, ok := c.view(&out, p)
	if !ok {
		c.o.Logger.ErrorContext(r.Context(), "console page has no view for its data", "data", fmt.Sprintf("%T", p.Data))
		http.Error(w, "the console is broken; see the server log", http.StatusInternalServerError)
		return
	}
	layout(&out, p, head, content)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(out.b)
}

// message renders a page that only says something (errors, refusals).
func (c *Console) message(w http.ResponseWriter, r *http.Request, status int, sess *Session, title, text string) {
	p := page{Title: title, Session: sess, Data: messageData{text}}
	if sess != nil {
		p.CSRF = c.o.Sessions.CSRF(*sess)
	}
	c.render(w, r, status, p)
}

// signedIn runs h for a signed-in approver; others go to the sign-in page
// (GET) or are refused (POST). A session without the approve scope, or
// from a client that may not decide, is refused here, as the approvals API
// refuses its token.
func (c *Console) signedIn(h func(http.ResponseWriter, *http.Request, Session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, ok := c.o.Sessions.Get(r)
		if !ok {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, prefix+"signin?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.message(w, r, http.StatusUnauthorized, nil, "Signed out", "Your session has ended. Sign in again.")
			return
		}
		if r.Method == http.MethodPost && !c.o.Sessions.CheckCSRF(sess, r.PostFormValue("csrf")) {
			c.audit(r.Context(), audit.Operation{Name: "console.csrf", Class: catalog.Approve, Principal: sess.Subject,
				ApprovalID: r.PathValue("id"), Outcome: outcome.Denied, Error: "missing or wrong CSRF token", Start: c.o.Now()})
			c.message(w, r, http.StatusForbidden, &sess, "Refused", "This form is out of date or did not come from the console. Reload the page and try again.")
			return
		}
		p := sess.Principal()
		switch {
		case r.URL.Path == prefix+"logout":
		case !p.HasScope(c.o.ApproveScope) && !p.HasScope(c.o.HaltScope):
			c.message(w, r, http.StatusForbidden, &sess, "Not an approver",
				"The approvals console needs the "+c.o.ApproveScope+" or the "+c.o.HaltScope+" scope, which your sign-in does not hold.")
			return
		case len(c.o.ApproverClients) > 0 && !slices.Contains(c.o.ApproverClients, sess.ClientID):
			c.message(w, r, http.StatusForbidden, &sess, "Not an approval client",
				"Approvals are decided through the firm's approval tool, and this console's client is not one of them (APPROVER_CLIENT_IDS).")
			return
		}
		h(w, r, sess)
	}
}

func (c *Console) audit(ctx context.Context, op audit.Operation) {
	if c.o.Audit != nil {
		c.o.Audit(ctx, op)
	}
}

// within takes one action of subject from its approve budget (Limit); op
// records a refusal, as rate_limited.
func (c *Console) within(ctx context.Context, subject string, op *audit.Operation) bool {
	if c.o.Limit == nil {
		return true
	}
	if _, reason, ok := c.o.Limit(ctx, subject); !ok {
		op.Outcome, op.Error = outcome.RateLimited, reason
		return false
	}
	return true
}

package console

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	xhtml "golang.org/x/net/html"

	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/halt"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/policy"
)

func TestSessionsSealAndRefuse(t *testing.T) {
	now := time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := NewSessions([]byte("0123456789abcdef0123456789abcdef"), clock)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSessions([]byte("fedcba9876543210fedcba9876543210"), clock)
	if _, err := NewSessions([]byte("short"), clock); err == nil {
		t.Error("a 5-byte key was accepted")
	}
	rec := httptest.NewRecorder()
	if err := s.Start(rec, Session{Subject: "bob", Scopes: []string{"trade:approve"}, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c := rec.Result().Cookies()[0]
	if c.Name != sessionCookie || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 3600 {
		t.Errorf("cookie %+v", c)
	}
	if strings.Contains(c.Value, "bob") || strings.Contains(c.Value, "trade") {
		t.Error("the cookie shows its contents")
	}
	req := func(value string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/console/queue", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: value})
		return r
	}
	sess, ok := s.Get(req(c.Value))
	if !ok || sess.Subject != "bob" || sess.ID == "" {
		t.Fatalf("own cookie: %+v %v", sess, ok)
	}
	if _, ok := other.Get(req(c.Value)); ok {
		t.Error("a cookie opened under another key")
	}
	b := []byte(c.Value)
	b[10] ^= 2
	for name, v := range map[string]string{"edited": string(b), "truncated": c.Value[:20], "empty": "", "not base64": "!!!"} {
		if _, ok := s.Get(req(v)); ok {
			t.Errorf("%s cookie accepted", name)
		}
	}
	// A login cookie is not a session, even sealed under the same key.
	lrec := httptest.NewRecorder()
	s.startLogin(lrec, loginState{State: "x", Expires: now.Add(time.Minute)})
	if _, ok := s.Get(req(lrec.Result().Cookies()[0].Value)); ok {
		t.Error("a login cookie opened as a session")
	}
	// CSRF tokens are bound to the session.
	if !s.CheckCSRF(sess, s.CSRF(sess)) || s.CheckCSRF(sess, "") || s.CheckCSRF(sess, s.CSRF(Session{ID: "another"})) {
		t.Error("CSRF check")
	}
	now = now.Add(time.Hour)
	if _, ok := s.Get(req(c.Value)); ok {
		t.Error("an expired session was accepted")
	}
	many := make([]string, 400)
	for i := range many {
		many[i] = "ACC-" + strings.Repeat("9", 8)
	}
	if err := s.Start(httptest.NewRecorder(), Session{Subject: "bob", Accounts: many, Expires: now.Add(time.Hour)}); !errors.Is(err, ErrSessionTooLarge) {
		t.Errorf("a 4 KB+ session: %v", err)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/approvals/APR-1?result=approved": "/console/approvals/APR-1?result=approved",
		"/console/history?account=ACC-1&status=":   "/console/history?account=ACC-1&status=",
		"https://evil.example/console/":            "/console/queue",
		"//evil.example/console/":                  "/console/queue",
		"/console//evil.example":                   "/console/queue",
		"/console/../mcp":                          "/console/queue",
		"/console/x;url=javascript:alert(1)":       "/console/queue",
		"/console/x\r\nSet-Cookie: a=b":            "/console/queue",
		"/console/\\evil":                          "/console/queue",
		"":                                         "/console/queue",
	} {
		if got := safeNext(in); string(got) != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFormatting(t *testing.T) {
	if got := safeCells("=HYPERLINK(\"x\")", "+1", "-2", "@a", "ok", ""); strings.Join(got, "|") != "'=HYPERLINK(\"x\")|'+1|'-2|'@a|ok|" {
		t.Errorf("safeCells: %q", got)
	}
	for v, want := range map[float64]string{0: "0.00", 1234567.891: "1,234,567.89", -1500: "-1,500.00", 999: "999.00"} {
		if got := money(v); got != want {
			t.Errorf("money(%v) = %q, want %q", v, got, want)
		}
	}
	now := time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{-time.Second: "expired", 90 * time.Second: "1m 30s", 2*time.Hour + 5*time.Minute: "2h 05m"} {
		if got := timeLeft(now.Add(d), now); got != want {
			t.Errorf("timeLeft(%v) = %q, want %q", d, got, want)
		}
	}
}

// TestStaticFilesAreRevalidated: the script and styles may be kept and
// revalidated; pages are never stored.
func TestStaticFilesAreRevalidated(t *testing.T) {
	file := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("body{}")) })
	for _, tc := range []struct {
		h    http.Handler
		want string
	}{{secureHeaders(cacheStatic(file)), "no-cache"}, {secureHeaders(file), "no-store"}} {
		rec := httptest.NewRecorder()
		tc.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/console/static/console.css", nil))
		if got := rec.Result().Header.Get("Cache-Control"); got != tc.want {
			t.Errorf("Cache-Control %q, want %q", got, tc.want)
		}
	}
}

// TestResultsAreTheSessionsOwn: the message a decision's or a halt's
// redirect names shows only on the page it was for, in the session that
// acted: a link from anyone else ("already decided", "halt released")
// shows nothing.
func TestResultsAreTheSessionsOwn(t *testing.T) {
	s, err := NewSessions([]byte("0123456789abcdef0123456789abcdef"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	c := &Console{o: Options{Sessions: s}}
	mine, theirs := Session{ID: "session-1", Subject: "bob"}, Session{ID: "session-2", Subject: "bob"}
	own := c.resultURL(mine, "/console/approvals/APR-1", "decided")
	rt := httptest.NewRequest(http.MethodGet, own, nil).URL.Query().Get("rt")
	for _, tc := range []struct {
		name, url string
		sess      Session
		want      string
	}{
		{"its own redirect", own, mine, "decided"},
		{"another session's", own, theirs, ""},
		{"a bare link", "/console/approvals/APR-1?result=decided", mine, ""},
		{"for another page", "/console/approvals/APR-2?rt=" + rt + "&result=decided", mine, ""},
		{"another result", "/console/approvals/APR-1?rt=" + rt + "&result=approved", mine, ""},
	} {
		if got := c.resultOf(httptest.NewRequest(http.MethodGet, tc.url, nil), tc.sess); got != tc.want {
			t.Errorf("%s: result %q, want %q", tc.name, got, tc.want)
		}
	}
	if !strings.HasSuffix(own, "result=decided") {
		t.Errorf("redirect %q does not end in the result", own)
	}
}

// TestViews: every page renders for its data, and text from approvals,
// requests and tokens reaches it escaped, in element text, attribute
// values and URLs alike: whatever the text, the page has the elements and
// attributes it has for plain text and no others, links that stay on the
// console, and the text, escaped, wherever plain text appears.
func TestViews(t *testing.T) {
	const marker = "PLAIN7" // the same in every context's escaping
	c := &Console{o: Options{Now: time.Now}}
	plain := c.renderAll(t, marker)
	for _, evil := range []string{
		`<script>alert(1)</script>"'&`,
		`"><img src=x onerror=alert(1)>`,
		`' onmouseover='alert(1)' x='`,
		`</title></textarea></pre></td><svg onload=alert(1)>`,
		`<!-- -->&lt;script&gt;<![CDATA[`,
		`javascript:alert(1)`,
	} {
		forms := map[string]bool{html.EscapeString(evil): true, html.EscapeString(url.QueryEscape(evil)): true, html.EscapeString(url.PathEscape(evil)): true}
		for name, page := range c.renderAll(t, evil) {
			got, urls := structure(page)
			if want, _ := structure(plain[name]); !slices.Equal(got, want) {
				t.Errorf("%s with %q: elements and attributes\n%q\nwant (as for plain text)\n%q\npage:\n%s", name, evil, got, want, page)
			}
			for _, u := range urls {
				if !strings.HasPrefix(u, "/") || strings.HasPrefix(u, "//") {
					t.Errorf("%s with %q: a link to %q, off the console", name, evil, u)
				}
			}
			n := 0
			for f := range forms {
				n += strings.Count(page, f)
			}
			if want := strings.Count(plain[name], marker); n != want {
				t.Errorf("%s: the text %q appears %d times, escaped; plain text %d times:\n%s", name, evil, n, want, page)
			}
		}
	}
	var w htmlWriter
	if _, _, ok := c.view(&w, page{Data: "not queue data"}); ok {
		t.Error("a page rendered data of the wrong type")
	}
}

// renderAll renders every page with s in each text field it shows. A
// destination is what safeNext makes of s, as in the handlers: the only
// way to a consolePath.
func (c *Console) renderAll(t *testing.T, s string) map[string]string {
	t.Helper()
	next := safeNext(s)
	appr := trading.Approval{ID: "APR-1" + s, Status: trading.ApprovalPending, Requester: s, RequesterClient: s,
		Order:      trading.OrderArgs{AccountID: s, Ticker: s, Side: s, Type: s, Quantity: 1, LimitPrice: 2},
		Preview:    &policy.Preview{EstimatedNotional: 3, ApprovalReasons: []string{s}},
		Provenance: &trading.Provenance{Subject: s, Actor: s, Agent: s, AuthorizedParty: s, Confirmation: s, PolicyVersion: s, TraceID: s},
		DecidedBy:  s, Reason: s, OrderID: s, Error: s}
	sess := &Session{Subject: s}
	halts := []halt.Halt{{Scope: s, Target: s, Reason: s, EngagedBy: s}}
	out := map[string]string{}
	for name, p := range map[string]page{
		"signin":      {Title: s, Data: signinData{Next: next, Personas: []Persona{{Key: s, Name: s, Subject: s, About: s}}, PersonaKey: s}},
		"signin-oidc": {Title: s, Data: signinData{Next: next, OIDC: true}},
		"queue":       {Title: s, Session: sess, CSRF: s, Halts: halts, Data: queueData{Rows: []row{{Approval: appr, Own: true}}, Error: s}},
		"detail":      {Title: s, Session: sess, CSRF: s, CanDecide: true, Data: detailData{Approval: appr, Pending: true, Args: s, Result: s, CheckError: s, Check: &policy.Preview{Violations: []string{s}, MarketStatus: s}}},
		"history":     {Title: s, Session: sess, Data: historyData{Rows: []historyRow{{Approval: appr, OrderState: s}}, Account: s, Status: s, Statuses: []string{s}, Error: s}},
		"halts":       {Title: s, Session: sess, CSRF: s, CanHalt: true, Halts: halts, Data: haltsData{History: []halt.Event{{Action: s, Scope: s, Target: s, By: s, Reason: s}}, Error: s, Result: s, Report: &trading.CancelReport{Scope: s, Target: s, Cancelled: []string{s}, Withdrawn: []string{s}, Failed: []string{s}}}},
		"message":     {Title: s, Session: sess, Data: messageData{s}},
		"signedin":    {Title: s, Data: next},
	} {
		var w htmlWriter
		head, content, ok := c.view(&w, p)
		if !ok {
			t.Fatalf("%s: no view for %T", name, p.Data)
		}
		layout(&w, p, head, content)
		out[name] = string(w.b)
	}
	return out
}

// structure is a page's elements as an HTML tokenizer reads them, each
// with its attributes' names, in document order (what text must never
// change), and the URLs its links, forms, sources and refresh lead to.
func structure(page string) (elements, urls []string) {
	z := xhtml.NewTokenizer(strings.NewReader(page))
	for {
		switch z.Next() {
		case xhtml.ErrorToken:
			return elements, urls
		case xhtml.StartTagToken, xhtml.SelfClosingTagToken, xhtml.EndTagToken:
			tok := z.Token()
			el := tok.Data
			for _, a := range tok.Attr {
				el += " " + a.Key
				switch a.Key {
				case "href", "src", "action", "formaction":
					urls = append(urls, a.Val)
				case "content":
					if _, u, ok := strings.Cut(a.Val, "url="); ok && tok.Data == "meta" {
						urls = append(urls, u)
					}
				}
			}
			elements = append(elements, el)
		case xhtml.CommentToken, xhtml.DoctypeToken:
			elements = append(elements, z.Token().String())
		}
	}
}

// TestMarkupIsConstant: no code converts a value to markup, so only
// constants are written unescaped (html.go). It reads the package's syntax,
// so a conversion is found however it is spelled.
func TestMarkupIsConstant(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no source files: %v", err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if id, ok := ast.Unparen(call.Fun).(*ast.Ident); ok && id.Name == "markup" {
					t.Errorf("%s converts a value to markup: write it with text, attr or query", fset.Position(call.Pos()))
				}
			}
			return true
		})
	}
}

package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/browsertest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// manyPending serves n pending approvals as trading.Service.ListPending
// does: oldest first, cut to the limit.
type manyPending struct {
	*trading.Service
	n int
}

func (m manyPending) ListPending(_ context.Context, _ principal.Principal, limit int) ([]trading.Approval, error) {
	base := time.Date(2026, 7, 1, 9, 0, 0, 0, time.UTC)
	var out []trading.Approval
	for i := range min(m.n, limit) {
		out = append(out, trading.Approval{ID: fmt.Sprintf("APR-%05d", i), Status: trading.ApprovalPending, Requester: "carol",
			CreatedAt: base.Add(time.Duration(i) * time.Second), ExpiresAt: base.Add(time.Hour + time.Duration(i)*time.Second),
			Order: trading.OrderArgs{AccountID: "ACC-1001", Ticker: "KO", Side: "buy", Type: "market", Quantity: 1}})
	}
	return out, nil
}

// TestQueueBeyondWhatItShows: with more pending than the queue shows, it
// shows the newest and says how many older ones it leaves out; with more
// than it can read, which are the newest is not known, and it shows the
// ones that expire first and says so.
func TestQueueBeyondWhatItShows(t *testing.T) {
	for _, tc := range []struct {
		n           int
		first, last string // rows shown, newest first
		says        string
	}{
		{700, "APR-00699", "APR-00200", "200 older approvals waiting are not shown: the queue shows the newest 500."},
		{1200, "APR-00499", "APR-00000", "More than 1000 approvals are waiting, more than the queue can read: shown are the 500 that expire first."},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			f := newDecideFixture(t)
			rebuild(t, f, manyPending{f.svc, tc.n})
			_, body := f.get(t, "/console/queue")
			if n := strings.Count(body, "data-id="); n != queueShown {
				t.Errorf("%d rows, want %d", n, queueShown)
			}
			if first := between(body, `data-id="`, `"`); first != tc.first || !strings.Contains(body, `data-id="`+tc.last+`"`) {
				t.Errorf("rows from %s, want %s to %s", first, tc.first, tc.last)
			}
			if says := between(body, `<tr class="more"><td colspan="8">`, "</td>"); says != tc.says {
				t.Errorf("the queue says %q, want %q", says, tc.says)
			}
		})
	}
}

// flappingStore's queue cannot be read while down is set.
type flappingStore struct {
	*trading.Service
	down *atomic.Bool
}

func (s flappingStore) ListPending(ctx context.Context, p principal.Principal, limit int) ([]trading.Approval, error) {
	if s.down.Load() {
		return nil, trading.ErrStateUnavailable
	}
	return s.Service.ListPending(ctx, p, limit)
}

// TestQueueLiveUpdateInABrowser: in Chromium, the queue's live update
// keeps its rows and says they may be out of date while the queue cannot
// be read, and once it can again, the page no longer says it cannot (a
// page loaded during the outage included).
func TestQueueLiveUpdateInABrowser(t *testing.T) {
	ctx := browsertest.New(t)
	f := newDecideFixture(t)
	a := f.pending(t, ko("browser-queue-1", 10))
	var down atomic.Bool
	rebuild(t, f, flappingStore{f.svc, &down})
	// The session cookie is added here: a browser sets a __Host- cookie
	// only over HTTPS.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.AddCookie(f.cookie)
		f.h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	live := `document.getElementById("live").textContent`
	main := `document.querySelector("main").innerText`
	text := func(js string) string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}

	browsertest.Run(t, ctx, "open the queue", chromedp.Navigate(srv.URL+"/console/queue"), chromedp.WaitVisible(chromedp.CSS(`tr[data-id="`+a.ID+`"]`)))
	down.Store(true)
	browsertest.Run(t, ctx, "the queue cannot be read", chromedp.Poll[chromedp.Void](live+`.includes("cannot be read")`))
	if rows := text(`document.getElementById("rows").textContent`); !strings.Contains(rows, "KO") {
		t.Errorf("rows while the queue cannot be read: %q, want the row kept", rows)
	}

	browsertest.Run(t, ctx, "load it during the outage", chromedp.Navigate(srv.URL+"/console/queue"), chromedp.WaitVisible(chromedp.CSS("#live")))
	if page := text(main); !strings.Contains(page, "cannot be read") || strings.Contains(page, "Nothing is waiting") {
		t.Errorf("loaded during the outage:\n%s", page)
	}
	down.Store(false)
	browsertest.Run(t, ctx, "the queue can be read again",
		chromedp.Poll[chromedp.Void](live+`.startsWith("Updated") && document.querySelector("tr[data-id]") !== null`))
	if page := text(main); strings.Contains(page, "cannot be read") {
		t.Errorf("the queue was read again and the page still says it cannot be:\n%s", page)
	}
}

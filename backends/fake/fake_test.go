package fake_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
)

// contractRoutes reads the route table of CONTRACT.md: rows whose first
// cell is an HTTP method, as "METHOD /path" keyed by service.
func contractRoutes(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("../CONTRACT.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 5 {
			continue
		}
		method, path, service := strings.TrimSpace(cells[1]), strings.TrimSpace(cells[2]), strings.TrimSpace(cells[3])
		switch method {
		case "GET", "POST", "PUT", "PATCH", "DELETE":
			out[service] = append(out[service], method+" "+path)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRoutesMatchContract: the fake serves exactly the documented routes,
// per service.
func TestRoutesMatchContract(t *testing.T) {
	doc := contractRoutes(t)
	var all []string
	for _, svc := range fake.Services {
		want := doc[svc]
		all = append(all, want...)
		got := fake.Routes(svc)
		slices.Sort(want)
		slices.Sort(got)
		if len(want) == 0 || !slices.Equal(got, want) {
			t.Errorf("%s: fake serves %q, CONTRACT.md documents %q", svc, got, want)
		}
	}
	if len(fake.Routes()) != len(all) {
		t.Errorf("fake has %d routes, CONTRACT.md %d", len(fake.Routes()), len(all))
	}
}

type answer struct {
	status int
	body   string
}

func do(t *testing.T, srv *httptest.Server, method, path, token, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	return answer{resp.StatusCode, string(b)}
}

func errorCode(t *testing.T, body string) (string, string) {
	t.Helper()
	var eb fake.ErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return eb.Error.Code, eb.Error.Message
}

// TestStatusesAndErrors checks the contract's statuses and error bodies
// over real HTTP.
func TestStatusesAndErrors(t *testing.T) {
	h, err := fake.New(demo.New(nil).Set(), fake.Options{Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	order := `{"client_order_id":"c-1","account_id":"ACC-1001","ticker":"AAPL","side":"buy","type":"market","quantity":2}`

	cases := []struct {
		name, method, path, token, body string
		status                          int
		code, message                   string
	}{
		{"no token", "GET", "/v1/accounts", "", "", 401, "unauthorized", ""},
		{"wrong token", "GET", "/v1/accounts", "nope", "", 401, "unauthorized", ""},
		{"accounts", "GET", "/v1/accounts", "tok", "", 200, "", ""},
		{"health needs no token", "GET", "/healthz", "", "", 200, "", ""},
		{"unknown route", "GET", "/v2/things", "tok", "", 404, "not_found", ""},
		{"unknown account", "GET", "/v1/accounts/ACC-0/portfolio", "tok", "", 404, "not_found", ""},
		{"unknown account risk", "GET", "/v1/accounts/ACC-0/risk-summary", "tok", "", 404, "not_found", ""},
		{"limit out of range", "GET", "/v1/equities?limit=500", "tok", "", 400, "invalid", "limit must be between 1 and 100"},
		{"limit not a number", "GET", "/v1/equities?limit=ten", "tok", "", 400, "invalid", "limit must be an integer"},
		{"cap not a number", "GET", "/v1/equities?min_market_cap=big", "tok", "", 400, "invalid", "min_market_cap must be a number"},
		{"cap in exponent form", "GET", "/v1/equities?min_market_cap=1e12", "tok", "", 200, "", ""},
		{"order body not JSON", "POST", "/v1/orders", "tok", "{", 400, "invalid", "body is not an order request"},
		{"order with unknown field", "POST", "/v1/orders", "tok", `{"client_order_id":"x","price":1}`, 400, "invalid", "body is not an order request"},
		{"two orders in one body", "POST", "/v1/orders", "tok", order + order, 400, "invalid", "body must hold exactly one order request"},
		{"order", "POST", "/v1/orders", "tok", order, 200, "", ""},
		{"same order again", "POST", "/v1/orders", "tok", order, 200, "", ""},
		{"same id, other order", "POST", "/v1/orders", "tok", strings.Replace(order, `"quantity":2`, `"quantity":3`, 1), 400, "invalid", `client_order_id "c-1" was already used for a different order`},
		{"cancel filled order", "POST", "/v1/orders/ORD-00000001/cancel", "tok", "", 400, "invalid", "order ORD-00000001 is filled and can no longer be cancelled"},
		{"unknown order", "GET", "/v1/orders/ORD-9", "tok", "", 404, "not_found", ""},
		{"wrong method", "DELETE", "/v1/orders/ORD-00000001", "tok", "", 404, "not_found", "no such route"},
	}
	var firstOrder string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, srv, tc.method, tc.path, tc.token, tc.body)
			if a.status != tc.status {
				t.Fatalf("status %d (%s), want %d", a.status, a.body, tc.status)
			}
			if tc.code != "" {
				code, msg := errorCode(t, a.body)
				if code != tc.code || (tc.message != "" && msg != tc.message) {
					t.Errorf("error %q %q, want %q %q", code, msg, tc.code, tc.message)
				}
			}
			if tc.path == "/v1/orders" && a.status == 200 {
				var o backends.Order
				json.Unmarshal([]byte(a.body), &o)
				if firstOrder == "" {
					firstOrder = o.OrderID
				} else if o.OrderID != firstOrder {
					t.Errorf("repeat of client_order_id c-1 made order %s, want %s", o.OrderID, firstOrder)
				}
			}
		})
	}
}

// TestServiceSelection: a fake of one service serves only its routes.
func TestServiceSelection(t *testing.T) {
	h, err := fake.New(demo.New(nil).Set(), fake.Options{Services: []string{fake.Risk}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if a := do(t, srv, "GET", "/v1/accounts/ACC-1001/risk-summary", "", ""); a.status != 200 {
		t.Errorf("risk route: %d", a.status)
	}
	if a := do(t, srv, "GET", "/v1/accounts", "", ""); a.status != 404 {
		t.Errorf("portfolio route on the risk fake: %d, want 404", a.status)
	}
	if _, err := fake.New(demo.New(nil).Set(), fake.Options{Services: []string{"ledger"}}); err == nil {
		t.Error("unknown service accepted")
	}
}

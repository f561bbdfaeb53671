package main_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/redistest"
)

// countingTrade counts the distinct orders the Trade service created.
type countingTrade struct {
	backends.Trade
	mu     sync.Mutex
	orders map[string]bool
}

func (c *countingTrade) PlaceOrder(ctx context.Context, r backends.OrderRequest) (backends.Order, error) {
	o, err := c.Trade.PlaceOrder(ctx, r)
	if err == nil {
		c.mu.Lock()
		c.orders[o.OrderID] = true
		c.mu.Unlock()
	}
	return o, err
}

func (c *countingTrade) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.orders) }

// TestSIGKILLAfterBackendAccepted kills a server process right after the
// Trade service accepted its order and before the server heard the answer.
// The client's retry with the same key, on a fresh process sharing Redis,
// neither loses nor duplicates the order.
func TestSIGKILLAfterBackendAccepted(t *testing.T) {
	bin := buildServer(t)
	rds := redistest.Start(t)

	set := demo.New(nil).Set()
	trade := &countingTrade{Trade: set.Trade, orders: map[string]bool{}}
	set.Trade = trade
	accepted := make(chan string, 1)
	release := make(chan struct{})
	var first sync.Once
	backend, err := fake.New(set, fake.Options{Wrap: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Pattern != "POST /v1/orders" {
				next.ServeHTTP(w, r)
				return
			}
			held := false
			first.Do(func() { held = true })
			if !held {
				next.ServeHTTP(w, r)
				return
			}
			// Accept the order, then never answer: the server dies waiting.
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			var o backends.Order
			json.Unmarshal(rec.Body.Bytes(), &o)
			accepted <- o.OrderID
			<-release
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	fakeSrv := httptest.NewServer(backend)
	defer fakeSrv.Close()
	defer close(release)

	start := func() (*exec.Cmd, string) {
		port := freePort(t)
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "LOG_LEVEL=warn",
			"PORTFOLIO_URL="+fakeSrv.URL, "TRADE_URL="+fakeSrv.URL, "RISK_URL="+fakeSrv.URL,
			"REDIS_URL="+rds.URL(), "ENFORCE_MARKET_HOURS=false", "BACKEND_TIMEOUT=1s", "EXECUTION_LEASE=2s",
			"SECRET_REQUEST_STATE_KEY=crash-test-request-state-key-0123456789",
			"SECRET_APPROVAL_EVENT_KEY=crash-test-approval-event-key-0123456789")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitReady(t, port)
		return cmd, "http://127.0.0.1:" + strconv.Itoa(port) + "/mcp"
	}
	call := func(ctx context.Context, url string) (*mcp.CallToolResult, error) {
		client := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil)
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: url, MaxRetries: -1}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
		if err != nil {
			return nil, err
		}
		defer cs.Close()
		return cs.CallTool(ctx, &mcp.CallToolParams{Name: "place_order", Arguments: map[string]any{
			"account_id": "ACC-1001", "ticker": "KO", "side": "buy", "quantity": 10, "idempotency_key": "crash-test-key-1", "confirm": true,
		}})
	}

	victim, url1 := start()
	done := make(chan error, 1)
	go func() {
		_, err := call(t.Context(), url1)
		done <- err
	}()
	orderID := <-accepted
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("the call to the killed server succeeded")
	}

	_, url2 := start()
	res, err := call(t.Context(), url2)
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError {
		t.Fatalf("retry: %v", res.Content[0].(*mcp.TextContent).Text)
	}
	var out struct {
		Status string
		Order  backends.Order
	}
	b, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	if out.Status != backends.StatusFilled || out.Order.OrderID != orderID {
		t.Fatalf("retry outcome %s order %s, want filled %s", out.Status, out.Order.OrderID, orderID)
	}
	if trade.count() != 1 {
		t.Fatalf("the Trade service holds %d orders, want exactly 1", trade.count())
	}
}

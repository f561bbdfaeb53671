// Package fake serves the backend HTTP/JSON contract (backends/CONTRACT.md)
// over any backends.Set. cmd/fakebackends runs it over the demo data set, so
// the containerised Portfolio, Risk and Trade fakes answer exactly what the
// built-in demo backend answers; the client tests run it under httptest.
package fake

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// Service names, as in the contract's route table.
const (
	Portfolio = "portfolio"
	Risk      = "risk"
	Trade     = "trade"
)

// Services lists every service the contract defines.
var Services = []string{Portfolio, Risk, Trade}

// maxBody bounds an order request body; a real order is a few hundred bytes.
const maxBody = 64 << 10

// Options configure the handler New returns.
type Options struct {
	// Services selects which services to serve; empty serves all three.
	Services []string
	// Token, if set, is the bearer token every contract route requires.
	Token string
	// Wrap, if set, wraps every contract route after routing, so r.Pattern
	// names the route (fault injection hooks in here).
	Wrap func(http.Handler) http.Handler
}

// route is one row of the contract's route table.
type route struct {
	service string
	pattern string
	handle  func(s *server, w http.ResponseWriter, r *http.Request) (any, error)
}

// routes is the contract. Keep it in step with CONTRACT.md; a test checks.
var routes = []route{
	{Portfolio, "GET /v1/accounts", (*server).listAccounts},
	{Portfolio, "GET /v1/accounts/{account_id}/portfolio", (*server).getPortfolio},
	{Portfolio, "GET /v1/equities", (*server).searchEquities},
	{Portfolio, "GET /v1/quotes", (*server).quotes},
	{Risk, "GET /v1/accounts/{account_id}/risk-summary", (*server).riskSummary},
	{Trade, "POST /v1/orders", (*server).placeOrder},
	{Trade, "GET /v1/orders/{order_id}", (*server).getOrder},
	{Trade, "GET /v1/client-orders/{client_order_id}", (*server).orderByClientID},
	{Trade, "POST /v1/orders/{order_id}/cancel", (*server).cancelOrder},
}

// Routes returns the route patterns ("GET /v1/accounts") of the given
// services, or of all services when none is named.
func Routes(services ...string) []string {
	var out []string
	for _, rt := range routes {
		if len(services) == 0 || slices.Contains(services, rt.service) {
			out = append(out, rt.pattern)
		}
	}
	return out
}

type server struct {
	set   backends.Set
	token string
}

// New returns a handler serving the contract routes of the selected
// services over set, plus GET /healthz (never wrapped, never authenticated).
// Unknown paths answer 404 with the contract's error body.
func New(set backends.Set, o Options) (http.Handler, error) {
	services := o.Services
	if len(services) == 0 {
		services = Services
	}
	for _, name := range services {
		if !slices.Contains(Services, name) {
			return nil, fmt.Errorf("unknown service %q (want one of %s)", name, strings.Join(Services, ", "))
		}
	}
	s := &server{set: set, token: o.Token}
	wrap := o.Wrap
	if wrap == nil {
		wrap = func(h http.Handler) http.Handler { return h }
	}
	mux := http.NewServeMux()
	for _, rt := range routes {
		if !slices.Contains(services, rt.service) {
			continue
		}
		mux.Handle(rt.pattern, wrap(s.endpoint(rt.handle)))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, "not_found", "no such route")
	})
	return mux, nil
}

// endpoint adapts a route function: authentication, then JSON or the
// contract's error body.
func (s *server) endpoint(h func(*server, http.ResponseWriter, *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token != "" && !s.authorized(r) {
			WriteError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid bearer token")
			return
		}
		v, err := h(s, w, r)
		if err != nil {
			writeBackendError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

func (s *server) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) == 1
}

func (s *server) listAccounts(w http.ResponseWriter, r *http.Request) (any, error) {
	accts, err := s.set.Portfolio.ListAccounts(r.Context())
	if accts == nil {
		accts = []backends.Account{}
	}
	return map[string][]backends.Account{"accounts": accts}, err
}

func (s *server) getPortfolio(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.set.Portfolio.GetPortfolio(r.Context(), r.PathValue("account_id"))
}

func (s *server) searchEquities(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	eq := backends.EquityQuery{
		Text: q.Get("q"), Sector: q.Get("sector"), Exchange: q.Get("exchange"), Cursor: q.Get("cursor"),
	}
	var err error
	if eq.MinMarketCap, err = number(q, "min_market_cap"); err != nil {
		return nil, err
	}
	if eq.MaxMarketCap, err = number(q, "max_market_cap"); err != nil {
		return nil, err
	}
	if v := q.Get("limit"); v != "" {
		if eq.Limit, err = strconv.Atoi(v); err != nil {
			return nil, fmt.Errorf("%w: limit must be an integer", backends.ErrInvalid)
		}
	}
	return s.set.MarketData.SearchEquities(r.Context(), eq)
}

func number(q map[string][]string, name string) (float64, error) {
	v := ""
	if vs := q[name]; len(vs) > 0 {
		v = vs[0]
	}
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be a number", backends.ErrInvalid, name)
	}
	return f, nil
}

func (s *server) quotes(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.set.MarketData.Quotes(r.Context(), r.URL.Query()["ticker"])
}

func (s *server) riskSummary(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.set.Risk.RiskSummary(r.Context(), r.PathValue("account_id"))
}

func (s *server) placeOrder(w http.ResponseWriter, r *http.Request) (any, error) {
	var req backends.OrderRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("%w: body is not an order request", backends.ErrInvalid)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: body must hold exactly one order request", backends.ErrInvalid)
	}
	return s.set.Trade.PlaceOrder(r.Context(), req)
}

func (s *server) getOrder(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.set.Trade.GetOrder(r.Context(), r.PathValue("order_id"))
}

func (s *server) orderByClientID(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.set.Trade.OrderByClientID(r.Context(), r.PathValue("client_order_id"))
}

func (s *server) cancelOrder(w http.ResponseWriter, r *http.Request) (any, error) {
	return s.set.Trade.CancelOrder(r.Context(), r.PathValue("order_id"))
}

// Book is the order book behind the order admin API (the demo backend).
type Book interface {
	Orders() []backends.Order
	Fill(orderID string, qty float64) (backends.Order, error)
}

// OrderAdmin serves the fakes' order admin API, mounted at /admin/orders:
// what the Trade service holds, and fills the frozen demo market would never
// make by itself, so a test can compare the server's answers with the
// service's record and move a working order on.
//
//	GET  /admin/orders                   every order, oldest first
//	POST /admin/orders/{order_id}/fill   {"quantity": N} fills N more shares at the limit
func OrderAdmin(b Book) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/orders", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]backends.Order{"orders": b.Orders()})
	})
	mux.HandleFunc("POST /admin/orders/{order_id}/fill", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Quantity float64 `json:"quantity"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&in); err != nil {
			WriteError(w, http.StatusBadRequest, "invalid", "body must be {\"quantity\": N}")
			return
		}
		o, err := b.Fill(r.PathValue("order_id"), in.Quantity)
		if err != nil {
			writeBackendError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, o)
	})
	return mux
}

// ErrorBody is the contract's error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: a machine code and a message safe to
// show an end user.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteError answers status with the contract's error body.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{ErrorDetail{Code: code, Message: msg}})
}

// writeBackendError maps the backends sentinel errors to the contract's
// statuses. An invalid request's message is the implementation's own text
// without the sentinel's prefix, so a client that re-wraps it with
// backends.ErrInvalid reproduces the in-process error exactly.
func writeBackendError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, backends.ErrNotFound):
		WriteError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, backends.ErrInvalid):
		msg := strings.TrimPrefix(err.Error(), backends.ErrInvalid.Error()+": ")
		WriteError(w, http.StatusBadRequest, "invalid", msg)
	case errors.Is(err, backends.ErrUnavailable):
		WriteError(w, http.StatusServiceUnavailable, "unavailable", "service unavailable")
	default:
		WriteError(w, http.StatusInternalServerError, "internal", "internal error")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

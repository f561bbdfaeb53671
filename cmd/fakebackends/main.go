// Command fakebackends serves the HTTP/JSON contract of the firm's
// Portfolio, Risk and Trade services (backends/CONTRACT.md) from the same
// deterministic demo data set the server uses by default, with a
// fault-injection admin API. Integration tests run it as a container; a
// developer can point a local server at it.
//
//	fakebackends [-addr 127.0.0.1:8090] [-services portfolio,risk,trade] [-token T]
//
// Faults are set at run time over /admin/faults, and the Trade fake's orders
// read and filled over /admin/orders (backends/CONTRACT.md). That admin API
// is unauthenticated, so the default address is loopback; in a container,
// where only the test can reach it, pass -addr :8090.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/backends/demo"
	"github.com/portfolio-mcp/portfolio-mcp/backends/fake"
	"github.com/portfolio-mcp/portfolio-mcp/backends/faults"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("fakebackends", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address (the admin API is unauthenticated: keep it off shared networks)")
	services := fs.String("services", strings.Join(fake.Services, ","), "comma-separated services to serve: portfolio, risk, trade")
	token := fs.String("token", os.Getenv("FAKE_BACKEND_TOKEN"), "bearer token required on contract routes (default $FAKE_BACKEND_TOKEN; empty: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	selected := strings.Split(*services, ",")
	inj := faults.New(fake.Routes(selected...))
	book := demo.New(nil)
	contract, err := fake.New(book.Set(), fake.Options{Services: selected, Token: *token, Wrap: inj.Wrap})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakebackends:", err)
		return 2
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", inj.Admin())
	mux.Handle("/admin/orders", fake.OrderAdmin(book))
	mux.Handle("/admin/orders/", fake.OrderAdmin(book))
	mux.Handle("/", contract)

	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// Request contexts end at shutdown, which releases hung requests.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("listen failed", "error", err)
		return 1
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "services", selected, "auth", *token != "")

	select {
	case err := <-errc:
		log.Error("server stopped", "error", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Error("shutdown", "error", err)
		return 1
	}
	return 0
}

// Command portfolio-mcp serves the portfolio MCP server over Streamable HTTP.
// With no configuration it listens on 127.0.0.1:8080 with built-in demo
// backends; in Knative every setting comes from the Service's environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"

	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/internal/app"
	"github.com/portfolio-mcp/portfolio-mcp/internal/telemetry"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: portfolio-mcp [--help] [--version]

portfolio-mcp serves the Model Context Protocol over Streamable HTTP at /mcp
(stateless; protocol versions 2026-07-28, 2025-11-25, 2025-06-18, 2025-03-26
and 2024-11-05), with probes at /healthz and /readyz, metrics at /metrics and
the approvals API at /approvals.

It is configured by environment variables only (Knative sets them from the
Service's env list); the README lists them all. With none set it listens on
127.0.0.1:8080, serves the built-in demo backends with in-memory state, and
authenticates nobody (loopback only). The ones that matter most:

  PORT, LISTEN_HOST        where to listen (default 127.0.0.1:8080)
  OAUTH_ISSUER, PUBLIC_URL  bearer-token authentication (required off loopback)
  PORTFOLIO_URL, TRADE_URL, RISK_URL
                           the firm's services (all three, or none for the demo)
  REDIS_URL                shared state for more than one replica
  SECRETS_DIR              mounted secret files (request-state-key, approval-event-key, audit-signing-key, ...)
  TRADING_MODE             paper (default) or live
  LOG_LEVEL                debug, info (default), warn or error

Flags:
  --help      print this help and exit
  --version   print the version and exit

Exit codes: 0 after a clean drain, 1 on a runtime failure, 2 on bad
configuration or usage.
`

// version is the build's version: the release's, stamped with -ldflags,
// else what the Go toolchain recorded of the source.
func version() string {
	v := app.Version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = ", modified"
				}
			}
		}
		if rev != "" {
			v += fmt.Sprintf(" (commit %.12s%s)", rev, modified)
		}
	}
	return fmt.Sprintf("portfolio-mcp %s %s %s/%s", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// run returns the process exit code: 0 after a clean drain (or after
// --help and --version), 1 on a runtime failure, 2 on bad configuration or
// usage.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("portfolio-mcp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return 2
	}
	switch {
	case *showVersion:
		fmt.Fprintln(stdout, version())
		return 0
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "portfolio-mcp takes no arguments (got %q); it is configured by environment variables\n\n", fs.Args())
		fs.Usage()
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	cfg, err := config.Load(ctx)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	rev := telemetry.Revision{
		Service:       os.Getenv("K_SERVICE"),
		Configuration: os.Getenv("K_CONFIGURATION"),
		Revision:      os.Getenv("K_REVISION"),
	}
	log := telemetry.NewLogger(stdout, cfg.LogLevel, rev)
	// OpenTelemetry reports export failures (a collector down) through its
	// one process-wide handler: into the JSON log, at warn.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("opentelemetry", "error", err) }))
	// go-redis reports pool trouble (dial failures while Redis is away)
	// through a logger of its own, process-wide: route it into ours, as
	// structured warnings, instead of bare lines on stderr.
	redis.SetLogger(redisLog{log})

	srv, err := app.New(ctx, cfg, rev, log)
	if err != nil {
		var cerr *config.Error
		if errors.As(err, &cerr) {
			fmt.Fprintln(stderr, err)
			return 2
		}
		log.Error("start-up failed", "error", err)
		return 1
	}
	ln, err := srv.Listen()
	if err != nil {
		log.Error("start-up failed", "error", err)
		return 1
	}
	if err := srv.Serve(ctx, ln); err != nil {
		log.Error("server stopped with error", "error", err)
		return 1
	}
	return 0
}

// redisLog is go-redis's logger on top of ours.
type redisLog struct{ log *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.log.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

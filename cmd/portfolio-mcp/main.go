// Command portfolio-mcp serves the portfolio MCP server over Streamable HTTP.
// With no configuration it listens on 127.0.0.1:8080 with built-in demo
// backends; in Knative every setting comes from the Service's environment.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/portfolio-mcp/portfolio-mcp/app"
	"github.com/portfolio-mcp/portfolio-mcp/config"
	"github.com/portfolio-mcp/portfolio-mcp/telemetry"
)

func main() {
	os.Exit(run())
}

// run returns the process exit code: 0 after a clean drain, 1 on a runtime
// failure, 2 on bad configuration.
func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	cfg, err := config.Load(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rev := telemetry.Revision{
		Service:       os.Getenv("K_SERVICE"),
		Configuration: os.Getenv("K_CONFIGURATION"),
		Revision:      os.Getenv("K_REVISION"),
	}
	log := telemetry.NewLogger(os.Stdout, cfg.LogLevel, rev)

	srv, err := app.New(ctx, cfg, rev, log)
	if err != nil {
		var cerr *config.Error
		if errors.As(err, &cerr) {
			fmt.Fprintln(os.Stderr, err)
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

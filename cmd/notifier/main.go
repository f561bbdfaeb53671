// Command notifier tells people in a chat channel that an order is waiting
// for an approver, and what the approver decided. It runs as its own small
// Knative Service, subscribed by three Triggers to the trade-step
// CloudEvents (type com.portfolio-mcp.trade.step) that portfolio-mcp
// publishes to its Broker, and posts one Slack-compatible incoming-webhook
// message for each approval.requested, approval.decided and
// approval.decided.superseded step, linking to the approvals console. Every other event is acknowledged and dropped.
//
// The webhook URL is a credential: it is read from a mounted secret file
// on every delivery (a rotated secret applies without a restart) and never
// logged. Whatever the event says is escaped before it reaches the channel,
// so a principal or reason cannot ping the channel or plant a link. A
// delivery the webhook does not take after a few retries is answered 503,
// so the Broker redelivers it; a redelivery of an event already posted is
// acknowledged without posting twice. docs/notifications.md is the guide.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/sethvargo/go-envconfig"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], envconfig.OsLookuper(), os.Stdout, os.Stderr))
}

const usage = `Usage: notifier [--help]

notifier receives portfolio-mcp trade-step CloudEvents on POST / (binary or
structured mode) and posts approval requests and decisions to a
Slack-compatible incoming webhook, with probes at /healthz and /readyz.

It is configured by environment variables only (docs/notifications.md):

  CONSOLE_URL            base URL of portfolio-mcp, for the approvals console link (required)
  WEBHOOK_URL_FILE       file holding the webhook URL
                         (default /var/run/secrets/portfolio-mcp-notifier/webhook-url)
  PORT, LISTEN_HOST      where to listen (default 127.0.0.1:8080)
  WEBHOOK_TIMEOUT        bound on one post to the webhook (default 5s)
  WEBHOOK_RETRY_BUDGET   bound on all attempts for one event (default 20s)
  WEBHOOK_MAX_ATTEMPTS   attempts for one event (default 4)
  LOG_LEVEL              debug, info (default), warn or error

Exit codes: 0 after a clean drain, 1 on a runtime failure, 2 on bad
configuration or usage.
`

// run returns the process exit code: 0 after a clean drain (or --help), 1
// on a runtime failure, 2 on bad configuration or usage. It serves until
// ctx ends, then drains.
func run(ctx context.Context, args []string, env envconfig.Lookuper, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("notifier", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "notifier takes no arguments (got %q); it is configured by environment variables\n\n", fs.Args())
		fs.Usage()
		return 2
	}
	cfg, err := loadConfig(ctx, env)
	if err != nil {
		fmt.Fprintln(stderr, "notifier:", err)
		return 2
	}
	log := newLogger(stdout, cfg)
	n, err := newNotifier(cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "notifier:", err)
		return 2
	}
	n.checkWebhook(ctx)
	ln, err := net.Listen("tcp", cfg.addr())
	if err != nil {
		log.Error("cannot listen", "addr", cfg.addr(), "error", err)
		return 1
	}
	if err := serve(ctx, ln, n, cfg.DrainTimeout); err != nil {
		log.Error("notifier stopped", "error", err)
		return 1
	}
	log.Info("notifier drained")
	return 0
}

// newLogger is a JSON logger at cfg's level that stamps every line with the
// Knative service and revision, as the server's logs are.
func newLogger(w io.Writer, cfg Config) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(cfg.LogLevel)) // validated in loadConfig
	log := slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lv}))
	if cfg.Service != "" {
		log = log.With("k_service", cfg.Service)
	}
	if cfg.Revision != "" {
		log = log.With("k_revision", cfg.Revision)
	}
	return log
}

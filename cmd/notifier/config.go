package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/loopback"
)

// DefaultWebhookURLFile is where the Knative Service mounts the Secret the
// notifier's ExternalSecret writes (key webhook-url).
const DefaultWebhookURLFile = "/var/run/secrets/portfolio-mcp-notifier/webhook-url"

// Config is every setting the notifier reads, from the environment (the
// Knative Service's env list).
type Config struct {
	// Port is the TCP port to listen on. Knative sets PORT.
	Port int `env:"PORT, default=8080"`
	// ListenHost is the address to bind. The loopback default keeps a laptop
	// run private; in a cluster it is 0.0.0.0 so the kubelet's liveness
	// probe reaches the pod IP.
	ListenHost string `env:"LISTEN_HOST, default=127.0.0.1"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL, default=info"`

	// ConsoleURL is portfolio-mcp's public base URL (the route URL without
	// /mcp); messages link to <ConsoleURL>/console/approvals/<approval id>.
	ConsoleURL string `env:"CONSOLE_URL, required"`
	// WebhookURLFile holds the incoming-webhook URL, a credential. It is
	// read on every delivery, so a rotated Secret applies without a restart.
	WebhookURLFile string `env:"WEBHOOK_URL_FILE, default=/var/run/secrets/portfolio-mcp-notifier/webhook-url"`

	// WebhookTimeout bounds one post to the webhook.
	WebhookTimeout time.Duration `env:"WEBHOOK_TIMEOUT, default=5s"`
	// RetryBudget bounds every attempt for one event together, waits
	// included. Keep it below the Trigger's delivery timeout, so the Broker
	// hears the answer instead of timing out.
	RetryBudget time.Duration `env:"WEBHOOK_RETRY_BUDGET, default=20s"`
	// MaxAttempts is how many posts one event gets (network errors, 408,
	// 429 and 5xx are retried) before it is answered 503.
	MaxAttempts uint `env:"WEBHOOK_MAX_ATTEMPTS, default=4"`
	// RetryBackoff is the first wait between attempts; it doubles (with
	// jitter) after each one. A Retry-After from the webhook replaces it.
	RetryBackoff time.Duration `env:"WEBHOOK_RETRY_BACKOFF, default=500ms"`
	// DedupSize is how many delivered event ids are remembered, so a
	// redelivery of an event already posted is not posted again.
	DedupSize int `env:"DEDUP_SIZE, default=10000"`
	// DrainTimeout bounds graceful shutdown after SIGTERM. Keep it below the
	// pod's termination grace period (Knative: timeoutSeconds).
	DrainTimeout time.Duration `env:"DRAIN_TIMEOUT, default=20s"`

	// Service and Revision are Knative's names for this process, put on
	// every log line.
	Service  string `env:"K_SERVICE"`
	Revision string `env:"K_REVISION"`
}

// loadConfig reads the configuration from env and validates it, collecting
// every problem into one error that names the variables.
func loadConfig(ctx context.Context, env envconfig.Lookuper) (Config, error) {
	var cfg Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &cfg, Lookuper: env}); err != nil {
		return cfg, fmt.Errorf("configuration: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return cfg, fmt.Errorf("configuration: %w", err)
	}
	return cfg, nil
}

func (c Config) validate() error {
	var errs []error
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("PORT %d is not a TCP port", c.Port))
	}
	if c.ListenHost == "" {
		errs = append(errs, errors.New("LISTEN_HOST is empty"))
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("LOG_LEVEL %q is not debug, info, warn or error", c.LogLevel))
	}
	if _, err := consoleBase(c.ConsoleURL); err != nil {
		errs = append(errs, fmt.Errorf("CONSOLE_URL: %w", err))
	}
	if c.WebhookURLFile == "" {
		errs = append(errs, errors.New("WEBHOOK_URL_FILE is empty"))
	}
	for name, d := range map[string]time.Duration{
		"WEBHOOK_TIMEOUT": c.WebhookTimeout, "WEBHOOK_RETRY_BUDGET": c.RetryBudget,
		"WEBHOOK_RETRY_BACKOFF": c.RetryBackoff, "DRAIN_TIMEOUT": c.DrainTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v must be positive", name, d))
		}
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, errors.New("WEBHOOK_MAX_ATTEMPTS must be at least 1"))
	}
	if c.DedupSize < 1 {
		errs = append(errs, fmt.Errorf("DEDUP_SIZE %d must be at least 1", c.DedupSize))
	}
	return errors.Join(errs...)
}

// addr is the listen address, host:port.
func (c Config) addr() string {
	return net.JoinHostPort(c.ListenHost, strconv.Itoa(c.Port))
}

// consoleBase parses CONSOLE_URL: an absolute https URL (http only on a
// loopback host, for a laptop) with no query, fragment or credentials, and
// nothing that would end a Slack link early.
func consoleBase(raw string) (*url.URL, error) {
	if strings.ContainsAny(raw, "<>| \t\r\n\"") {
		return nil, fmt.Errorf("%q holds a character a chat link cannot carry", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %w", raw, err)
	}
	switch {
	case u.Host == "":
		return nil, fmt.Errorf("%q is not an absolute URL", raw)
	case u.Scheme != "https" && (u.Scheme != "http" || !loopback.Name(u.Hostname())):
		return nil, fmt.Errorf("%q must be https (http only on a loopback host)", raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return nil, fmt.Errorf("%q must be a base URL without credentials, query or fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

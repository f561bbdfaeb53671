package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/loopback"
)

// webhook posts messages to a Slack-compatible incoming webhook whose URL
// is read from a file. The URL is a credential (whoever has it can post to
// the channel): no error or log line this type produces contains it.
type webhook struct {
	file     string
	client   *http.Client
	timeout  time.Duration // one attempt
	budget   time.Duration // every attempt and wait for one message
	attempts uint
	backoff  time.Duration // first wait between attempts
}

func newWebhook(cfg Config) *webhook {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 4
	return &webhook{
		file: cfg.WebhookURLFile,
		client: &http.Client{
			Transport: transport,
			// A redirect is not followed: it would carry the message (and
			// the request to a URL derived from the secret one) elsewhere,
			// possibly downgraded to http. It fails the post instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		timeout:  cfg.WebhookTimeout,
		budget:   cfg.RetryBudget,
		attempts: cfg.MaxAttempts,
		backoff:  cfg.RetryBackoff,
	}
}

// errNoWebhook wraps every problem with the webhook URL file: the message
// cannot be posted until the Secret is fixed.
var errNoWebhook = errors.New("no usable webhook URL")

// url reads the webhook URL from its file. It is read on every call, so a
// rotated Secret (the kubelet swaps the mounted files atomically) applies
// to the next message without a restart.
func (w *webhook) url() (string, error) {
	b, err := os.ReadFile(w.file)
	if err != nil {
		return "", fmt.Errorf("%w: reading WEBHOOK_URL_FILE: %w", errNoWebhook, err)
	}
	raw := strings.TrimSpace(string(b))
	if raw == "" {
		return "", fmt.Errorf("%w: %s is empty", errNoWebhook, w.file)
	}
	// Errors from here on must not quote the URL, so url.Parse's error
	// (which does) is not wrapped.
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%w: %s does not hold an absolute URL", errNoWebhook, w.file)
	}
	if u.Scheme != "https" && (u.Scheme != "http" || !loopback.Name(u.Hostname())) {
		return "", fmt.Errorf("%w: the URL in %s is not https (http is allowed only to a loopback host)", errNoWebhook, w.file)
	}
	return u.String(), nil
}

// post sends text as {"text": ...} and returns the number of attempts made.
// Network errors, 408, 429 and 5xx answers are retried with jittered
// exponential backoff (a Retry-After replaces the wait), at most
// w.attempts times within w.budget and ctx; any other answer than 2xx
// fails at once. retrying is told of each failed attempt that will be
// retried.
func (w *webhook) post(ctx context.Context, text string, retrying backoff.Notify) (int, error) {
	target, err := w.url()
	if err != nil {
		return 0, err
	}
	body, err := json.Marshal(struct {
		Text string `json:"text"`
	}{text})
	if err != nil {
		return 0, fmt.Errorf("encoding the message: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.budget)
	defer cancel()
	attempts := 0
	var last error
	_, err = backoff.Retry(ctx, func() (struct{}, error) {
		attempts++
		last = w.attempt(ctx, target, body)
		return struct{}{}, last
	},
		backoff.WithBackOff(&backoff.ExponentialBackOff{
			InitialInterval: w.backoff, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: w.budget,
		}),
		backoff.WithMaxTries(w.attempts),
		backoff.WithMaxElapsedTime(w.budget),
		backoff.WithNotify(retrying),
	)
	if err == nil {
		return attempts, nil
	}
	if cause := context.Cause(ctx); cause != nil && errors.Is(err, cause) && last != nil && !errors.Is(last, cause) {
		// The budget or the caller's context ended during a wait: say what
		// the webhook last did, not only that time ran out.
		err = fmt.Errorf("%w (last attempt: %w)", err, last)
	}
	return attempts, fmt.Errorf("posting to the webhook after %d attempts: %w", attempts, err)
}

// statusError is a webhook answer other than 2xx.
type statusError struct {
	code int
	body string // the start of the answer, Slack's error code ("invalid_payload", "no_service", ...)
}

func (e *statusError) Error() string {
	return fmt.Sprintf("webhook answered %d %q", e.code, e.body)
}

// throttled is a retryable answer that said when to try again: backoff
// waits that long instead of its own interval.
type throttled struct {
	status *statusError
	wait   *backoff.RetryAfterError
}

func (e *throttled) Error() string {
	return fmt.Sprintf("%v, retry after %v", e.status, e.wait.Duration)
}

func (e *throttled) Unwrap() []error { return []error{e.status, e.wait} }

// attempt posts body once.
func (w *webhook) attempt(ctx context.Context, target string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return backoff.Permanent(errors.New("building the webhook request failed")) // err would quote the URL
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		// *url.Error quotes the whole URL; keep only what went wrong.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook unreachable: %w", err)
	}
	defer resp.Body.Close()
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	serr := &statusError{code: resp.StatusCode, body: strings.ToValidUTF8(string(head), "?")}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode >= 500:
		if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return &throttled{status: serr, wait: &backoff.RetryAfterError{Duration: d}}
		}
		return serr
	default:
		return backoff.Permanent(serr)
	}
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(h); err == nil {
		return time.Duration(s) * time.Second, s >= 0
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/cenkalti/backoff/v5"
	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// sink delivers events to the CloudEvents sink (K_SINK: a Knative Broker's
// ingress, or any CloudEvents receiver) one event per request, in the HTTP
// binding's binary mode: the attributes in ce- headers, the data as the
// body. A Broker's ingress takes one event per request, so there is no
// batching to gain.
//
// It writes what sdk-go's HTTP binding writes for the same event
// (TestSinkWritesTheSDKsRequest compares the two, header by header and
// byte by byte) and retries as sdk-go's client does, but from the event's
// own fields, with net/http's Transport directly: sdk-go builds an Event,
// validates every attribute, writes the headers through its binding, reads
// the body back for retries and goes through http.Client, which copies the
// headers again. That was about 10 KB and a tenth of the instructions of
// every audited call (docs/performance.md). The attributes are valid by
// construction: the source and the extensions are checked by sdk-go once,
// in newSink; the rest are the event's own id, time and type.
type sink struct {
	target    *url.URL // shared by every request, never written
	transport http.RoundTripper
	client    *http.Client // over transport, for a sink that redirects
	// redirects is set while the sink answers with a redirect: events go
	// through client at once, not through the bare transport first.
	redirects atomic.Bool
	// fixed are the headers every event carries: the spec version, the
	// source, the content type and K_CE_OVERRIDES' extensions. Their value
	// slices are shared by every request and never written.
	fixed http.Header
}

// newSink checks the sink's URL, the source and the extensions (with
// sdk-go's own rules) and prepares the headers they give.
func newSink(target, source string, extensions map[string]string) (*sink, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("K_SINK %q is not an http(s) URL", target)
	}
	probe := cloudevents.NewEvent()
	probe.SetID("probe")
	probe.SetType(EventType)
	probe.SetSource(source)
	for k, v := range extensions {
		if err := probe.Context.SetExtension(k, v); err != nil {
			return nil, fmt.Errorf("extension %q: %w", k, err)
		}
	}
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("audit events would not be valid CloudEvents: %w", err)
	}
	fixed := http.Header{
		"Ce-Specversion": {cloudevents.VersionV1},
		"Ce-Source":      {source},
		"Content-Type":   {cloudevents.ApplicationJSON},
	}
	if u.User != nil {
		// Credentials in K_SINK, as net/http's client sends them.
		pw, _ := u.User.Password()
		fixed["Authorization"] = []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw))}
	}
	for k, v := range extensions {
		fixed[extensionHeader(k)] = []string{v}
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	// Synchronous events of concurrent trades and the workers each hold a
	// connection; the default of 2 idle ones would reconnect for most.
	t.MaxIdleConnsPerHost = 32
	// An attempt is bounded by the transport's own timeouts rather than a
	// context per attempt; the event's deadline bounds them all.
	t.DialContext = (&net.Dialer{Timeout: attemptTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = attemptTimeout
	t.ResponseHeaderTimeout = attemptTimeout
	return &sink{target: u, transport: t, client: &http.Client{Transport: t, CheckRedirect: resendsEvent}, fixed: fixed}, nil
}

// resendsEvent lets the client follow only the redirects that resend the
// event as it was (307, 308). After a 301, 302 or 303 net/http's client
// sends a GET without the body, and a 2xx to that would count as the event
// delivered; such an answer is the delivery's (permanent) failure instead.
func resendsEvent(req *http.Request, via []*http.Request) error {
	if !keepsBody(req.Response.StatusCode) {
		return http.ErrUseLastResponse
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// keepsBody reports whether a redirect with status resends the request's
// method and body.
func keepsBody(status int) bool {
	return status == http.StatusTemporaryRedirect || status == http.StatusPermanentRedirect
}

// extensionHeader is sdk-go's header for an extension attribute (its
// extNameToHeaderName): "ce-" and the name with its first letter upper case.
func extensionHeader(name string) string {
	return "Ce-" + string(unicode.ToUpper(rune(name[0]))) + name[1:]
}

// request is e as a CloudEvent in binary mode, with body as its data.
func (s *sink) request(ctx context.Context, e Event, body []byte) *http.Request {
	h := make(http.Header, len(s.fixed)+6)
	for k, v := range s.fixed {
		h[k] = v
	}
	h["Ce-Id"] = []string{e.ID}
	h["Ce-Type"] = []string{TypeOf(e)}
	if sub := SubjectOf(e); sub != "" {
		h["Ce-Subject"] = []string{sub}
	}
	h["Ce-Time"] = []string{e.Time.UTC().Format(time.RFC3339Nano)}
	// The chain's position, outside the data too: an archiver can name
	// objects <stream>/<seq> (a redelivery lands on the same name) without
	// parsing the data. The verifier checks them against the data.
	h[extensionHeader(StreamExtension)] = []string{e.Chain.Stream}
	h[extensionHeader(SeqExtension)] = []string{strconv.FormatUint(e.Chain.Seq, 10)}
	req := &http.Request{
		Method: http.MethodPost, URL: s.target, Host: s.target.Host,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
		GetBody: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}
	return req.WithContext(ctx)
}

// deliver sends e until the sink acknowledges it (a 2xx), it refuses it
// for good, retries+1 attempts failed, or ctx ends. Like sdk-go's client it
// retries a failed connection and the statuses that say "try again"
// (retriable), waiting about twice wait, then twice as long each time
// (sdk-go's exponential backoff, with jitter added).
func (s *sink) deliver(ctx context.Context, e Event, retries uint, wait time.Duration) error {
	body, err := data(e)
	if err != nil {
		return fmt.Errorf("encoding the event: %w", err)
	}
	attempt := func() (struct{}, error) {
		// A sink that redirects (rare): net/http's client follows it, as
		// it did under sdk-go, but only to resend the event (307, 308).
		var resp *http.Response
		var err error
		if s.redirects.Load() {
			resp, err = s.client.Do(s.request(ctx, e, body))
		} else if resp, err = s.transport.RoundTrip(s.request(ctx, e, body)); err == nil && keepsBody(resp.StatusCode) {
			discard(resp)
			resp, err = s.client.Do(s.request(ctx, e, body))
		}
		if err != nil {
			return struct{}{}, err
		}
		// net/http sets the Response of a request it made to follow a
		// redirect: whether this one did says whether the next should.
		if followed := resp.Request.Response != nil; followed != s.redirects.Load() {
			s.redirects.Store(followed)
		}
		discard(resp)
		switch {
		case resp.StatusCode/100 == 2:
			return struct{}{}, nil
		case retriable(resp.StatusCode):
			return struct{}{}, fmt.Errorf("the sink answered %s", resp.Status)
		}
		return struct{}{}, backoff.Permanent(fmt.Errorf("the sink answered %s", resp.Status))
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.Multiplier = 2*wait, 2
	_, err = backoff.Retry(ctx, attempt, backoff.WithBackOff(b), backoff.WithMaxTries(retries+1), backoff.WithMaxElapsedTime(0))
	return err
}

// discard closes an answer's body unread, as sdk-go's client did: a sink
// that sends headers and holds its body open cannot hold the delivery. An
// empty body (a Broker's 202) leaves the connection reusable; a sink that
// answers with a body costs a new connection per event.
func discard(resp *http.Response) { resp.Body.Close() }

// retriable are the statuses sdk-go's HTTP client retries by default.
func retriable(status int) bool {
	switch status {
	case http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusTooEarly, http.StatusTooManyRequests,
		http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

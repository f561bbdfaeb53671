// Package call is one request to /mcp, parsed once at the HTTP edge: the
// JSON-RPC envelope (id, method), the protocol version, the tool or
// resource it names, its raw arguments and, decoded once on first use, the
// arguments as a value and the account ids they name. Every later step
// (authentication's challenge, audit, rate limits, authorization, the
// tools' validation) reads this value from the context instead of reading
// the body or decoding the arguments again.
//
// It imports nothing of the project: it is the vocabulary the edge and the
// governance steps share.
package call

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	sjson "github.com/segmentio/encoding/json"
)

// JSON-RPC 2.0 error codes answered at the edge.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
)

// ResourceRead is the subject of a resources/read call, where a tools/call
// has the tool's name.
const ResourceRead = "resources/read"

// serverMethods are the JSON-RPC requests an MCP server answers. It mirrors
// the go-sdk server's method table, which the SDK does not export.
var serverMethods = map[string]bool{
	"initialize": true, "ping": true, "server/discover": true,
	"tools/list": true, "tools/call": true,
	"resources/list": true, "resources/read": true, "resources/templates/list": true,
	"resources/subscribe": true, "resources/unsubscribe": true, "subscriptions/listen": true,
	"prompts/list": true, "prompts/get": true,
	"completion/complete": true, "logging/setLevel": true,
}

// clientNotifications are the notifications an MCP client sends a server.
var clientNotifications = map[string]bool{
	"notifications/initialized": true, "notifications/cancelled": true,
	"notifications/progress": true, "notifications/roots/list_changed": true,
}

// KnownMethod reports whether method is one MCP defines for a client to
// send: what may name a request in traces and logs. Anything else is the
// caller's text.
func KnownMethod(method string) bool { return serverMethods[method] || clientNotifications[method] }

// Call is one parsed JSON-RPC message. Fields are set by Parse and never
// changed; the decoded arguments are computed once, on first use.
type Call struct {
	ID              json.RawMessage // the request id as sent; nil for a notification or response
	Method          string          // "" for a response to a server request
	ProtocolVersion string          // the Mcp-Protocol-Version header
	Tool            string          // tools/call: the tool's name
	URI             string          // resources/read: the resource
	RawArgs         json.RawMessage // tools/call: the arguments exactly as sent
	RequestState    string          // tools/call: the requestState of a multi round-trip retry
	Params          json.RawMessage // tools/call: the params exactly as sent
	Meta            json.RawMessage // tools/call: the params' _meta as sent
	InputResponses  json.RawMessage // tools/call: the answers of a multi round-trip retry, as sent
	// Mixed: a request that also carries "result" or "error" members, which
	// the go-sdk decodes (and may refuse) where the edge does not look.
	Mixed bool
	// Batch: a JSON-RPC batch (protocol generations before 2025-06-18
	// must accept them). Its messages are governed one by one, each with
	// the Call Bind makes of it; the edge itself reads none of them.
	Batch bool

	once     sync.Once
	args     any
	accounts []string
	argsErr  error
	decodes  int
}

// ResultsTyped reports whether the request in ctx is on a protocol
// generation whose results carry resultType (2026-07-28 on).
func ResultsTyped(ctx context.Context) bool {
	c := From(ctx)
	return c != nil && c.ProtocolVersion >= "2026-07-28"
}

// Governed reports whether c reaches the firm's data or acts on it: a
// tools/call, a resources/read, a resources/list (the caller's accounts,
// from the Portfolio service) or a completion/complete (which completes
// account ids and tickers from the backends). Each is authorized by scope,
// rate-limited and audited; the other methods are the protocol's own.
func (c *Call) Governed() bool {
	switch c.Method {
	case "tools/call", "resources/read", "resources/list", "completion/complete":
		return true
	}
	return false
}

// Subject is what the call acts on: the tool's name, ResourceRead, or the
// method.
func (c *Call) Subject() string {
	switch c.Method {
	case "tools/call":
		return c.Tool
	case "resources/read":
		return ResourceRead
	}
	return c.Method
}

// Args is the tool's arguments as a JSON value (numbers as json.Number;
// nil when none were sent), decoded on first use and shared by every
// caller afterwards: callers must not modify it. Arguments that repeat a
// key in an object or nest too deeply are an error (duplicate keys are
// refused because parsers disagree on which copy wins, and every check must
// see what the tool will see).
func (c *Call) Args() (any, error) {
	c.decode()
	return c.args, c.argsErr
}

// Accounts is every account id the arguments name under an account_id key
// (matched case-insensitively, at any depth): what entitlement checks.
func (c *Call) Accounts() ([]string, error) {
	c.decode()
	return c.accounts, c.argsErr
}

// ArgsDecodes is how many times the arguments were decoded: at most one.
// Tests and benchmarks read it to prove the request path decodes once.
func (c *Call) ArgsDecodes() int {
	c.decode()
	return c.decodes
}

// Confirms reports whether the call carries a confirmation: confirm=true
// in its arguments, or a requestState answering an input request. A
// place_order round without one cannot place anything.
func (c *Call) Confirms() bool {
	if c.RequestState != "" {
		return true
	}
	args, _ := c.Args()
	m, _ := args.(map[string]any)
	v, _ := m["confirm"].(bool)
	return v
}

func (c *Call) decode() {
	c.once.Do(func() {
		if len(bytes.TrimSpace(c.RawArgs)) == 0 || string(bytes.TrimSpace(c.RawArgs)) == "null" {
			return
		}
		c.decodes++
		c.args, c.accounts, c.argsErr = DecodeArgs(c.RawArgs)
	})
}

// FromTool is the Call of a tools/call that did not come through the HTTP
// edge (an in-process transport): the same decoding, on the same terms.
func FromTool(name string, args json.RawMessage, requestState string) *Call {
	return &Call{Method: "tools/call", Tool: name, RawArgs: args, RequestState: requestState}
}

// FromResource is the Call of a resources/read that did not come through
// the HTTP edge.
func FromResource(uri string) *Call { return &Call{Method: "resources/read", URI: uri} }

type ctxKey struct{}

// With returns ctx carrying c.
func With(ctx context.Context, c *Call) context.Context { return context.WithValue(ctx, ctxKey{}, c) }

// From returns the Call in ctx, or nil.
func From(ctx context.Context) *Call {
	c, _ := ctx.Value(ctxKey{}).(*Call)
	return c
}

// Error is a message refused at the edge, answered as a JSON-RPC error.
type Error struct {
	Code    int
	Message string
	ID      json.RawMessage
}

func (e *Error) Error() string { return e.Message }

// wire is the envelope of a JSON-RPC message. Keys are matched exactly, as
// the go-sdk matches them.
type wire struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  *string         `json:"method"`
	ID      json.RawMessage `json:"id"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

type params struct {
	Name           string          `json:"name"`
	URI            string          `json:"uri"`
	Arguments      json.RawMessage `json:"arguments"`
	RequestState   string          `json:"requestState"`
	Meta           json.RawMessage `json:"_meta"`
	InputResponses json.RawMessage `json:"inputResponses"`
}

// Parse reads one JSON-RPC message. It refuses what no MCP server may
// accept (not JSON, a batch, not JSON-RPC 2.0, an unknown method) with the
// error to answer; everything else is a Call, whose params the go-sdk then
// validates in full.
func Parse(body []byte, protocolVersion string) (*Call, *Error) {
	// Before any parser recurses into it: a body of a million brackets
	// would otherwise cost seconds and could overflow the stack, before
	// anyone is authenticated.
	if TooDeep(body, MaxDepth) {
		return nil, &Error{Code: CodeInvalidRequest, Message: fmt.Sprintf("invalid request: the message nests deeper than %d levels", MaxDepth)}
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return parseBatch(trimmed, protocolVersion)
	}
	var w wire
	if err := unmarshal(body, &w); err != nil {
		if !json.Valid(body) {
			return nil, &Error{Code: CodeParseError, Message: "parse error: request body is not valid JSON"}
		}
		return nil, &Error{Code: CodeInvalidRequest, Message: "invalid request: not a JSON-RPC 2.0 message object"}
	}
	c := &Call{ID: w.ID, ProtocolVersion: protocolVersion}
	if string(c.ID) == "null" {
		c.ID = nil
	}
	switch {
	case w.JSONRPC != "2.0":
		return nil, &Error{Code: CodeInvalidRequest, Message: `invalid request: "jsonrpc" must be "2.0"`, ID: w.ID}
	case w.Method == nil && (w.Result != nil || w.Error != nil):
		return c, nil // a client's answer to a server request
	case w.Method == nil:
		return nil, &Error{Code: CodeInvalidRequest, Message: `invalid request: "method" is required`, ID: w.ID}
	}
	c.Method = *w.Method
	c.Mixed = w.Result != nil || w.Error != nil
	if c.ID == nil {
		return c, nil // a notification: the SDK accepts or ignores it
	}
	if !echoable(c.ID) {
		return nil, errIDNotEchoable(w.ID)
	}
	if !serverMethods[c.Method] {
		return nil, &Error{Code: CodeMethodNotFound, Message: fmt.Sprintf("method not found: %q", c.Method), ID: w.ID}
	}
	if c.Method == "tools/call" || c.Method == "resources/read" {
		var p params
		if len(w.Params) > 0 && unmarshal(w.Params, &p) == nil {
			c.Tool, c.URI, c.RawArgs, c.RequestState = p.Name, p.URI, p.Arguments, p.RequestState
		}
		if c.Method == "resources/read" {
			c.Tool, c.RawArgs, c.RequestState = "", nil, ""
		} else {
			c.URI, c.Params, c.Meta, c.InputResponses = "", w.Params, p.Meta, p.InputResponses
		}
	}
	return c, nil
}

// JSONBody reports whether a Content-Type is JSON as the go-sdk reads it
// (any case and spacing, with or without parameters): the bodies it runs.
func JSONBody(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// BatchesAccepted reports whether a protocol generation has JSON-RPC
// batches: those before 2025-06-18, and a request without the version
// header, which is taken for 2025-03-26.
func BatchesAccepted(protocolVersion string) bool {
	return protocolVersion < "2025-06-18"
}

// parseBatch reads a batch: refused where the generation has none, and when
// an id in it could not be echoed exactly; otherwise a Call marked Batch,
// whose messages the go-sdk reads and Bind governs one by one.
func parseBatch(body []byte, protocolVersion string) (*Call, *Error) {
	var msgs []struct {
		ID json.RawMessage `json:"id"`
	}
	if !json.Valid(body) {
		return nil, &Error{Code: CodeParseError, Message: "parse error: request body is not valid JSON"}
	}
	if !BatchesAccepted(protocolVersion) {
		return nil, &Error{Code: CodeInvalidRequest, Message: "invalid request: JSON-RPC batches are not supported from protocol 2025-06-18 on; send one message per request"}
	}
	if unmarshal(body, &msgs) == nil {
		for _, m := range msgs {
			if len(m.ID) > 0 && string(m.ID) != "null" && !echoable(m.ID) {
				return nil, errIDNotEchoable(nil)
			}
		}
	}
	return &Call{Batch: true, ProtocolVersion: protocolVersion}, nil
}

// echoable reports whether a response can carry id exactly as sent: a
// string, or an integer written plainly within ±2^53. The go-sdk reads a
// numeric id as a float64 and answers with its integer part, so
// 9007199254740993 would come back as 9007199254740992 and 1.5 as 1: a
// client could never match the answer to its request.
func echoable(id json.RawMessage) bool {
	if len(id) == 0 || id[0] == '"' {
		return true
	}
	f, err := strconv.ParseFloat(string(id), 64)
	return err == nil && math.Abs(f) <= 1<<53 && f == math.Trunc(f) && strconv.FormatInt(int64(f), 10) == string(id)
}

func errIDNotEchoable(id json.RawMessage) *Error {
	return &Error{Code: CodeInvalidRequest, ID: id,
		Message: "invalid request: a numeric id must be an integer of at most 2^53 in magnitude, written without exponent or fraction; use a string id otherwise"}
}

// MaxDepth is the deepest nesting of arrays and objects a message may have:
// the go-sdk's own limit.
const MaxDepth = 1000

// TooDeep reports whether data nests arrays and objects deeper than max,
// in one pass that does not recurse (strings are skipped).
func TooDeep(data []byte, max int) bool {
	depth, inString, escaped := 0, false, false
	for _, b := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && b == '\\':
			escaped = true
		case inString && b == '"':
			inString = false
		case inString:
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			if depth++; depth > max {
				return true
			}
		case b == '}' || b == ']':
			depth--
		}
	}
	return false
}

// unmarshal decodes as the go-sdk does: case-sensitive keys.
func unmarshal(data []byte, v any) error {
	_, err := sjson.Parse(data, v, sjson.DontMatchCaseInsensitiveStructFields)
	return err
}

// accountArg is the argument that names an account, in every tool that
// takes one (the convention all tools follow).
const accountArg = "account_id"

const maxArgsDepth = 64

// DecodeArgs decodes tool arguments into a JSON value (numbers as
// json.Number), refusing repeated keys and deep nesting, and collects the
// account ids it names. See Call.Args.
//
// The value is what encoding/json decodes (with UseNumber): the bytes are
// first validated by encoding/json, then walked with segmentio/encoding's
// tokenizer (the SDK's JSON library), which allocates nothing of its own;
// a string with an escape or a byte outside UTF-8 is unquoted by
// encoding/json. encoding/json's token decoder cost ten times the bytes
// on every audited call.
func DecodeArgs(raw json.RawMessage) (any, []string, error) {
	if !json.Valid(raw) {
		return nil, nil, errInvalidJSON
	}
	d := argsDecoder{tok: sjson.NewTokenizer(raw)}
	if !d.tok.Next() {
		return nil, nil, errInvalidJSON
	}
	v, err := d.value(0)
	if err != nil {
		return nil, nil, err
	}
	return v, d.ids, nil
}

var errInvalidJSON = errors.New("arguments are not valid JSON")

// argsDecoder walks valid JSON token by token.
type argsDecoder struct {
	tok *sjson.Tokenizer
	ids []string
}

// value decodes the value the tokenizer is on, leaving it on the value's
// last token.
func (d *argsDecoder) value(depth int) (any, error) {
	if depth > maxArgsDepth {
		return nil, errors.New("arguments nest too deeply")
	}
	t := d.tok
	switch t.Delim {
	case '{':
		m := map[string]any{}
		for {
			if !t.Next() {
				return nil, errInvalidJSON
			}
			switch t.Delim {
			case '}':
				return m, nil
			case ',':
				continue
			}
			key, err := unquote(t.Value)
			if err != nil {
				return nil, err
			}
			if _, dup := m[key]; dup {
				return nil, fmt.Errorf("duplicate key %q", shortKey(key))
			}
			if !t.Next() || t.Delim != ':' || !t.Next() {
				return nil, errInvalidJSON
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			if s, ok := v.(string); ok && strings.EqualFold(key, accountArg) {
				d.ids = append(d.ids, s) // a non-string id fails the tool's own schema
			}
			m[key] = v
		}
	case '[':
		a := []any{}
		for {
			if !t.Next() {
				return nil, errInvalidJSON
			}
			switch t.Delim {
			case ']':
				return a, nil
			case ',':
				continue
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	}
	switch v := t.Value; {
	case v.String():
		return unquote(v)
	case v.Null():
		return nil, nil
	case v.True():
		return true, nil
	case v.False():
		return false, nil
	case v.Number():
		return json.Number(v), nil
	}
	return nil, errInvalidJSON
}

// unquote is encoding/json's value of the JSON string raw.
func unquote(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", errInvalidJSON
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errInvalidJSON
	}
	return s, nil
}

// Status is the HTTP status that answers e: an unknown method is 404 on
// protocol 2026-07-28 and later (as the spec requires, and as the SDK
// answers methods that version removed) and 200 before it; any other
// refused message is 400.
func (e *Error) Status(protocolVersion string) int {
	if e.Code != CodeMethodNotFound {
		return http.StatusBadRequest
	}
	if protocolVersion >= "2026-07-28" {
		return http.StatusNotFound
	}
	return http.StatusOK
}

// WriteError answers a JSON-RPC error: the one writer of error bodies the
// edge produces itself (refused messages, the scope challenge). data, if
// not nil, is the error's data member.
func WriteError(w http.ResponseWriter, status int, id json.RawMessage, code int, msg string, data any) {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	e := struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    any    `json:"data,omitempty"`
	}{code, msg, data}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   any             `json:"error"`
	}{"2.0", id, e})
}

// shortKey is key as an error quotes it: at most 64 bytes, cut at a
// character boundary, so a refusal never echoes a megabyte back.
func shortKey(key string) string {
	if len(key) <= 64 {
		return key
	}
	n := 64
	for n > 0 && !utf8.RuneStart(key[n]) {
		n--
	}
	return key[:n] + "…"
}

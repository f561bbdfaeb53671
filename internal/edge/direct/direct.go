// Package direct answers the commonest MCP request, a stateless tools/call
// of a tool that never asks the client for input, without the go-sdk
// creating a server session for it.
//
// In stateless mode go-sdk v1.8.0 serves every POST by connecting a new
// session (a transport, a JSON-RPC connection, goroutines, two decodes of
// the message and two encodes of the result), which is most of what a read
// call costs (docs/performance.md). A stateless tools/call needs none of
// that: this handler runs the server's own receiving middleware and the
// tool's own handler, as the session would, and writes the bytes the SDK
// would write. Everything it does not prove the SDK would accept as is (an
// unknown tool, a protocol version it was not proven on, a mismatched
// Mcp-* header, an unusual id, input responses, anything malformed) goes to
// the SDK untouched, so the SDK stays the protocol's authority. The
// differential test in internal/app compares the two paths byte for byte,
// on every protocol generation, and runs on every go-sdk upgrade.
package direct

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	sjson "github.com/segmentio/encoding/json"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
)

// provenVersions are the protocol versions the differential test proves
// this path on; other versions take the SDK's path.
var provenVersions = []string{"2025-06-18", "2025-11-25", newProtocol}

// newProtocol is the first sessionless protocol generation (SEP-2575): the
// version, client capabilities and info travel in each request's _meta.
const newProtocol = "2026-07-28"

// Options configure the handler.
type Options struct {
	// Tools are the tools this path may answer, by name: tools that never
	// return input requests and never read the session.
	Tools map[string]mcp.ToolHandler
	// Middleware is the server's receiving middleware, outermost first, as
	// given to mcp.Server.AddReceivingMiddleware.
	Middleware []mcp.Middleware
	// Server is the server's implementation, which results on the new
	// protocol generation carry in _meta (SEP-2575).
	Server *mcp.Implementation
	// Versions are the protocol versions the server accepts (nil: the SDK's).
	Versions []string
	// Served, if not nil, is told the tool of each call this path answered.
	Served func(tool string)
	Logger *slog.Logger
}

type handler struct {
	sdk        http.Handler
	tools      map[string]mcp.ToolHandler
	chain      mcp.MethodHandler
	clients    clientMeta
	impl       *mcp.Implementation
	versions   []string
	served     func(string)
	log        *slog.Logger
	serverMeta serverMeta
	// bodies are response buffers: an answer is a few kilobytes to a few
	// hundred, written once and dropped, which was the largest single
	// allocation of a call.
	bodies bufferPool
}

// New returns a handler that answers what it can and hands everything else
// to sdk, the go-sdk's streamable HTTP handler for the same server.
func New(o Options, sdk http.Handler) http.Handler {
	// MCPGODEBUG switches go-sdk behaviours this path does not mirror.
	if len(o.Tools) == 0 || os.Getenv("MCPGODEBUG") != "" {
		return sdk
	}
	h := &handler{sdk: sdk, tools: o.Tools, impl: o.Server, served: o.Served, log: o.Logger, bodies: bufferPool{max: 1 << 20}, serverMeta: newServerMeta(o.Server)}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	accepted := o.Versions
	if accepted == nil {
		accepted = mcp.SupportedProtocolVersions()
	}
	for _, v := range provenVersions {
		if slices.Contains(accepted, v) {
			h.versions = append(h.versions, v)
		}
	}
	// AddReceivingMiddleware(m1, m2, m3) serves m1(m2(m3(handler))).
	h.chain = h.callTool
	for _, m := range slices.Backward(o.Middleware) {
		h.chain = m(h.chain)
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, version, ok := h.accept(r)
	if !ok {
		h.sdk.ServeHTTP(w, r)
		return
	}
	// As in the SDK's stateless sessions, a client that goes away does not
	// cancel the call: it completes, and its record says what it did.
	res, err := h.chain(context.WithoutCancel(r.Context()), "tools/call", req)
	// On the new generation every result is marked complete: the tool's
	// own (as the SDK's tools/call marks it) and an answer a middleware
	// gives instead (as outcome.Deliver marks it); none asks for input here.
	complete := false
	if version >= newProtocol && err == nil {
		h.annotate(res)
		complete = true
	}
	if h.served != nil {
		h.served(req.Params.Name) // before the answer: whoever reads it may count on it
	}
	h.reply(w, call.From(r.Context()).ID, res, err, version, complete)
}

// callTool is the SDK server's tools/call for a known tool: the handler's
// result, with content never null.
func (h *handler) callTool(ctx context.Context, _ string, req mcp.Request) (mcp.Result, error) {
	r := req.(*mcp.CallToolRequest)
	res, err := h.tools[r.Params.Name](ctx, r)
	if err == nil && res != nil && res.Content == nil && res.InputRequests == nil {
		copied := *res
		copied.Content = []mcp.Content{}
		res = &copied
	}
	return res, err
}

// serverMeta is the _meta of a result on the new protocol generation that
// only names the server, as a map and as the SDK marshals it.
type serverMeta struct {
	impl *mcp.Implementation
	meta map[string]any
	json []byte
}

func newServerMeta(impl *mcp.Implementation) serverMeta {
	m := map[string]any{mcp.MetaKeyServerInfo: impl}
	b, err := json.Marshal(m)
	if impl == nil || err != nil {
		return serverMeta{}
	}
	return serverMeta{impl: impl, meta: m, json: b}
}

// is reports whether m is that _meta.
func (s *serverMeta) is(m map[string]any) bool {
	if s.impl == nil || len(m) != 1 {
		return false
	}
	impl, ok := m[mcp.MetaKeyServerInfo].(*mcp.Implementation)
	return ok && impl == s.impl
}

// annotate does to a result on the new protocol generation what the SDK's
// session does: every result names the server in _meta.
func (h *handler) annotate(res mcp.Result) {
	r, ok := res.(*mcp.CallToolResult)
	if !ok || r == nil || h.impl == nil {
		return
	}
	m := r.GetMeta()
	if len(m) == 0 {
		// Shared and read-only: nothing writes a result's _meta after
		// this, and appendResult writes it from serverMeta.json.
		r.SetMeta(h.serverMeta.meta)
		return
	}
	if _, ok := m[mcp.MetaKeyServerInfo]; !ok {
		m[mcp.MetaKeyServerInfo] = h.impl
		r.SetMeta(m)
	}
}

// accept returns the request the SDK's session would build, when this
// path may answer r exactly as the SDK would.
func (h *handler) accept(r *http.Request) (*mcp.CallToolRequest, string, bool) {
	c := call.From(r.Context())
	if c == nil || r.Method != http.MethodPost || c.Method != "tools/call" || c.Mixed || h.tools[c.Tool] == nil || !plainID(c.ID) {
		return nil, "", false
	}
	version := r.Header.Get("Mcp-Protocol-Version")
	if !slices.Contains(h.versions, version) || len(r.Header.Values("Last-Event-ID")) > 0 || !call.JSONBody(r.Header.Get("Content-Type")) || !acceptsBoth(r.Header.Values("Accept")) {
		return nil, "", false
	}
	// Deep params, _meta given twice (the SDK merges the copies into one
	// map, a raw decode keeps the last), or a multi round-trip retry are the
	// SDK's to read. The edge decoded the params' members (call.Parse).
	// An escape outside the arguments may spell a second "_meta" too.
	if len(c.Params) == 0 || call.TooDeep(c.Params, maxDepth) || bytes.Count(c.Params, []byte(`"_meta"`)) > 1 ||
		bytes.Count(c.Params, []byte{'\\'}) > bytes.Count(c.RawArgs, []byte{'\\'}) ||
		c.InputResponses != nil || c.RequestState != "" {
		return nil, "", false
	}
	var meta map[string]any
	var rawMeta map[string]json.RawMessage
	if len(c.Meta) > 0 && string(c.Meta) != "null" {
		var err error
		if meta, rawMeta, err = decodeMeta(c.Meta); err != nil {
			return nil, "", false
		}
	}
	req := &mcp.CallToolRequest{
		Params: &mcp.CallToolParamsRaw{Meta: meta, Name: c.Tool, Arguments: c.RawArgs},
		Extra:  &mcp.RequestExtra{TokenInfo: auth.TokenInfoFromContext(r.Context()), Header: r.Header},
	}
	metaVersion, _ := meta[mcp.MetaKeyProtocolVersion].(string)
	if version < newProtocol {
		// An old-generation request naming a version in _meta is checked
		// (and refused) by the SDK.
		return req, version, metaVersion == ""
	}
	// The new generation: the standard headers must name this call, and
	// _meta must carry what the SDK requires, decodable as it decodes it.
	// The SDK also decodes the arguments there, numbers into float64, and
	// refuses the request when one does not fit.
	if r.Header.Get("Mcp-Method") != "tools/call" || r.Header.Get("Mcp-Name") != c.Tool || hasParamHeaders(r.Header) || metaVersion != version {
		return nil, "", false
	}
	if args, err := c.Args(); err == nil && !floats(args) {
		return nil, "", false
	}
	return req, version, h.clients.accepts(req, rawMeta)
}

// decodeMeta decodes a request's _meta object as the SDK's decoder does
// (segmentio/encoding, into map[string]any), and also member by member.
// Decoding into map[string]any directly, that decoder makes every object
// a map sized for 64 members: about 5 KB each, four or more per call on
// the new protocol generation, where every request carries its client's
// info and capabilities. Here objects are decoded level by level, each map
// sized for its members, and an object of scalars straight into its map;
// every scalar still by the SDK's decoder. Strings and members are not
// copied: they point into the request body, which is read once and never
// written, and outlives them.
func decodeMeta(raw []byte) (map[string]any, map[string]json.RawMessage, error) {
	m, members, err := decodeObject(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("_meta: %w", err)
	}
	return m, members, nil
}

// decodeObject decodes a JSON object member by member: a map of its raw
// members, and a map of their values (decodeValue).
func decodeObject(raw []byte) (map[string]any, map[string]json.RawMessage, error) {
	members := make(map[string]json.RawMessage, 4)
	if _, err := sjson.Parse(raw, &members, metaFlags); err != nil || members == nil {
		return nil, nil, errors.Join(err, errors.New("not a JSON object"))
	}
	m := make(map[string]any, len(members))
	for k, v := range members {
		d, err := decodeValue(v)
		if err != nil {
			return nil, nil, err
		}
		m[k] = d
	}
	return m, members, nil
}

// metaFlags decode as the SDK does, without copying strings and members.
const metaFlags = sjson.DontMatchCaseInsensitiveStructFields | sjson.DontCopyString | sjson.DontCopyRawMessage

// decodeValue decodes one JSON value as decodeMeta does.
func decodeValue(raw []byte) (any, error) {
	switch first(raw) {
	case '{':
		if !call.TooDeep(raw, 1) { // an object of scalars
			m := make(map[string]any, 4)
			_, err := sjson.Parse(raw, &m, metaFlags)
			return m, err
		}
		m, _, err := decodeObject(raw)
		return m, err
	case '[':
		elems := make([]json.RawMessage, 0, 4)
		if _, err := sjson.Parse(raw, &elems, metaFlags); err != nil {
			return nil, err
		}
		a := make([]any, len(elems))
		for i, e := range elems {
			d, err := decodeValue(e)
			if err != nil {
				return nil, err
			}
			a[i] = d
		}
		return a, nil
	}
	var v any
	_, err := sjson.Parse(raw, &v, metaFlags)
	return v, err
}

// first is the first byte of raw after white space.
func first(raw []byte) byte {
	if raw = bytes.TrimLeft(raw, " \t\n\r"); len(raw) > 0 {
		return raw[0]
	}
	return 0
}

// clientMeta remembers whether the SDK accepts a request's _meta client
// capabilities and client info, by their bytes: a client sends the same
// ones on every call, and deciding means re-marshalling them through the
// SDK's decoder (two 32 KiB buffers) each time.
type clientMeta struct {
	mu       sync.Mutex
	verdicts map[string]bool
}

// maxClientMeta bounds what is remembered, in entries and key bytes.
const (
	maxClientMeta    = 256
	maxClientMetaKey = 2048
)

func (m *clientMeta) accepts(req *mcp.CallToolRequest, raw map[string]json.RawMessage) bool {
	info, hasInfo := raw[mcp.MetaKeyClientInfo]
	key := string(raw[mcp.MetaKeyClientCapabilities]) + "\x00" + string(info)
	if hasInfo {
		key += "\x00i"
	}
	cacheable := len(key) <= maxClientMetaKey
	if cacheable {
		m.mu.Lock()
		ok, known := m.verdicts[key]
		m.mu.Unlock()
		if known {
			return ok
		}
	}
	ok := req.ClientCapabilities() != nil && (!hasInfo || req.ClientInfo() != nil)
	if cacheable {
		m.mu.Lock()
		if m.verdicts == nil || len(m.verdicts) >= maxClientMeta {
			m.verdicts = map[string]bool{}
		}
		m.verdicts[key] = ok
		m.mu.Unlock()
	}
	return ok
}

// reply writes what the SDK's JSON response mode writes for res or err;
// complete marks the result final (resultType).
func (h *handler) reply(w http.ResponseWriter, id json.RawMessage, res mcp.Result, err error, version string, complete bool) {
	w.Header().Set("Cache-Control", "no-cache, no-transform")
	w.Header().Set("Content-Type", "application/json")
	if err == nil {
		r, ok := res.(*mcp.CallToolResult)
		switch {
		case !ok || r == nil:
			// The SDK answers an internal error too (or, for a typed nil on
			// the new generation, fails worse).
			h.log.Error("a tool on the direct path returned no result")
			err = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "internal error"}
		case r.InputRequests != nil:
			// Tools on this path never ask for input; one that did would need
			// the session's multi round-trip handling.
			h.log.Error("a tool on the direct path asked for input")
			err = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "server bug: input requested on the direct path"}
		}
	}
	if err != nil {
		h.writeError(w, id, version, wireError(err))
		return
	}
	buf := h.bodies.get(bodySize(res, id))
	defer h.bodies.put(buf)
	body := append(append(append((*buf)[:0], `{"jsonrpc":"2.0","id":`...), id...), `,"result":`...)
	envelope := len(body)
	body, fast := appendResult(body, res, complete, &h.serverMeta)
	if !fast {
		result, err := encode(res)
		if err != nil {
			h.log.Error("encoding a tool result", "error", err)
			h.writeError(w, id, version, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "internal error"})
			return
		}
		if complete {
			result = completed(result)
		}
		body = append(body[:envelope], result...)
	}
	*buf = append(body, '}')
	w.Write(*buf) // copies: the buffer goes back to the pool after
}

// bufferPool keeps buffers of up to max bytes for reuse.
type bufferPool struct {
	pool sync.Pool // *[]byte
	max  int
}

// get returns a buffer with room for at least n bytes.
func (p *bufferPool) get(n int) *[]byte {
	if b, ok := p.pool.Get().(*[]byte); ok && cap(*b) >= n {
		return b
	}
	b := make([]byte, 0, n)
	return &b
}

// put keeps b for the next get, unless it grew past max.
func (p *bufferPool) put(b *[]byte) {
	if cap(*b) <= p.max {
		p.pool.Put(b)
	}
}

// writeError writes the JSON-RPC error response the SDK writes for e.
func (h *handler) writeError(w http.ResponseWriter, id json.RawMessage, version string, e *jsonrpc.Error) {
	if status := errorStatus(version, e.Code); status != 0 {
		w.WriteHeader(status)
	}
	body, err := encode(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   *jsonrpc.Error  `json:"error"`
	}{"2.0", id, e})
	if err != nil {
		h.log.Error("encoding an error response", "error", err)
		return
	}
	w.Write(body)
}

// bodySize is a guess at the response's size, to allocate it once: the
// structured content and its text copy, escaped, and the envelope.
func bodySize(res mcp.Result, id json.RawMessage) int {
	n := 256 + len(id)
	if r, ok := res.(*mcp.CallToolResult); ok && r != nil {
		if raw, ok := r.StructuredContent.(json.RawMessage); ok {
			n += len(raw) * 9 / 4 // the raw JSON, and its text copy with quotes escaped
		}
	}
	return n
}

// appendResult appends a tool result as the SDK's marshalling writes it
// (marked complete if complete), for the shape compiled tools and
// governance refusals produce: text content
// without annotations or _meta, and structured content that is JSON the
// tool marshalled (compact, HTML-escaped). Encoding it as the SDK does
// compacts the same bytes four times over (the result's MarshalJSON, the
// content's, and the encoder around each), which is most of what a read
// call costs. It reports false, with b as it was, for any other shape,
// which encode handles as the SDK does.
func appendResult(b []byte, res mcp.Result, complete bool, server *serverMeta) ([]byte, bool) {
	r, isTool := res.(*mcp.CallToolResult)
	if !isTool || r == nil || r.Content == nil || r.InputRequests != nil || r.RequestState != "" {
		return b, false
	}
	var structured json.RawMessage
	switch sc := r.StructuredContent.(type) {
	case nil:
	case json.RawMessage:
		if !compactJSON(sc) {
			return b, false
		}
		structured = sc
	default:
		return b, false
	}
	start := len(b)
	b = append(b, '{')
	switch {
	case server.is(r.Meta):
		b = append(append(append(b, `"_meta":`...), server.json...), ',')
	case len(r.Meta) > 0:
		m, err := json.Marshal(r.Meta)
		if err != nil {
			return b[:start], false
		}
		b = append(append(append(b, `"_meta":`...), m...), ',')
	}
	b = append(b, `"content":[`...)
	for i, c := range r.Content {
		tc, isText := c.(*mcp.TextContent)
		if !isText || tc == nil || len(tc.Meta) > 0 || tc.Annotations != nil {
			return b[:start], false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":"text","text":`...)
		var err error
		if b, err = appendString(b, tc.Text); err != nil {
			return b[:start], false
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if structured != nil {
		b = append(append(b, `,"structuredContent":`...), structured...)
	}
	if r.IsError {
		b = append(b, `,"isError":true`...)
	}
	if complete {
		b = append(b, `,"resultType":"complete"`...)
	}
	return append(b, '}'), true
}

// appendString appends s as a JSON string, HTML-escaped, as json.Marshal
// writes it (the SDK's content marshalling), without allocating a copy.
func appendString(b []byte, s string) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	if err := json.NewEncoder(buf).Encode(s); err != nil {
		return b, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// compactJSON reports whether raw is what compacting it with HTML escaping
// would leave unchanged: no whitespace outside strings, no <, > or &, no
// U+2028 or U+2029. It does not validate: the structured content on this
// path is what json.Marshal produced.
func compactJSON(raw []byte) bool {
	if len(raw) == 0 {
		return false
	}
	inString, escaped := false, false
	for i, c := range raw {
		switch {
		case c == '<' || c == '>' || c == '&':
			return false
		case c == 0xE2 && i+2 < len(raw) && raw[i+1] == 0x80 && (raw[i+2] == 0xA8 || raw[i+2] == 0xA9):
			return false
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return false
		}
	}
	return !inString
}

// completed marks a result final for the new protocol generation, as the
// SDK's result marshalling does: "resultType" is its last member.
func completed(result []byte) []byte {
	if len(result) < 2 || result[0] != '{' || bytes.HasSuffix(result, []byte(`"resultType":"complete"}`)) {
		return result // not an object, or marked already (outcome.Deliver's copy)
	}
	out := make([]byte, 0, len(result)+24)
	out = append(out, result[:len(result)-1]...)
	if len(result) > 2 {
		out = append(out, ',')
	}
	return append(out, `"resultType":"complete"}`...)
}

// wireError is the JSON-RPC error the SDK's connection sends for err. Like
// the SDK's, it names the method in any "method not found" (code -32601).
func wireError(err error) *jsonrpc.Error {
	var notFound *jsonrpc.Error
	if errors.As(err, &notFound) && notFound.Code == jsonrpc.CodeMethodNotFound {
		return &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: `method not found: "tools/call"`}
	}
	if e, ok := err.(*jsonrpc.Error); ok {
		return e
	}
	e := &jsonrpc.Error{Message: err.Error()}
	var wrapped *jsonrpc.Error
	if errors.As(err, &wrapped) {
		e.Code = wrapped.Code
	}
	return e
}

// errorStatus is the HTTP status the SDK gives a protocol-level error on
// the new generation (SEP-2575); 0 keeps 200.
func errorStatus(version string, code int64) int {
	if version < newProtocol {
		return 0
	}
	switch code {
	case jsonrpc.CodeMethodNotFound:
		return http.StatusNotFound
	case jsonrpc.CodeInvalidParams, mcp.CodeUnsupportedProtocolVersion, mcp.CodeMissingRequiredClientCapabilities:
		return http.StatusBadRequest
	}
	return 0
}

// encode marshals v as the SDK's JSON-RPC layer does: no HTML escaping, no
// trailing newline.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// floats reports whether every number in v (a decoded JSON value, numbers
// as json.Number) fits in a float64, as the SDK decodes them.
func floats(v any) bool {
	switch v := v.(type) {
	case json.Number:
		_, err := strconv.ParseFloat(string(v), 64)
		return err == nil
	case map[string]any:
		for _, e := range v {
			if !floats(e) {
				return false
			}
		}
	case []any:
		for _, e := range v {
			if !floats(e) {
				return false
			}
		}
	}
	return true
}

// plainID reports whether id is echoed by the SDK byte for byte: an integer
// that fits in an int64 without a sign, exponent or leading zero, or a
// string of printable ASCII without escapes. Other ids take the SDK's path.
func plainID(id json.RawMessage) bool {
	switch {
	case len(id) == 0:
		return false
	case id[0] == '"':
		if len(id) < 2 || id[len(id)-1] != '"' {
			return false
		}
		for _, b := range id[1 : len(id)-1] {
			if b < 0x20 || b > 0x7e || b == '"' || b == '\\' {
				return false
			}
		}
		return true
	case id[0] >= '1' && id[0] <= '9' && len(id) <= 15: // exact as the float64 the SDK decodes it into
		for _, b := range id {
			if b < '0' || b > '9' {
				return false
			}
		}
		return true
	}
	return string(id) == "0"
}

// acceptsBoth is the SDK's Accept test: JSON and an event stream.
func acceptsBoth(values []string) bool {
	var jsonOK, streamOK bool
	for _, v := range values {
		for _, raw := range strings.Split(v, ",") {
			base, _, _ := strings.Cut(strings.TrimSpace(raw), ";")
			switch strings.ToLower(strings.TrimSpace(base)) {
			case "application/json", "application/*":
				jsonOK = true
			case "text/event-stream", "text/*":
				streamOK = true
			case "*/*":
				jsonOK, streamOK = true, true
			}
		}
	}
	return jsonOK && streamOK
}

// hasParamHeaders reports Mcp-Param-* headers, which the SDK checks
// against the tool's annotations: such requests take its path.
func hasParamHeaders(h http.Header) bool {
	for k := range h {
		if strings.HasPrefix(k, "Mcp-Param-") {
			return true
		}
	}
	return false
}

// maxDepth bounds the nesting this path handles; deeper params (which the
// SDK refuses past call.MaxDepth) take its path.
const maxDepth = 64

// Package verify checks an exported audit trail (the server's log records,
// CloudEvents as a sink or archive stored them, or bare events) against
// its hash chains and signed checkpoints, and reports, per stream, what
// is missing, added, moved or changed. cmd/auditverify is its command.
package verify

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit"
)

// maxLine bounds one line of an export (an event is about 1 KB).
const maxLine = 4 << 20

// Entry is one audit event found in an export.
type Entry struct {
	Event audit.Event
	Where string // file:line
	// Envelope is set when the event came as a CloudEvent.
	Envelope *Envelope
}

// Envelope is the CloudEvent attributes around an event. Its hash covers
// only the data, so the attributes are checked against the data.
type Envelope struct {
	ID, Type, Subject string
	Stream, Seq       string // the auditstream and auditseq extensions
}

// Input is what was read from one or more exports.
type Input struct {
	Entries []Entry
	// Problems are records that look like audit events but cannot be read.
	Problems []Problem
	// Skipped counts records that are not audit events (other log lines,
	// other CloudEvents).
	Skipped int
}

// auditTypes are the CloudEvent types of audit events.
var auditTypes = map[string]bool{audit.EventType: true, audit.StepEventType: true, audit.CheckpointEventType: true}

// Read adds the audit events of one export. The format is recognised per
// record: a JSON array (a CloudEvents batch) or JSON lines, each a log
// record with an audit_event attribute, a structured-mode CloudEvent, or a
// bare event. Text before a line's first '{' (kubectl logs --prefix or
// --timestamps) is ignored.
func (in *Input) Read(r io.Reader, name string) error {
	br := bufio.NewReaderSize(r, 64<<10)
	if first, err := firstByte(br); err != nil {
		return err
	} else if first == '[' {
		return in.readBatch(br, name)
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	for n := 1; sc.Scan(); n++ {
		in.record(sc.Bytes(), fmt.Sprintf("%s:%d", name, n))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	return nil
}

// firstByte peeks at the first byte that is not white space (0 if none).
func firstByte(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.Peek(1)
		if errors.Is(err, io.EOF) {
			return 0, nil
		}
		if err != nil {
			return 0, err
		}
		if !bytes.ContainsAny(b, " \t\r\n") {
			return b[0], nil
		}
		br.Discard(1)
	}
}

func (in *Input) readBatch(r io.Reader, name string) error {
	var batch []json.RawMessage
	if err := json.NewDecoder(r).Decode(&batch); err != nil {
		return fmt.Errorf("reading %s as a JSON array: %w", name, err)
	}
	for i, raw := range batch {
		in.record(raw, fmt.Sprintf("%s[%d]", name, i))
	}
	return nil
}

// record reads one record; what is not an audit event is skipped.
func (in *Input) record(line []byte, where string) {
	i := bytes.IndexByte(line, '{')
	if i < 0 {
		if len(bytes.TrimSpace(line)) > 0 {
			in.Skipped++
		}
		return
	}
	line = line[i:]
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		in.unreadable(line, where, fmt.Sprintf("not a JSON object: %v", err))
		return
	}
	var (
		data []byte
		env  *Envelope
		err  error
	)
	switch {
	case fields["specversion"] != nil:
		env, data, err = cloudEvent(fields)
		if env == nil && err == nil {
			in.Skipped++ // another CloudEvent on the same Broker
			return
		}
	case fields[audit.LogKey] != nil:
		data = fields[audit.LogKey]
	case fields["chain"] != nil && fields["outcome"] != nil:
		data = line
	default:
		in.Skipped++
		return
	}
	if err != nil {
		in.Problems = append(in.Problems, Problem{Kind: Malformed, Where: where, Detail: err.Error()})
		return
	}
	e, err := decodeEvent(data)
	if err != nil {
		kind := Malformed
		if strings.Contains(err.Error(), "unknown field") {
			kind = Edited // bytes its hash does not cover
		}
		in.Problems = append(in.Problems, Problem{Kind: kind, Where: where, Detail: err.Error()})
		return
	}
	in.Entries = append(in.Entries, Entry{Event: e, Where: where, Envelope: env})
}

// unreadable notes a line that is not JSON: a problem if it looks like an
// audit record (cut or garbled), else another program's output.
func (in *Input) unreadable(line []byte, where, why string) {
	if bytes.Contains(line, []byte(audit.LogKey)) || bytes.Contains(line, []byte("com.portfolio-mcp.")) {
		in.Problems = append(in.Problems, Problem{Kind: Malformed, Where: where, Detail: why})
		return
	}
	in.Skipped++
}

// cloudEvent reads a structured-mode CloudEvent; nil when it is not an
// audit event.
func cloudEvent(f map[string]json.RawMessage) (*Envelope, []byte, error) {
	env := &Envelope{ID: text(f["id"]), Type: text(f["type"]), Subject: text(f["subject"]),
		Stream: text(f[audit.StreamExtension]), Seq: text(f[audit.SeqExtension])}
	if !auditTypes[env.Type] {
		return nil, nil, nil
	}
	switch data := f["data"]; {
	case f["data_base64"] != nil:
		b, err := base64.StdEncoding.DecodeString(text(f["data_base64"]))
		if err != nil {
			return nil, nil, fmt.Errorf("CloudEvent %s: data_base64: %v", env.ID, err)
		}
		return env, b, nil
	case len(data) > 0 && data[0] == '"': // data kept as a JSON string
		return env, []byte(text(data)), nil
	case len(data) > 0:
		return env, data, nil
	}
	return nil, nil, fmt.Errorf("CloudEvent %s of type %s has no data", env.ID, env.Type)
}

// text is a JSON string's value, or a number's text (an extension an
// archiver stored as a number).
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// decodeEvent reads an event strictly: a field the event type does not
// have would be bytes its hash does not cover. Numbers stay as written.
// And it reads the event as any JSON reader does: Go's decoder matches
// names whatever their case and keeps the last of a repeated name, so
// {"principal":"mallory","PRINCIPAL":"alice"} would verify as alice's while
// jq shows mallory. A record is an event only if the event it decodes to,
// encoded again, is the record itself, read as plain JSON.
func decodeEvent(data []byte) (audit.Event, error) {
	var e audit.Event
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return e, fmt.Errorf("not an audit event: %w", err)
	}
	if d.More() {
		return e, errors.New("not an audit event: data after the event")
	}
	// As plain JSON, refusing a repeated name, as the server reads a call's
	// arguments (call.DecodeArgs).
	written, _, err := call.DecodeArgs(data)
	if err != nil {
		return e, fmt.Errorf("not an audit event: %w", err)
	}
	again, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("not an audit event: %w", err)
	}
	if read, _, err := call.DecodeArgs(again); err != nil || !reflect.DeepEqual(written, read) {
		return e, errors.New("not an audit event: its names are not the event's own (another case, or repeated)")
	}
	return e, nil
}

package direct

import (
	"encoding/json"
	"reflect"
	"testing"

	sjson "github.com/segmentio/encoding/json"
)

// The end-to-end proof that this path writes the SDK's bytes is
// internal/app's TestDirectPathIsTheSDKPath; these pin the small rules it
// rests on.

func TestPlainID(t *testing.T) {
	for id, want := range map[string]bool{
		`0`: true, `7`: true, `123456789012345`: true, `"abc"`: true, `"<a&b>"`: true, `""`: true,
		`1234567890123456`: false, // past float64's exact integers
		`-1`:               false, `01`: false, `1.0`: false, `1e2`: false, `"\u0041"`: false, `"é"`: false,
		`"a\"b"`: false, `null`: false, ``: false, `"unterminated`: false, `true`: false,
	} {
		if got := plainID(json.RawMessage(id)); got != want {
			t.Errorf("plainID(%s) = %v, want %v", id, got, want)
		}
	}
}

func TestCompleted(t *testing.T) {
	for in, want := range map[string]string{
		`{"content":[]}`: `{"content":[],"resultType":"complete"}`,
		`{}`:             `{"resultType":"complete"}`,
		`null`:           `null`,
	} {
		if got := string(completed([]byte(in))); got != want {
			t.Errorf("completed(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestAcceptsBoth(t *testing.T) {
	for accept, want := range map[string]bool{
		"application/json, text/event-stream":             true,
		"text/event-stream;q=0.9, application/json;q=1.0": true,
		"*/*":                   true,
		"application/*, text/*": true,
		"application/json":      false,
		"text/event-stream":     false,
		"":                      false,
	} {
		if got := acceptsBoth([]string{accept}); got != want {
			t.Errorf("acceptsBoth(%q) = %v, want %v", accept, got, want)
		}
	}
}

func TestCompactJSON(t *testing.T) {
	for in, want := range map[string]bool{
		`{"a":[1,2],"b":"x y"}`:    true,
		`{"a":"\"quoted\" \\ ok"}`: true,
		`{"a": 1}`:                 false, // whitespace outside a string
		"{\"a\":1}\n":              false,
		`{"a":"<b>"}`:              false, // the SDK's compaction escapes it
		`{"a":"x & y"}`:            false,
		"{\"a\":\"\u2028\"}":       false,
		`{"a":"\u003cb\u003e"}`:    true,
		``:                         false,
		`{"a":"unterminated}`:      false,
	} {
		if got := compactJSON([]byte(in)); got != want {
			t.Errorf("compactJSON(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestDecodeMeta: _meta decoded member by member is the value the SDK's
// decoder makes of it in one go.
func TestDecodeMeta(t *testing.T) {
	for _, raw := range []string{
		`{}`,
		`{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}`,
		`{"a":{"b":{"c":[1,2.5,-3e-7,{"d":null}],"e":[]},"f":true},"g":false,"h":null}`,
		`{"n":12345678901234567890,"m":1E400,"s":"\u00e9\ud83d\ude00\n\"<>&","k":"x","k":"dup"}`,
		` { "spaced" : [ 1 , { } , [ ] ] , "t" : "\u2028" } `,
		`{"progressToken":7,"x":[[[["deep"]]]]}`,
		`{"flat":{"b":"{[not nested]}","c":"\"{","d":1},"e":{"f":{"g":"}"}}}`,
	} {
		var want map[string]any
		_, werr := sjson.Parse([]byte(raw), &want, sjson.DontMatchCaseInsensitiveStructFields)
		got, members, err := decodeMeta([]byte(raw))
		if (err != nil) != (werr != nil) {
			t.Errorf("%s: error %v, the SDK's decoder: %v", raw, err, werr)
			continue
		}
		if err == nil && (!reflect.DeepEqual(got, want) || len(members) != len(want)) {
			t.Errorf("%s:\n got %#v\nwant %#v", raw, got, want)
		}
	}
	for _, raw := range []string{`[]`, `"s"`, `{"a":}`, `{"a":[1,}`} {
		if _, _, err := decodeMeta([]byte(raw)); err == nil {
			t.Errorf("%s: decoded; the SDK path should have it", raw)
		}
	}
}

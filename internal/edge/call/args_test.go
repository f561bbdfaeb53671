package call_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	sjson "github.com/segmentio/encoding/json" // the decoder the go-sdk applies to tool arguments

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/call"
)

func TestAccounts(t *testing.T) {
	cases := []struct {
		name, args string
		want       []string
		err        bool
	}{
		{"none", `{}`, nil, false},
		{"absent arguments", ``, nil, false},
		{"top level", `{"account_id":"ACC-1"}`, []string{"ACC-1"}, false},
		{"any case", `{"Account_ID":"ACC-2"}`, []string{"ACC-2"}, false},
		{"escaped key", `{"account\u005fid":"ACC-3"}`, []string{"ACC-3"}, false},
		{"nested and in arrays", `{"legs":[{"account_id":"A"},{"x":{"account_id":"B"}}]}`, []string{"A", "B"}, false},
		{"both spellings", `{"account_id":"A","ACCOUNT_ID":"B"}`, []string{"A", "B"}, false},
		{"non-string id is left to the schema", `{"account_id":7}`, nil, false},
		{"duplicate key", `{"account_id":"A","account_id":"B"}`, nil, true},
		{"duplicate escaped key", `{"account_id":"A","account\u005fid":"B"}`, nil, true},
		{"invalid", `{"account_id":`, nil, true},
		{"trailing data", `{} {"account_id":"B"}`, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := call.FromTool("t", json.RawMessage(c.args), "").Accounts()
			if (err != nil) != c.err {
				t.Fatalf("err = %v, want error %v", err, c.err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Accounts(%s) = %q, want %q", c.args, got, c.want)
			}
		})
	}
}

// FuzzAccounts is differential: whenever the check accepts arguments, the
// account a tool would read from them (decoded as the go-sdk decodes them,
// and as encoding/json does) is among the accounts the check saw. A
// difference would let an argument smuggle an account past entitlement.
//
//	go test ./internal/edge/call -run '^$' -fuzz '^FuzzAccounts$' -fuzztime 30s
func FuzzAccounts(f *testing.F) {
	for _, s := range []string{
		`{"account_id":"ACC-1"}`, `{"account_id":"A","account_id":"B"}`, `{"ACCOUNT_ID":"A","account_id":"B"}`,
		`{"account\u005fid":"A"}`, `{"a":[{"account_id":"B"}]}`, `{"account_id":"A"}garbage`, `{"account_id":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, args []byte) {
		ids, err := call.FromTool("t", args, "").Accounts()
		if err != nil {
			return // refused: the call never reaches the tool
		}
		var sdk struct {
			AccountID string `json:"account_id"`
		}
		if sjson.Unmarshal(args, &sdk) == nil && sdk.AccountID != "" && !slices.Contains(ids, sdk.AccountID) {
			t.Fatalf("the SDK's decoder reads account %q from %q; the check saw %q", sdk.AccountID, args, ids)
		}
		var std map[string]any
		if json.Unmarshal(args, &std) == nil {
			for k, v := range std {
				if s, ok := v.(string); ok && (k == "account_id") && !slices.Contains(ids, s) {
					t.Fatalf("encoding/json reads account %q from %q; the check saw %q", s, args, ids)
				}
			}
		}
	})
}

// FuzzDecodeArgs is differential: arguments the decoder accepts decode to
// what encoding/json decodes (with UseNumber); it refuses only what
// encoding/json refuses, a repeated key or nesting past 64 levels.
//
//	go test ./internal/edge/call -run '^$' -fuzz '^FuzzDecodeArgs$' -fuzztime 30s
func FuzzDecodeArgs(f *testing.F) {
	for _, s := range []string{
		`{"query":"in","limit":20}`, `{}`, `[]`, `"s"`, `1e400`, `-0.5E+3`, `null`, `true`, ` { "a" : [ 1 , 2 , { } ] } `,
		`{"s":"\u00e9\ud83d\ude00\n\"\\\/<>&"}`, "{\"bad\":\"\xff\xfe\"}", `{"lone":"\ud800"}`, `{"a":{"a":{"a":[[[]]]}}}`,
		`{"a":1,"a":2}`, `{"a":1}x`, `{"a":`, `[1,]`, `{"a" 1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, _, err := call.DecodeArgs(raw)
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var want any
		stdErr := d.Decode(&want)
		if stdErr == nil && d.More() {
			stdErr = errors.New("trailing data")
		}
		if _, tail := d.Token(); stdErr == nil && tail != io.EOF {
			stdErr = errors.New("trailing data")
		}
		switch {
		case err == nil && stdErr != nil:
			t.Fatalf("%q: decoded to %#v; encoding/json refuses it: %v", raw, got, stdErr)
		case err == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("%q: decoded to %#v; encoding/json: %#v", raw, got, want)
		case err != nil && stdErr == nil && !strings.Contains(err.Error(), "duplicate key") && !strings.Contains(err.Error(), "nest too deeply"):
			t.Fatalf("%q: refused (%v); encoding/json decodes %#v", raw, err, want)
		}
	})
}

// TestJSONBody: the bodies the go-sdk runs are the ones the edge parses.
func TestJSONBody(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "Application/JSON": true,
		"application/json-seq": false, "text/json": false, "": false, "application/json;;": false,
	} {
		if got := call.JSONBody(ct); got != want {
			t.Errorf("JSONBody(%q) = %v, want %v", ct, got, want)
		}
	}
}

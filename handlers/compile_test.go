package handlers

import (
	"encoding/json"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
)

type innerArgs struct {
	Mode string `json:"mode,omitempty"`
}

type compileArgs struct {
	Limit int       `json:"limit,omitempty"`
	Inner innerArgs `json:"inner"`
}

// TestDecodeArgs covers the paths of decodeArgs that the differential test
// in app cannot reach with the real tools: nested defaults, and a direct
// decode that fails where the SDK's re-encoded one succeeds.
func TestDecodeArgs(t *testing.T) {
	s := inputSchema[compileArgs](func(p map[string]*jsonschema.Schema) {
		p["limit"].Default = json.RawMessage("7")
		p["inner"].Properties["mode"].Default = json.RawMessage(`"fast"`)
	})()
	r, err := s.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
	if err != nil {
		t.Fatal(err)
	}
	if !nestedDefaults(s) {
		t.Fatal("nested default not seen")
	}
	// nested=true always re-encodes the validated map with its defaults,
	// which is the SDK's path; the direct decode must agree with it.
	for _, c := range []struct {
		raw   string
		limit int
	}{
		{`{"inner":{}}`, 7},
		{`{"limit":2.0,"inner":{"mode":"x"}}`, 2},
		{`{"limit":3,"inner":{"mode":"y"}}`, 3},
	} {
		var sdk, direct compileArgs
		if err := decodeArgs(nil, json.RawMessage(c.raw), r, true, &sdk); err != nil || sdk.Limit != c.limit {
			t.Errorf("%s: %+v, %v; want limit %d", c.raw, sdk, err, c.limit)
		}
		if err := decodeArgs(nil, json.RawMessage(c.raw), r, false, &direct); err != nil || direct != sdk {
			t.Errorf("%s: direct %+v, %v; re-encoded %+v", c.raw, direct, err, sdk)
		}
	}
	var got compileArgs
	if err := decodeArgs(nil, json.RawMessage(`{"inner":{},"Limit":3}`), r, true, &got); err == nil {
		t.Error("an undeclared (differently cased) property was accepted")
	}
}

package tracing

import (
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		c       Config
		on      bool
		sampler string // the sampler's description, "" when invalid
	}{
		{"default, no endpoint", Config{Protocol: "http/protobuf", Sampler: "parentbased_always_on"}, false, "ParentBased{root:AlwaysOnSampler"},
		{"endpoint", Config{Endpoint: "http://c:4318", Protocol: "http/protobuf", Sampler: "always_off"}, true, "AlwaysOffSampler"},
		{"traces endpoint, ratio", Config{TracesEndpoint: "http://c:4318/v1/traces", Protocol: "grpc", Sampler: "traceidratio", SamplerArg: "0.25"}, true, "TraceIDRatioBased{0.25}"},
		{"exporter none", Config{Exporter: "none", Endpoint: "http://c:4318", Protocol: "http/protobuf", Sampler: "always_on"}, false, "AlwaysOnSampler"},
		{"bad ratio", Config{Protocol: "http/protobuf", Sampler: "traceidratio", SamplerArg: "2"}, false, ""},
		{"bad sampler", Config{Protocol: "http/protobuf", Sampler: "sometimes"}, false, ""},
		{"bad protocol", Config{Protocol: "http/json", Sampler: "always_on"}, false, ""},
		{"bad exporter", Config{Exporter: "zipkin", Protocol: "http/protobuf", Sampler: "always_on"}, false, ""},
	} {
		if got := tc.c.On(); got != tc.on {
			t.Errorf("%s: On() = %v, want %v", tc.name, got, tc.on)
		}
		err := tc.c.Validate()
		if (err == nil) != (tc.sampler != "") {
			t.Errorf("%s: Validate() = %v", tc.name, err)
			continue
		}
		if tc.sampler == "" {
			continue
		}
		var s sdktrace.Sampler
		if s, err = tc.c.sampler(); err != nil || !strings.HasPrefix(s.Description(), tc.sampler) {
			t.Errorf("%s: sampler %v %v, want %s", tc.name, s, err, tc.sampler)
		}
	}
}

func TestOffIsANoop(t *testing.T) {
	tr, err := New(t.Context(), Config{Protocol: "http/protobuf", Sampler: "always_on"}, "v1")
	if err != nil || tr.on {
		t.Fatalf("no endpoint: %+v %v", tr, err)
	}
	if _, span := tr.Provider.Tracer("x").Start(t.Context(), "s"); span.IsRecording() {
		t.Error("tracing off records spans")
	}
}

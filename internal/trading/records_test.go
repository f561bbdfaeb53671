package trading

import (
	"context"
	"testing"
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/state/store"
)

// TestPutJSON: a record is created, then replaced whatever its version,
// and created again once the earlier one expired.
func TestPutJSON(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	st := store.NewMemory(func() time.Time { return now })
	read := func() string {
		t.Helper()
		v, _, err := getJSON[string](ctx, st, "k")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, step := range []struct {
		value string
		after time.Duration
	}{{"first", 0}, {"second", 0}, {"third", 2 * time.Minute}} {
		now = now.Add(step.after)
		if err := putJSON(ctx, st, "k", step.value, time.Minute); err != nil {
			t.Fatalf("putJSON(%q): %v", step.value, err)
		}
		if got := read(); got != step.value {
			t.Errorf("after putJSON(%q), the record holds %q", step.value, got)
		}
	}
}

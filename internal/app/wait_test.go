package app_test

import (
	"testing"
	"time"
)

// waitFor polls cond until it holds, failing the test after a generous
// deadline. It synchronises on an observable condition, not on time.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

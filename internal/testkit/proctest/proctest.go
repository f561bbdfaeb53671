// Package proctest runs server processes in tests: a free loopback port to
// give one, and readiness polled as Knative's queue-proxy polls it.
package proctest

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"
)

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// PollReady polls base's /readyz as fast as the server answers, until 200,
// the process exits (exited closed; nil: not watched) or a generous
// deadline passes.
func PollReady(base string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("exited before it was ready")
		default:
		}
		var resp *http.Response
		if resp, err = client.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	return fmt.Errorf("not ready within 15s: %v", err)
}

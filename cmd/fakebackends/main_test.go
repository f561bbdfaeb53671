package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDefaultAddressIsLoopback: run with no flags, the fakes (whose admin
// API is unauthenticated) listen on loopback only, not on every interface.
func TestDefaultAddressIsLoopback(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fakebackends")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var msg struct{ Msg, Addr, Error string }
	json.Unmarshal([]byte(line), &msg)
	switch {
	case msg.Msg == "listen failed" && strings.Contains(msg.Error, "address already in use"):
		t.Skipf("the default port is taken on this machine: %s", msg.Error)
	case msg.Msg != "serving" || msg.Addr != "127.0.0.1:8090":
		t.Fatalf("first log line %q, want serving on 127.0.0.1:8090", line)
	}
}

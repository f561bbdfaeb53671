// Package redistest runs a real redis-server for tests: on a loopback
// address of its own, with persistence off (unless asked), stopped,
// frozen, flushed and restarted on demand (to prove fail-closed behaviour
// and recovery).
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process.
type Server struct {
	t     testing.TB
	Addr  string // host:port
	extra []string
	cmd   *exec.Cmd
}

// URL is the REDIS_URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Start runs redis-server for the test's lifetime, with extra server
// arguments (e.g. "--requirepass", "pw"). Without the binary the
// test is skipped with a line saying how to get it, unless CI is set, where
// that is a failure.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found; CI must install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found: install it (apt-get install redis-server) or run bash scripts/test.sh")
	}
	// A loopback address of its own (any 127.x.y.z answers on Linux): a
	// restart must get its port back, and every other test process takes
	// its free ports on 127.0.0.1, so none can take this one meanwhile.
	host := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &Server{t: t, Addr: addr, extra: extra}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	host, port, _ := net.SplitHostPort(s.Addr)
	args := append([]string{"--port", port, "--bind", host, "--save", "", "--appendonly", "no", "--loglevel", "warning"}, s.extra...)
	s.cmd = exec.Command("redis-server", args...)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	// Ready once it accepts a PING on the socket.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if pong(s.Addr) {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatal("redis-server did not answer within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	go func() { // drain output so the process never blocks on a full pipe
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
		}
	}()
}

func pong(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprint(c, "PING\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	// -NOAUTH also means the server is up (it wants a password).
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// Stop kills the server (idempotent). Its data is gone, as after a crash of
// a cache without persistence.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same address.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Freeze stops the server process (SIGSTOP): its connections stay open and
// nothing answers, as with a Redis stuck in a long command or a frozen VM.
// Thaw lets it go on.
func (s *Server) Freeze() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatalf("freeze redis-server: %v", err)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatalf("thaw redis-server: %v", err)
	}
}

// FlushAll deletes every key, as a Redis that restarted without
// persistence (or failed over to a replica that had not caught up) would
// have lost them.
func (s *Server) FlushAll() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		s.t.Fatalf("flushall: %v", err)
	}
}

// Keys lists the keys matching pattern.
func (s *Server) Keys(pattern string) []string {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	keys, err := c.Keys(context.Background(), pattern).Result()
	if err != nil {
		s.t.Fatalf("keys %s: %v", pattern, err)
	}
	return keys
}

// Del deletes keys: a record lost on its own.
func (s *Server) Del(keys ...string) {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.Del(context.Background(), keys...).Err(); err != nil {
		s.t.Fatalf("del: %v", err)
	}
}

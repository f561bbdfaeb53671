package loopback_test

import (
	"net"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/loopback"
)

func TestName(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LOCALHOST": true, "localhost.": true,
		"127.0.0.1": true, "127.1.2.3": true, "::1": true, "[::1]": true, "::ffff:127.0.0.1": true,
		"app.localhost": false, "localhost.example.com": false, "example.com": false,
		"10.0.0.1": false, "0.0.0.0": false, "::": false, "": false, "[::1]:8080": false,
	} {
		if got := loopback.Name(host); got != want {
			t.Errorf("Name(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestAddr(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, true},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 8080}, true},
		{&net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 8080}, false},
		{&net.UnixAddr{Name: "/tmp/sock", Net: "unix"}, false},
		{nil, false},
	} {
		if got := loopback.Addr(tc.addr); got != tc.want {
			t.Errorf("Addr(%v) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// Package loopback is the one definition of "this machine only", shared by
// the rule that lets a server without authentication listen only on
// loopback, the Host guard, and the rule that allows plain http only to
// loopback URLs: if they disagreed, a name one of them trusts could slip
// past another.
package loopback

import (
	"net"
	"strings"
)

// Name reports whether host (a host name or an IP literal, in any case,
// with or without brackets or a trailing dot) can only mean this machine:
// "localhost" or a loopback IP. Other names, *.localhost included, are
// resolved by DNS and may lead anywhere.
func Name(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Addr reports whether a (for example the local address a connection
// arrived on) is a loopback address.
func Addr(a net.Addr) bool {
	if a == nil {
		return false
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

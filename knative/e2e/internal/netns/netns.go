// Package netns gives each pod (and each Knative system process) its own
// Linux network namespace with one address on a shared bridge, the way a
// CNI bridge plugin would: a veth pair, one end named eth0 inside the
// namespace, the other end enslaved to the bridge in the host namespace,
// and a default route via the bridge address. It shells out to iproute2.
package netns

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Bridge is the host-side bridge every namespace is attached to.
type Bridge struct {
	Name   string       // e.g. kn0
	Prefix netip.Prefix // bridge address and mask, e.g. 10.200.0.1/16
}

// Gateway is the bridge's address: the default route of every namespace.
func (b Bridge) Gateway() netip.Addr { return b.Prefix.Addr() }

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Setup brings up loopback and creates the bridge in the current (host)
// namespace.
func (b Bridge) Setup() error {
	for _, a := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", b.Name, "type", "bridge"},
		{"addr", "add", b.Prefix.String(), "dev", b.Name},
		{"link", "set", b.Name, "up"},
	} {
		if err := ip(a...); err != nil {
			return err
		}
	}
	return nil
}

// Add creates the named namespace with addr on eth0, attached to the bridge
// through a veth pair whose host end is hostIf (at most 15 characters).
func (b Bridge) Add(name, hostIf string, addr netip.Addr) error {
	cidr := netip.PrefixFrom(addr, b.Prefix.Bits()).String()
	steps := [][]string{
		{"netns", "add", name},
		{"link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"link", "set", hostIf, "master", b.Name, "up"},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "addr", "add", cidr, "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "route", "add", "default", "via", b.Gateway().String()},
	}
	for _, a := range steps {
		if err := ip(a...); err != nil {
			_ = Delete(name)
			return err
		}
	}
	return nil
}

// Delete removes the namespace; its veth pair goes with it.
func Delete(name string) error { return ip("netns", "del", name) }

// Command returns a command that runs argv inside the namespace
// (ip netns exec: a private mount namespace, /sys of the namespace).
func Command(name string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", name}, argv...)...)
}

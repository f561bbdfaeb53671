package httpserver

import (
	"net"
	"net/http"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/loopback"
)

// hostGuard rejects DNS-rebinding and cross-origin browser requests before
// they reach MCP.
//
// DNS rebinding: a page on evil.example resolves its own name to 127.0.0.1
// and posts to us "same-origin", so Origin and Host agree and only an allow
// list of Host names can tell it apart. Knative's queue-proxy also dials us on
// 127.0.0.1 but with the public Host, which is why the go-sdk's built-in
// localhost check (loopback address => loopback Host) is replaced by this one:
// loopback connections accept loopback Hosts and the configured public names.
//
// Cross-origin: a browser always sends Origin (or Sec-Fetch-Site) on a POST;
// http.CrossOriginProtection refuses one whose origin differs from Host unless
// it is explicitly trusted. Agents and SDK clients send neither and pass.
type hostGuard struct {
	hosts []string // exact names, or ".domain" for the domain and subdomains
	cop   *http.CrossOriginProtection
	next  http.Handler
}

func newHostGuard(allowedHosts, allowedOrigins []string, next http.Handler) (*hostGuard, error) {
	cop := http.NewCrossOriginProtection()
	for _, o := range allowedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, err
		}
	}
	hosts := make([]string, len(allowedHosts))
	for i, h := range allowedHosts {
		hosts[i] = strings.ToLower(h)
	}
	return &hostGuard{hosts: hosts, cop: cop, next: next}, nil
}

func (g *hostGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.hostAllowed(r) {
		WriteError(w, http.StatusForbidden, "forbidden: Host not allowed")
		return
	}
	if err := g.cop.Check(r); err != nil {
		WriteError(w, http.StatusForbidden, "forbidden: cross-origin request")
		return
	}
	g.next.ServeHTTP(w, r)
}

func (g *hostGuard) hostAllowed(r *http.Request) bool {
	host := hostname(r.Host)
	if loopback.Name(host) {
		return true
	}
	for _, h := range g.hosts {
		if host == h || strings.HasPrefix(h, ".") && (strings.HasSuffix(host, h) || host == h[1:]) {
			return true
		}
	}
	// No allow list: a connection that did not arrive on loopback is behind
	// an ingress that already chose us by Host; a loopback one must name us.
	return len(g.hosts) == 0 && !arrivedOnLoopback(r)
}

func arrivedOnLoopback(r *http.Request) bool {
	a, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return loopback.Addr(a)
}

func hostname(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
}

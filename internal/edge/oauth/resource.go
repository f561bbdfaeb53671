package oauth

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// WellKnownPath is where RFC 9728 protected resource metadata lives.
const WellKnownPath = "/.well-known/oauth-protected-resource"

// Resource describes this server as an OAuth protected resource. Its URL is
// the public MCP endpoint from configuration (the Knative route behind the
// ingress), never taken from a request, which a client controls.
type Resource struct {
	// URL is the MCP endpoint as agents reach it, e.g. https://route/mcp.
	URL string
	// Issuers are the authorization servers whose tokens are accepted.
	Issuers []string
	// Scopes are the scopes this resource understands.
	Scopes []string
	// Name is shown to users by clients that display it.
	Name string
}

// MetadataURL is the RFC 9728 section 3.1 location of the metadata: the
// well-known path inserted between the host and the resource's path, e.g.
// https://route/.well-known/oauth-protected-resource/mcp. It is what 401 and
// 403 challenges point to.
func (r Resource) MetadataURL() (string, error) {
	u, err := url.Parse(r.URL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("resource URL %q is not absolute", r.URL)
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	return (&url.URL{Scheme: u.Scheme, Host: u.Host}).String() + WellKnownPath + path, nil
}

// Routes returns the metadata handlers keyed by path: the path-suffixed
// form for this resource and the bare well-known path, which clients try
// when the suffixed one is missing. The go-sdk's handler serves them with
// permissive CORS, as RFC 9728 metadata is public.
func (r Resource) Routes() (map[string]http.Handler, error) {
	u, err := url.Parse(r.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("resource URL %q is not absolute", r.URL)
	}
	h := auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource:               r.URL,
		AuthorizationServers:   r.Issuers,
		ScopesSupported:        r.Scopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           r.Name,
	})
	routes := map[string]http.Handler{WellKnownPath: h}
	if path := strings.TrimSuffix(u.EscapedPath(), "/"); path != "" {
		routes[WellKnownPath+path] = h
	}
	return routes, nil
}

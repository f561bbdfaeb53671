package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/loopback"
)

// issuerMetadata is the part of RFC 8414 / OpenID Connect discovery
// metadata a resource server needs.
type issuerMetadata struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
	// The endpoints a client signing a person in needs (the console).
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
}

// Endpoints are an issuer's authorization and token endpoints, for a client
// that signs a person in with the authorization code flow.
type Endpoints struct {
	Authorization, Token string
}

// DiscoverEndpoints reads issuer's metadata (as the verifier does) and
// returns its endpoints, both required to be https (http on loopback).
func DiscoverEndpoints(ctx context.Context, c *http.Client, issuer string) (Endpoints, error) {
	md, err := discover(ctx, c, issuer)
	if err != nil {
		return Endpoints{}, err
	}
	for _, e := range []struct{ name, url string }{{"authorization_endpoint", md.AuthorizationEndpoint}, {"token_endpoint", md.TokenEndpoint}} {
		if err := checkJWKSURL(e.url); err != nil {
			return Endpoints{}, fmt.Errorf("issuer metadata: %s: %w", e.name, err)
		}
	}
	return Endpoints{Authorization: md.AuthorizationEndpoint, Token: md.TokenEndpoint}, nil
}

const maxMetadataBytes = 1 << 20

// errNoMetadata: none of the well-known locations answered with metadata.
var errNoMetadata = errors.New("the issuer publishes no authorization server metadata")

// metadataURLs lists where an issuer's metadata may live, in the order the
// MCP authorization spec has clients try them: RFC 8414 first, then OpenID
// Connect discovery, with path insertion for issuers that have a path.
func metadataURLs(issuer string) ([]string, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, err
	}
	path := strings.Trim(u.Path, "/")
	at := func(p string) string {
		c := *u
		c.Path, c.RawPath = p, ""
		return c.String()
	}
	if path == "" {
		return []string{
			at("/.well-known/oauth-authorization-server"),
			at("/.well-known/openid-configuration"),
		}, nil
	}
	return []string{
		at("/.well-known/oauth-authorization-server/" + path),
		at("/.well-known/openid-configuration/" + path),
		at("/" + path + "/.well-known/openid-configuration"),
	}, nil
}

// discover finds the issuer's JWKS URL from its metadata, checking that the
// metadata is the issuer's own (RFC 8414 section 3.3) and that the JWKS is
// served over https (http only on loopback, for tests and laptops).
func discover(ctx context.Context, c *http.Client, issuer string) (issuerMetadata, error) {
	urls, err := metadataURLs(issuer)
	if err != nil {
		return issuerMetadata{}, fmt.Errorf("issuer URL: %w", err)
	}
	for _, u := range urls {
		md, found, err := fetchMetadata(ctx, c, u)
		if err != nil {
			return issuerMetadata{}, err
		}
		if !found {
			continue
		}
		if strings.TrimSuffix(md.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
			return issuerMetadata{}, fmt.Errorf("metadata at %s names issuer %q, not %q", u, md.Issuer, issuer)
		}
		if err := checkJWKSURL(md.JWKSURI); err != nil {
			return issuerMetadata{}, fmt.Errorf("metadata at %s: jwks_uri: %w", u, err)
		}
		return md, nil
	}
	return issuerMetadata{}, errNoMetadata
}

// fetchMetadata GETs one candidate; a 4xx means "not here".
func fetchMetadata(ctx context.Context, c *http.Client, u string) (issuerMetadata, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return issuerMetadata{}, false, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return issuerMetadata{}, false, fmt.Errorf("fetching issuer metadata: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxMetadataBytes))
		return issuerMetadata{}, false, nil
	case resp.StatusCode != http.StatusOK:
		return issuerMetadata{}, false, fmt.Errorf("fetching issuer metadata from %s: HTTP %d", u, resp.StatusCode)
	}
	var md issuerMetadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxMetadataBytes)).Decode(&md); err != nil {
		return issuerMetadata{}, false, fmt.Errorf("decoding issuer metadata from %s: %w", u, err)
	}
	return md, true, nil
}

// checkJWKSURL (and every endpoint URL) must be absolute and https, or
// http on loopback.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if loopback.Name(u.Hostname()) {
			return nil
		}
	}
	return fmt.Errorf("%q must use https", raw)
}

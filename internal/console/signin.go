package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

// OIDC signs approvers in at the firm's issuer: the authorization code flow
// with PKCE (S256), state and nonce, asking for an access token for this
// server (RFC 8707 resource). The access token is checked exactly as a
// bearer token on /mcp or /approvals is (it carries the scopes and
// entitlements the session holds); the ID token proves the sign-in answers
// this request (audience the console's client id, the nonce sent).
type OIDC struct {
	Issuer   string
	ClientID string
	// ClientSecret is empty for a public client (PKCE alone).
	ClientSecret string
	// RedirectURL is the console's callback, registered at the issuer.
	RedirectURL string
	// Resource is the server's resource URL: the access token's audience.
	Resource string
	// Scopes asked for besides openid.
	Scopes []string
	// Access verifies access tokens (the server's verifier); ID verifies
	// ID tokens (audience ClientID).
	Access, ID *oauth.Verifier
	HTTPClient *http.Client

	mu        sync.Mutex
	endpoints *oauth.Endpoints
	failed    time.Time // the last discovery failure, answered again for a while
	failure   error
}

// retryDiscovery is how long a failed discovery is answered from memory,
// so sign-ins during an issuer outage do not each wait on it.
const retryDiscovery = 5 * time.Second

// config discovers the issuer's endpoints once (retrying after a failure).
func (o *OIDC) config(ctx context.Context) (*oauth2.Config, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.endpoints == nil {
		if time.Since(o.failed) < retryDiscovery {
			return nil, o.failure
		}
		c := o.HTTPClient
		if c == nil {
			c = &http.Client{Timeout: 10 * time.Second}
		}
		e, err := oauth.DiscoverEndpoints(ctx, c, o.Issuer)
		if err != nil {
			o.failed, o.failure = time.Now(), err
			return nil, err
		}
		o.endpoints = &e
	}
	return &oauth2.Config{
		ClientID: o.ClientID, ClientSecret: o.ClientSecret, RedirectURL: o.RedirectURL,
		Scopes:   append([]string{"openid"}, o.Scopes...),
		Endpoint: oauth2.Endpoint{AuthURL: o.endpoints.Authorization, TokenURL: o.endpoints.Token, AuthStyle: oauth2.AuthStyleInParams},
	}, nil
}

// begin starts a sign-in: the state, nonce and PKCE verifier go into the
// login cookie, the browser to the issuer.
func (o *OIDC) begin(ctx context.Context, s *Sessions, w http.ResponseWriter, next consolePath) (string, error) {
	cfg, err := o.config(ctx)
	if err != nil {
		return "", err
	}
	l := loginState{State: rand.Text(), Nonce: rand.Text(), Verifier: oauth2.GenerateVerifier(), Next: string(next), Expires: s.now().Add(10 * time.Minute)}
	if err := s.startLogin(w, l); err != nil {
		return "", err
	}
	return cfg.AuthCodeURL(l.State, oauth2.S256ChallengeOption(l.Verifier),
		oauth2.SetAuthURLParam("nonce", l.Nonce), oauth2.SetAuthURLParam("resource", o.Resource)), nil
}

// signInError is a failed sign-in, with what the person may be told.
type signInError struct{ public, detail string }

func (e *signInError) Error() string { return e.public + ": " + e.detail }

// finish completes a sign-in at the callback and returns the principal and
// when its access token expires.
func (o *OIDC) finish(ctx context.Context, s *Sessions, w http.ResponseWriter, r *http.Request) (principal.Principal, time.Time, string, error) {
	l, ok := s.takeLogin(w, r)
	q := r.URL.Query()
	switch {
	case !ok:
		return principal.Principal{}, time.Time{}, "", &signInError{"the sign-in expired or was started in another browser; sign in again", "no login cookie"}
	case subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(l.State)) != 1:
		return principal.Principal{}, time.Time{}, "", &signInError{"the sign-in could not be verified; sign in again", "state mismatch"}
	case q.Get("error") != "":
		return principal.Principal{}, time.Time{}, "", &signInError{"the identity provider refused the sign-in", "issuer error " + q.Get("error")}
	}
	cfg, err := o.config(ctx)
	if err != nil {
		return principal.Principal{}, time.Time{}, "", err
	}
	if o.HTTPClient != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, o.HTTPClient)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(l.Verifier), oauth2.SetAuthURLParam("resource", o.Resource))
	if err != nil {
		return principal.Principal{}, time.Time{}, "", &signInError{"the identity provider did not complete the sign-in; sign in again", err.Error()}
	}
	access, err := o.Access.Verify(ctx, tok.AccessToken)
	if err != nil {
		return principal.Principal{}, time.Time{}, "", &signInError{"the access token the identity provider issued was not accepted", err.Error()}
	}
	raw, _ := tok.Extra("id_token").(string)
	id, err := o.ID.Verify(ctx, raw)
	switch {
	case err != nil:
		return principal.Principal{}, time.Time{}, "", &signInError{"the identity provider's ID token was not accepted", err.Error()}
	case subtle.ConstantTimeCompare([]byte(id.Nonce), []byte(l.Nonce)) != 1:
		return principal.Principal{}, time.Time{}, "", &signInError{"the sign-in could not be verified; sign in again", "nonce mismatch"}
	case id.Principal.Subject != access.Principal.Subject:
		return principal.Principal{}, time.Time{}, "", &signInError{"the sign-in could not be verified; sign in again", "ID and access token subjects differ"}
	}
	return access.Principal, access.Expiry, l.Next, nil
}

// Persona is a built-in identity of an unauthenticated laptop run: the
// console offers a sign-in as each, so four eyes can be tried with nothing
// else running.
type Persona struct {
	Key, Name, Subject, About string
	Scopes                    []string
}

// DevPersonas are the laptop personas: the trader (the identity MCP
// clients act as), an approver, and a viewer without trade:approve.
func DevPersonas(readScope, tradeScope, approveScope, haltScope string) []Persona {
	return []Persona{
		{Key: "trader", Name: "Trader", Subject: oauth.LocalDeveloper, Scopes: []string{readScope, tradeScope, approveScope},
			About: "the identity MCP clients act as on this laptop: places the orders, cannot approve its own"},
		{Key: "approver", Name: "Approver", Subject: "local-approver", Scopes: []string{readScope, approveScope},
			About: "a second person with trade:approve: decides the trader's orders"},
		{Key: "risk", Name: "Risk officer", Subject: "local-risk-officer", Scopes: []string{readScope, haltScope},
			About: "holds trade:halt: engages and releases the kill switch, cancels a scope's open orders; cannot approve"},
		{Key: "viewer", Name: "Viewer", Subject: "local-viewer", Scopes: []string{readScope},
			About: "sees the queue without trade:approve: cannot decide"},
	}
}

func persona(ps []Persona, key string) (Persona, error) {
	for _, p := range ps {
		if p.Key == key {
			return p, nil
		}
	}
	return Persona{}, errors.New("no such persona")
}

// safeNext keeps a post-sign-in destination inside the console: a path
// under /console/ made of URL-safe characters only (no scheme, host,
// backslash, whitespace or percent-encoding: no open redirect, no encoded
// dot segments, nothing a refresh header could misread).
func safeNext(next string) consolePath {
	if !strings.HasPrefix(next, prefix) || strings.Contains(next, "//") || strings.Contains(next, "..") ||
		strings.IndexFunc(next, func(r rune) bool { return !strings.ContainsRune(nextChars, r) }) >= 0 {
		return prefix + "queue"
	}
	return consolePath(next)
}

// consolePath is a destination safeNext let through: the only kind of
// value the console writes into a link or a refresh it did not spell out.
type consolePath string

const nextChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-_.?=&"

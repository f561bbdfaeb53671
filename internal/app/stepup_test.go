package app_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/portfolio-mcp/portfolio-mcp/internal/edge/oauth/oauthtest"
)

// stepUpCounter is a client's OAuth handler: it holds a token and counts
// the authorization flows the server sends it into (a browser prompt, in a
// real client).
type stepUpCounter struct {
	token string
	flows atomic.Int32
}

func (h *stepUpCounter) TokenSource(context.Context) (oauth2.TokenSource, error) {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: h.token, TokenType: "Bearer"}), nil
}
func (h *stepUpCounter) Authorize(_ context.Context, _ *http.Request, resp *http.Response) error {
	resp.Body.Close()
	h.flows.Add(1)
	return errors.New("the user declined")
}

// TestReviewApproverAgentListsResourcesAtConnect: an approver's agent
// (trade:approve, no portfolio:read: docs/security.md's approve class, tool
// list_pending_approvals) connects as hosts do, listing tools, resource
// templates and resources. The server advertises the resources capability
// to it and answers resources/templates/list with an empty list; until
// ace21a7 it answered resources/list the same way. Now resources/list is
// a 403 insufficient_scope, which sends the client into step-up
// authorization at every connect.
// TestApproverAgentListsResourcesWithoutStepUp: an agent whose token holds
// only trade:approve lists tools, resource templates and resources as MCP
// clients do when they connect; none of it may send it into a step-up
// sign-in (the server advertises resources to everyone).
func TestApproverAgentListsResourcesWithoutStepUp(t *testing.T) {
	setSecrets(t)
	iss := oauthtest.New(t)
	srv := startServer(t, tradingEnv(iss, ""))
	h := &stepUpCounter{token: iss.Token(t, iss.Claims("ann", secResource, "trade:approve", "*"))}
	client := mcp.NewClient(&mcp.Implementation{Name: "approver-agent", Version: "1"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp", OAuthHandler: h, MaxRetries: -1},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if cs.InitializeResult().Capabilities.Resources == nil {
		t.Fatal("setup: no resources capability")
	}
	if _, err := cs.ListTools(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.ListResourceTemplates(t.Context(), nil); err != nil {
		t.Fatalf("resources/templates/list: %v", err)
	}
	_, err = cs.ListResources(t.Context(), nil)
	if err != nil || h.flows.Load() != 0 {
		t.Errorf("resources/list at connect: %v; authorization flows started: %d; want an (empty) list, as resources/templates/list answers, and no step-up prompt", err, h.flows.Load())
	}
}

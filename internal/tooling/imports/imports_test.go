// Package imports holds the test that enforces the layering of
// docs/architecture.md: which packages may import which, read from
// `go list -deps` as knative/serving's nodeps test does, so that a package
// that must stay light or independent cannot quietly grow a dependency.
package imports

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/portfolio-mcp/portfolio-mcp"

// rules: for each package (relative to the module), the prefixes it must
// never import directly (imports) and never link at all (links).
var rules = []struct {
	pkg     string
	imports []string
	links   []string
	reason  string
}{
	{pkg: "cmd/portfolio-mcp", links: []string{"k8s.io/", "knative.dev/", "github.com/testcontainers/", "gonum.org/"},
		reason: "the server binary starts in tens of milliseconds: no Kubernetes, Knative, container or plotting code"},
	{pkg: "internal/edge/call", links: []string{module + "/"},
		reason: "the parsed call is the vocabulary every step shares: it imports nothing of the project"},
	{pkg: "internal/governance/catalog", links: []string{module + "/"},
		reason: "tool classes and budgets are plain values"},
	{pkg: "internal/governance/outcome", links: []string{module + "/"},
		reason: "the outcome vocabulary is a leaf"},
	{pkg: "internal/edge/direct", links: []string{module + "/handlers", module + "/internal/governance/", module + "/internal/trading", module + "/internal/app", module + "/config"},
		reason: "the direct path runs the middleware and tools it is given: it knows none of them"},
	{pkg: "internal/edge/loopback", links: []string{module + "/"},
		reason: "the one definition of loopback is a leaf every rule about it can share"},
	{pkg: "internal/edge/ident", links: []string{module + "/"},
		reason: "the one definition of an identifier from outside is a leaf every check of one can share"},
	{pkg: "handlers",
		imports: []string{"net/http", module + "/internal/edge/httpserver", module + "/internal/edge/oauth", module + "/internal/governance/audit",
			module + "/internal/governance/authz", module + "/internal/governance/ratelimit"},
		links:  []string{module + "/internal/app", module + "/config", module + "/internal/edge/httpserver", module + "/internal/governance/authz", module + "/internal/governance/ratelimit"},
		reason: "the MCP surface knows nothing of HTTP, audit, authorization or rate limits"},
	{pkg: "internal/trading", imports: []string{"net/http", module + "/internal/edge/"},
		links:  []string{module + "/handlers", module + "/internal/app", module + "/config", module + "/internal/edge/httpserver", module + "/internal/governance/authz"},
		reason: "the order flow is independent of the transport and of the MCP surface"},
	{pkg: "internal/governance/audit", links: []string{module + "/internal/trading", module + "/handlers", module + "/config"},
		reason: "audit owns its event; trading journals to it, not the other way"},
	{pkg: "internal/governance/authz", links: []string{module + "/handlers", module + "/internal/trading", module + "/config"},
		reason: "authorization reads the catalog, not the handlers"},
	{pkg: "internal/governance/ratelimit", links: []string{module + "/handlers", module + "/internal/governance/audit", module + "/config"},
		reason: "rate limits refuse with a value; they do not edit the audit record"},
	{pkg: "backends", links: []string{module + "/internal/", module + "/handlers", module + "/config"},
		reason: "backend clients are usable on their own"},
}

// list runs go list on pkg and returns its direct imports and every
// package it links (test imports excluded: the rules are about what ships).
func list(t *testing.T, pkg string) (imports, links []string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{join .Imports \" \"}}|{{join .Deps \" \"}}", "../../../"+pkg).Output()
	if err != nil {
		t.Fatalf("go list ./%s: %v", pkg, err)
	}
	direct, all, _ := strings.Cut(strings.TrimSpace(string(out)), "|")
	return strings.Fields(direct), strings.Fields(all)
}

func TestImportRules(t *testing.T) {
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			imports, links := list(t, r.pkg)
			check := func(what string, got, never []string) {
				for _, dep := range got {
					for _, n := range never {
						if dep == n || strings.HasPrefix(dep, n) && (strings.HasSuffix(n, "/") || strings.HasPrefix(dep, n+"/")) {
							t.Errorf("%s %s %s: %s", r.pkg, what, dep, r.reason)
						}
					}
				}
			}
			check("imports", imports, r.imports)
			check("links", links, r.links)
		})
	}
}

package registry

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/jsonschema-go/jsonschema"
)

// registryModule is the MCP registry release whose server.json schema the
// entry must satisfy; its module carries the schema it publishes.
const registryModule = "github.com/modelcontextprotocol/registry@v1.8.9"

// TestServerJSON validates ../server.json against the registry's schema,
// fetched through the Go module proxy (never copied here), and holds its
// version to the changelog's and its remote to this server's transport.
func TestServerJSON(t *testing.T) {
	out, err := exec.Command("go", "mod", "download", "-json", registryModule).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", registryModule, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download: %s", out)
	}
	raw, err := os.ReadFile(filepath.Join(mod.Dir, "docs", "reference", "server-json", "draft", "server.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema jsonschema.Schema
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("registry schema: %v", err)
	}
	resolved, err := schema.Resolve(nil)
	if err != nil {
		t.Fatalf("resolving the registry schema: %v", err)
	}
	doc, err := os.ReadFile("../../../server.json")
	if err != nil {
		t.Fatal(err)
	}
	var entry map[string]any
	if err := json.Unmarshal(doc, &entry); err != nil {
		t.Fatalf("server.json: %v", err)
	}
	if err := resolved.Validate(entry); err != nil {
		t.Fatalf("server.json does not satisfy the registry schema: %v", err)
	}

	changelog, err := os.ReadFile("../../../CHANGELOG.md")
	if err != nil {
		t.Fatal(err)
	}
	if v := entry["version"].(string); !strings.Contains(string(changelog), "## ["+v+"]") {
		t.Errorf("server.json version %s has no section in CHANGELOG.md", v)
	}
	remote := entry["remotes"].([]any)[0].(map[string]any)
	if remote["type"] != "streamable-http" || !strings.HasSuffix(remote["url"].(string), "/mcp") {
		t.Errorf("remote %v: want streamable-http at /mcp, as the server serves", remote)
	}
}

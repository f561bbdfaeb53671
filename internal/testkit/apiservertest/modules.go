package apiservertest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// DownloadModule fetches path@version into the module cache through the
// Go module proxy and returns its directory, failing unless the zip's hash
// is wantSum. It is how CRDs of projects outside go.mod arrive: their main
// module's zip carries the CRD files, and downloading it in an empty
// directory leaves the caller's go.mod and go.sum untouched. Offline the
// test is skipped, unless CI is set.
func DownloadModule(t testing.TB, path, version, wantSum string) string {
	t.Helper()
	info := goModDownload(t, t.TempDir(), path+"@"+version)
	if info.Sum != wantSum {
		t.Fatalf("%s@%s has hash %s, want %s", path, version, info.Sum, wantSum)
	}
	return info.Dir
}

// RequiredModule returns the directory of path at the version the current
// module's go.mod requires (go.sum verifies it), downloading it if the
// cache lacks it: the CRDs of a Go dependency (Knative's config/ folders)
// then match the Go code the other tests run. The test must run inside the
// module, as `go test` does.
func RequiredModule(t testing.TB, path string) string {
	t.Helper()
	return goModDownload(t, "", path).Dir
}

// goModDownload runs `go mod download -json arg` in dir ("" for the
// current directory). A failure skips the test, or fails it under CI.
func goModDownload(t testing.TB, dir, arg string) (info struct{ Dir, Sum, Error string }) {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", arg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOFLAGS=")
	out, err := cmd.Output()
	if jerr := json.Unmarshal(out, &info); jerr != nil || err != nil || info.Error != "" || info.Dir == "" {
		why := info.Error
		if why == "" {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				why = strings.TrimSpace(string(exit.Stderr))
			} else {
				why = fmt.Sprint(err, jerr)
			}
		}
		msg := fmt.Sprintf("cannot fetch %s, where the CRDs come from (offline?): %s", arg, why)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return info
}

// splitYAML cuts a YAML stream into documents, dropping those that hold
// only comments.
func splitYAML(stream []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if !blank(doc) {
			docs = append(docs, doc)
		}
	}
}

// blank reports whether a YAML document holds only comments and space.
func blank(doc []byte) bool {
	for line := range strings.SplitSeq(string(doc), "\n") {
		if line = strings.TrimSpace(line); line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/network"

	"github.com/portfolio-mcp/portfolio-mcp/internal/testkit/kobuild"
)

// Environment variables that name images built beforehand (for example by
// ko/build-local.sh in an earlier CI step); when both are set the suite
// does not build.
const (
	serverImageVar = "PORTFOLIO_MCP_SERVER_IMAGE"
	fakesImageVar  = "PORTFOLIO_MCP_FAKES_IMAGE"
)

const enableHint = "integration tests need Docker: start a Docker daemon (apt-get install docker.io; dockerd &) or point DOCKER_HOST at one, then rerun"

// suite is what TestMain prepares once for every test: the images under
// test, the server binary, and a Docker network with the shared fakes.
type suite struct {
	serverImage string
	fakesImage  string
	serverBin   string
	network     *testcontainers.DockerNetwork
	fakes       *fakes
	docker      *testcontainers.DockerClient
	report      *report
}

var (
	env        *suite
	skipReason string
)

// needDocker skips the test when TestMain found no Docker (outside CI).
func needDocker(t *testing.T) *suite {
	t.Helper()
	if env == nil {
		t.Skip(skipReason)
	}
	return env
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	// No registry is reachable: the reaper image cannot be pulled, and the
	// containers' mapped ports are reached on this host.
	setDefault("TESTCONTAINERS_RYUK_DISABLED", "true")
	setDefault("TESTCONTAINERS_HOST_OVERRIDE", "localhost")
	if !testing.Verbose() {
		tclog.SetDefault(tclog.NewNoopLogger())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	if err := dockerHealthy(ctx); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "FAIL: %s (CI is set, so this is a failure, not a skip): %v\n", enableHint, err)
			return 1
		}
		skipReason = enableHint
		fmt.Fprintln(os.Stderr, "SKIP: "+enableHint)
		return m.Run()
	}

	s, cleanup, err := prepare(ctx)
	defer cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: preparing the integration suite:", err)
		return 1
	}
	env = s
	code := m.Run()
	s.report.print()
	return code
}

func setDefault(k, v string) {
	if os.Getenv(k) == "" {
		os.Setenv(k, v)
	}
}

func dockerHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Health(ctx)
}

// prepare builds (or adopts) the images and the server binary, and starts
// the network and the shared fakes. cleanup undoes whatever was done.
func prepare(ctx context.Context) (*suite, func(), error) {
	var undo []func()
	cleanup := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		return nil, cleanup, err
	}
	s := &suite{report: &report{}}

	s.serverImage, s.fakesImage = os.Getenv(serverImageVar), os.Getenv(fakesImageVar)
	if s.serverImage == "" || s.fakesImage == "" {
		start := time.Now()
		if s.serverImage, s.fakesImage, err = buildImages(ctx, root); err != nil {
			return nil, cleanup, err
		}
		s.report.add("images built by ko in %s", time.Since(start).Round(100*time.Millisecond))
	}

	dir, err := os.MkdirTemp("", "portfolio-mcp-it-")
	if err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { os.RemoveAll(dir) })
	s.serverBin = filepath.Join(dir, "portfolio-mcp")
	// As ko.yaml builds it, so this shares ko's build cache and is the
	// same program as the image's.
	ko, err := kobuild.Load("portfolio-mcp")
	if err != nil {
		return nil, cleanup, err
	}
	if out, err := ko.Command(ctx, "./cmd/portfolio-mcp", s.serverBin).CombinedOutput(); err != nil {
		return nil, cleanup, fmt.Errorf("go build ./cmd/portfolio-mcp: %v\n%s", err, out)
	}

	if s.docker, err = testcontainers.NewDockerClientWithOpts(ctx); err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { s.docker.Close() })
	for _, img := range []string{s.serverImage, s.fakesImage} {
		info, err := s.docker.ImageInspect(ctx, img)
		if err != nil {
			return nil, cleanup, fmt.Errorf("image %s is not in the local daemon (no registry is reachable to pull it): %w", img, err)
		}
		s.report.add("image %s: %.1f MB", img, float64(info.Size)/1e6)
	}

	if s.network, err = network.New(ctx); err != nil {
		return nil, cleanup, fmt.Errorf("docker network: %w", err)
	}
	undo = append(undo, func() { s.network.Remove(context.Background()) })
	if s.fakes, err = startFakes(ctx, s, s.network, ""); err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { testcontainers.TerminateContainer(s.fakes.c) })
	return s, cleanup, nil
}

// buildImages runs ko/build-local.sh, which prints the two references ko
// loaded into the daemon.
func buildImages(ctx context.Context, root string) (server, fakes string, err error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "ko", "build-local.sh"))
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("ko/build-local.sh: %v\n%s", err, stderr.String())
	}
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		ref := strings.TrimSpace(sc.Text())
		switch {
		case strings.Contains(ref, "/portfolio-mcp:"):
			server = ref
		case strings.Contains(ref, "/fakebackends:"):
			fakes = ref
		}
	}
	if server == "" || fakes == "" {
		return "", "", errors.New("ko/build-local.sh did not print both image references:\n" + stdout.String())
	}
	return server, fakes, nil
}

// report collects the measurements the suite prints at the end (image
// sizes, time to ready); they are reported, never asserted.
type report struct {
	lines []string
}

func (r *report) add(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func (r *report) print() {
	for _, l := range r.lines {
		fmt.Println("integration:", l)
	}
}

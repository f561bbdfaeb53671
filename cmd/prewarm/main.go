// Command prewarm keeps a Knative Service warm for the trading session: from
// -before ahead of each regular session's open until -after past its close,
// or with -hold only until that long after the open (NYSE calendar:
// weekends, holidays and early closes), it raises
// autoscaling.knative.dev/min-scale on the Revisions serving the Service's
// traffic, and outside that window it restores their declared value. It is
// idempotent and meant to run as a CronJob every few minutes (see
// knative/prewarm.yaml), or with -interval as a small controller.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientset "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/portfolio-mcp/portfolio-mcp/internal/prewarm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "prewarm:", err)
		}
		os.Exit(1)
	}
}

// run parses flags and reconciles once, or every -interval until ctx ends.
// A nil client is built from -kubeconfig or the in-cluster config.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, client clientset.Interface) error {
	fs := flag.NewFlagSet("prewarm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	namespace := fs.String("namespace", "portfolio-mcp", "namespace of the Services")
	services := fs.String("services", "portfolio-mcp-live", "comma-separated Knative Service names")
	var sched prewarm.Schedule
	sched.Register(fs)
	holidays := fs.String("holidays", "", "extra exchange holidays, comma-separated YYYY-MM-DD")
	earlyCloses := fs.String("early-closes", "", "extra early closes, comma-separated YYYY-MM-DD=HH:MM")
	interval := fs.Duration("interval", 0, "reconcile every interval until stopped (0: once, for a CronJob)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	dryRun := fs.Bool("dry-run", false, "print the patches instead of applying them")
	nowFlag := fs.String("now", "", "pretend it is this RFC 3339 instant (what-if; default: the clock)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := sched.Validate(); err != nil {
		return err
	}
	cal, err := calendar.NYSEFromLists(*holidays, *earlyCloses)
	if err != nil {
		return err
	}
	clock := time.Now
	if *nowFlag != "" {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			return fmt.Errorf("-now: %w", err)
		}
		clock = func() time.Time { return t }
	}
	if client == nil {
		cfg, err := restConfig(*kubeconfig)
		if err != nil {
			return err
		}
		if client, err = clientset.NewForConfig(cfg); err != nil {
			return err
		}
	}
	p := &prewarmer{
		client: client, namespace: *namespace, services: splitList(*services), cal: cal,
		sched: sched, dryRun: *dryRun, out: stdout,
	}
	if len(p.services) == 0 {
		return errors.New("-services is empty")
	}
	for {
		now := clock()
		state := "cold"
		if p.warmAt(now) {
			state = fmt.Sprintf("warm (min-scale %d)", p.sched.MinScale)
		}
		fmt.Fprintf(stdout, "%s: %s\n", now.In(cal.Location()).Format(time.RFC3339), state)
		if err := p.reconcile(ctx, now); err != nil {
			if *interval == 0 {
				return err
			}
			fmt.Fprintln(stderr, "prewarm:", err) // a controller retries next round
		}
		if *interval == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

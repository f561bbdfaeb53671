package observability

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/portfolio-mcp/portfolio-mcp/internal/tooling/dashboard/promnames"
)

const (
	ruleFile      = "prometheusrule.yaml"
	rulesTestFile = "tests/rules_test.yaml"
	// rulesFileName is the name tests/rules_test.yaml gives the rules file
	// (its rule_files); the test writes the PrometheusRule's spec there.
	rulesFileName = "portfolio-mcp.rules.yaml"
	runbookDir    = "../../docs/runbooks"
	runbookURL    = "https://github.com/portfolio-mcp/portfolio-mcp/blob/main/docs/runbooks/"
	knativeDir    = ".."
)

// severities are the values Alertmanager routes on: critical pages,
// warning goes to the team's channel.
var severities = []string{"critical", "warning"}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadRule(t *testing.T) *promnames.PrometheusRule {
	t.Helper()
	pr, err := promnames.ParsePrometheusRule(readFile(t, ruleFile))
	if err != nil {
		t.Fatalf("%s: %v", ruleFile, err)
	}
	return pr
}

// alerts returns the alerting rules by name (an alert may have several
// rules, e.g. one per burn window).
func alerts(t *testing.T) map[string][]promnames.Rule {
	t.Helper()
	out := map[string][]promnames.Rule{}
	for _, r := range loadRule(t).Rules() {
		if r.Alert != "" {
			out[r.Alert] = append(out[r.Alert], r)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no alerts", ruleFile)
	}
	return out
}

// rulesSpec is the PrometheusRule's spec as a Prometheus rules file, every
// field kept as written.
func rulesSpec(t *testing.T) []byte {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal(readFile(t, ruleFile), &obj); err != nil {
		t.Fatal(err)
	}
	spec, ok := obj["spec"]
	if !ok {
		t.Fatalf("%s has no spec", ruleFile)
	}
	b, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// promtool finds the promtool binary. Without it the test is skipped with
// a line saying how to get it, unless CI is set, where that is a failure.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found; CI must install it (apt-get install prometheus)")
		}
		t.Skip("promtool not found: install it (apt-get install prometheus) or run bash scripts/test.sh")
	}
	return p
}

// runPromtool writes spec as the rules file next to a copy of the rules'
// unit tests and runs `promtool check rules` and `promtool test rules`.
func runPromtool(t *testing.T, bin string, spec []byte) (check, test []byte, checkErr, testErr error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, rulesFileName), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yaml"), readFile(t, rulesTestFile), 0o644); err != nil {
		t.Fatal(err)
	}
	c := exec.Command(bin, "check", "rules", rulesFileName)
	c.Dir = dir
	check, checkErr = c.CombinedOutput()
	c = exec.Command(bin, "test", "rules", "rules_test.yaml")
	c.Dir = dir
	test, testErr = c.CombinedOutput()
	return check, test, checkErr, testErr
}

// TestRulesPassPromtool runs promtool's syntax and lint check and the unit
// tests of tests/rules_test.yaml on the PrometheusRule's spec; then shows
// that the unit tests notice an alert going missing.
func TestRulesPassPromtool(t *testing.T) {
	bin := promtool(t)
	spec := rulesSpec(t)
	check, test, checkErr, testErr := runPromtool(t, bin, spec)
	if checkErr != nil {
		t.Errorf("promtool check rules: %v\n%s", checkErr, check)
	}
	if testErr != nil {
		t.Errorf("promtool test rules: %v\n%s", testErr, test)
	}

	// Mutation: without MetricsScrapeFailing the tests must fail.
	var rf struct {
		Groups []map[string]any `json:"groups"`
	}
	if err := yaml.Unmarshal(spec, &rf); err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		rules, _ := g["rules"].([]any)
		g["rules"] = slices.DeleteFunc(rules, func(r any) bool {
			m, _ := r.(map[string]any)
			return m["alert"] == "MetricsScrapeFailing"
		})
	}
	mutated, err := yaml.Marshal(rf)
	if err != nil {
		t.Fatal(err)
	}
	if _, test, _, testErr := runPromtool(t, bin, mutated); testErr == nil || !bytes.Contains(test, []byte("MetricsScrapeFailing")) {
		t.Errorf("the unit tests pass without the MetricsScrapeFailing alert: %v\n%s", testErr, test)
	}
}

// promtoolTests is the part of a promtool test file the checks read.
type promtoolTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			EvalTime  string `json:"eval_time"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestEveryAlertIsTested: each alert has a unit test where it fires and one
// where it must stay quiet, and the tests name no alert that does not exist.
func TestEveryAlertIsTested(t *testing.T) {
	var tests promtoolTests
	if err := yaml.Unmarshal(readFile(t, rulesTestFile), &tests); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tests.RuleFiles, []string{rulesFileName}) {
		t.Errorf("%s reads rule files %q, want [%s] (the name the test writes the spec to)", rulesTestFile, tests.RuleFiles, rulesFileName)
	}
	all := alerts(t)
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if _, ok := all[a.Alertname]; !ok {
				t.Errorf("%s tests %q, which is not an alert of %s", rulesTestFile, a.Alertname, ruleFile)
			}
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for name := range all {
		if !fires[name] {
			t.Errorf("no unit test makes %s fire", name)
		}
		if !quiet[name] {
			t.Errorf("no unit test checks that %s stays quiet", name)
		}
	}
}

// runbookSections are the headings every runbook has, in this order.
var runbookSections = []string{"## What it means for users", "## Confirm", "## Likely causes", "## What to do", "## Escalate"}

// TestEveryAlertHasARunbook: every alert has a severity, a summary, a
// description and a runbook_url naming docs/runbooks/<alert>.md, which
// exists and has the standard sections; every runbook belongs to an alert
// and is indexed by docs/runbooks/README.md.
func TestEveryAlertHasARunbook(t *testing.T) {
	all := alerts(t)
	for name, rules := range all {
		for _, r := range rules {
			if !slices.Contains(severities, r.Labels["severity"]) {
				t.Errorf("%s: severity %q, want one of %q", name, r.Labels["severity"], severities)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s has no %s", name, a)
				}
			}
			if want := runbookURL + name + ".md"; r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", name, r.Annotations["runbook_url"], want)
			}
		}
		b, err := os.ReadFile(filepath.Join(runbookDir, name+".md"))
		if err != nil {
			t.Errorf("%s: no runbook: %v", name, err)
			continue
		}
		at := 0
		for _, s := range runbookSections {
			i := bytes.Index(b[at:], []byte("\n"+s+"\n"))
			if i < 0 {
				t.Errorf("docs/runbooks/%s.md lacks the section %q (in the order %q)", name, s, runbookSections)
				continue
			}
			at += i + 1
		}
		if !bytes.HasPrefix(b, []byte("# "+name+"\n")) {
			t.Errorf("docs/runbooks/%s.md does not start with the heading # %s", name, name)
		}
	}

	entries, err := os.ReadDir(runbookDir)
	if err != nil {
		t.Fatal(err)
	}
	index := string(readFile(t, filepath.Join(runbookDir, "README.md")))
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".md")
		if !ok || name == "README" {
			continue
		}
		if _, ok := all[name]; !ok {
			t.Errorf("docs/runbooks/%s belongs to no alert of %s", e.Name(), ruleFile)
		}
		if !strings.Contains(index, "("+e.Name()+")") {
			t.Errorf("docs/runbooks/README.md does not link %s", e.Name())
		}
	}
}

// kustomization is the part of the Kustomization file the checks read.
type kustomization struct {
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name      string   `json:"name"`
		Namespace string   `json:"namespace"`
		Files     []string `json:"files"`
		Options   struct {
			DisableNameSuffixHash bool              `json:"disableNameSuffixHash"`
			Labels                map[string]string `json:"labels"`
		} `json:"options"`
	} `json:"configMapGenerator"`
}

// TestKustomization: the Kustomization lists every manifest of this
// folder, and generates the Grafana sidecar's ConfigMap from dashboard.json
// under a stable name; knative/Kustomization does not include this folder,
// so the deployment stays free of the Prometheus Operator's CRDs.
func TestKustomization(t *testing.T) {
	var k kustomization
	if err := yaml.UnmarshalStrict(stripAPIFields(t, readFile(t, "Kustomization")), &k); err != nil {
		t.Fatalf("Kustomization: %v", err)
	}
	manifests, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(manifests)
	if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, manifests) {
		t.Errorf("Kustomization resources %q, want every manifest here: %q", got, manifests)
	}
	if len(k.ConfigMapGenerator) != 1 {
		t.Fatalf("%d ConfigMap generators, want the dashboard's", len(k.ConfigMapGenerator))
	}
	g := k.ConfigMapGenerator[0]
	if g.Options.Labels["grafana_dashboard"] != "1" || !g.Options.DisableNameSuffixHash || g.Namespace != "monitoring" {
		t.Errorf("dashboard ConfigMap %+v: want label grafana_dashboard=\"1\", no name suffix, namespace monitoring", g)
	}
	if !slices.Contains(g.Files, "portfolio-mcp.json=dashboard.json") {
		t.Errorf("dashboard ConfigMap files %q, want portfolio-mcp.json=dashboard.json", g.Files)
	}
	dash := readFile(t, "dashboard.json")
	var d struct {
		UID string `json:"uid"`
	}
	if err := json.Unmarshal(dash, &d); err != nil || d.UID != "portfolio-mcp" {
		t.Errorf("dashboard.json: uid %q, %v", d.UID, err)
	}
	// kubectl's client-side apply keeps the object in an annotation of at
	// most 256 KiB.
	if len(dash) > 200<<10 {
		t.Errorf("dashboard.json is %d bytes: too close to the 256 KiB annotation limit of kubectl apply", len(dash))
	}

	parent := string(readFile(t, filepath.Join(knativeDir, "Kustomization")))
	if strings.Contains(parent, "observability") {
		t.Error("knative/Kustomization includes the observability pack; it must stay optional")
	}
}

// stripAPIFields drops apiVersion and kind, which the struct above does
// not model, so that strict decoding checks the rest.
func stripAPIFields(t *testing.T, b []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["kind"] != "Kustomization" || m["apiVersion"] != "kustomize.config.k8s.io/v1beta1" {
		t.Errorf("Kustomization: kind %v, apiVersion %v", m["kind"], m["apiVersion"])
	}
	delete(m, "kind")
	delete(m, "apiVersion")
	out, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMaxScaleRecordMatchesTheServices: Prometheus cannot read the
// max-scale annotation, so the PrometheusRule records it; the record must
// equal knative/service-*.yaml for every Service.
func TestMaxScaleRecordMatchesTheServices(t *testing.T) {
	recorded := map[string]int{}
	vector := regexp.MustCompile(`^vector\((\d+)\)$`)
	for _, r := range loadRule(t).Rules() {
		if r.Record != "kn_service_name:autoscaling_max_scale:pods" {
			continue
		}
		m := vector.FindStringSubmatch(strings.TrimSpace(r.Expr))
		if m == nil {
			t.Errorf("max-scale record %q is not vector(N)", r.Expr)
			continue
		}
		recorded[r.Labels["kn_service_name"]], _ = strconv.Atoi(m[1])
	}
	svcs := serverServices(t)
	for _, svc := range svcs {
		v := svc.Spec.Template.Annotations["autoscaling.knative.dev/max-scale"]
		want, err := strconv.Atoi(v)
		if err != nil {
			t.Errorf("%s: max-scale %q: %v", svc.Name, v, err)
			continue
		}
		if got, ok := recorded[svc.Name]; !ok || got != want {
			t.Errorf("%s: max-scale %d in the manifest, %d (recorded: %v) in %s", svc.Name, want, got, ok, ruleFile)
		}
		delete(recorded, svc.Name)
	}
	for name := range recorded {
		t.Errorf("%s records max-scale for %s, which is not a Service here", ruleFile, name)
	}
}

// TestApprovalAlertLeavesTimeToDecide: ApprovalsExpiringUnattended fires at
// least 5 minutes before APPROVAL_TTL of every Service expires the order,
// and its text names that TTL.
func TestApprovalAlertLeavesTimeToDecide(t *testing.T) {
	rules := alerts(t)["ApprovalsExpiringUnattended"]
	if len(rules) != 1 {
		t.Fatalf("%d ApprovalsExpiringUnattended rules", len(rules))
	}
	m := regexp.MustCompile(`approvals_oldest_pending_age_seconds\{[^}]*\}\) > (\d+)\s*$`).FindStringSubmatch(rules[0].Expr)
	if m == nil {
		t.Fatalf("cannot read the threshold of %q", rules[0].Expr)
	}
	secs, _ := strconv.Atoi(m[1])
	threshold := time.Duration(secs) * time.Second
	for _, svc := range serverServices(t) {
		ttl := time.Duration(0)
		for _, e := range svc.Spec.Template.Spec.GetContainer().Env {
			if e.Name == "APPROVAL_TTL" {
				d, err := time.ParseDuration(e.Value)
				if err != nil {
					t.Fatalf("%s: APPROVAL_TTL %q: %v", svc.Name, e.Value, err)
				}
				ttl = d
			}
		}
		if ttl == 0 {
			ttl = 30 * time.Minute // config's default
		}
		if ttl-threshold < 5*time.Minute {
			t.Errorf("%s: the alert fires at %s, %s before APPROVAL_TTL (%s) expires the order; leave an approver at least 5m", svc.Name, threshold, ttl-threshold, ttl)
		}
		ttlText := ttl.String()
		switch {
		case ttl%time.Hour == 0:
			ttlText = strconv.Itoa(int(ttl/time.Hour)) + "h"
		case ttl%time.Minute == 0:
			ttlText = strconv.Itoa(int(ttl/time.Minute)) + "m"
		}
		for _, a := range []string{"summary", "description"} {
			if !strings.Contains(rules[0].Annotations[a], ttlText) {
				t.Errorf("the alert's %s does not name APPROVAL_TTL %s of %s", a, ttlText, svc.Name)
			}
		}
	}
}

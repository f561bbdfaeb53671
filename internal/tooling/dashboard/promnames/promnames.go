// Package promnames finds the metric names that PromQL expressions refer
// to, and the expressions in the places this project writes them: the
// PrometheusRule, the Grafana dashboard and Markdown documentation. It is
// what keeps those honest: a test (internal/app/observability_names_test.go)
// compares the names with what a running server exports.
//
// It is a scanner, not a PromQL parser: it drops string literals, label
// matchers, range and subquery brackets, Grafana variables and the label
// lists of by/without/on/ignoring/group_left/group_right, then keeps the
// identifiers that are neither functions (followed by a parenthesis) nor
// keywords. That is exact for the expressions this project writes, which
// its tests hold it to.
package promnames

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

var (
	// Grafana's template variables: $var, ${var}, ${var:regex}, $__rate_interval.
	grafanaVar = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z0-9_]+`)
	// label_values(selector, label) and friends (Grafana variable queries):
	// the last argument is a label, not a metric.
	labelValues = regexp.MustCompile(`\blabel_values\(([^,()]*(?:\{[^}]*\})?),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)`)
	// The label lists of grouping and vector-matching modifiers.
	grouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	// Tokens: a number or duration (skipped), or an identifier.
	token = regexp.MustCompile(`[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*`)
)

// keywords are PromQL words that are not metric names where they stand
// without a following parenthesis.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "stddev": true, "stdvar": true,
	"group": true, "topk": true, "bottomk": true, "quantile": true, "count_values": true,
	"limitk": true, "limit_ratio": true, "Inf": true, "inf": true, "NaN": true, "nan": true,
	"start": true, "end": true, "step": true,
}

// Names returns the metric names expr refers to, sorted and without
// duplicates. Recording rule names (with colons) are metric names too.
func Names(expr string) []string {
	s := stripStrings(expr)
	s = grafanaVar.ReplaceAllString(s, " ")
	s = labelValues.ReplaceAllString(s, "$1")
	s = stripBracketed(s, '{', '}')
	s = stripBracketed(s, '[', ']')
	s = grouping.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range token.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || keywords[tok] {
			continue
		}
		// A label name or JSON field after a dot (jq in documentation) is
		// not a metric.
		if loc[0] > 0 && s[loc[0]-1] == '.' {
			continue
		}
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") {
			continue // a function or an aggregation
		}
		out = append(out, tok)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// stripStrings removes PromQL string literals ("…", '…' with escapes, and
// raw `…`), leaving a space each.
func stripStrings(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '"' && c != '\'' && c != '`' {
			b.WriteByte(c)
			continue
		}
		for i++; i < len(s) && s[i] != c; i++ {
			if s[i] == '\\' && c != '`' {
				i++
			}
		}
		b.WriteByte(' ')
	}
	return b.String()
}

// stripBracketed removes everything between open and close (nesting
// allowed), brackets included.
func stripBracketed(s string, open, close byte) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == open:
			depth++
		case s[i] == close && depth > 0:
			depth--
			if depth == 0 {
				b.WriteByte(' ')
			}
		case depth == 0:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// Rule is one rule of a PrometheusRule or Prometheus rules file.
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name     string `json:"name"`
	Interval string `json:"interval,omitempty"`
	Rules    []Rule `json:"rules"`
}

// PrometheusRule is the part of a monitoring.coreos.com/v1 PrometheusRule
// the checks read; its spec is a Prometheus rules file.
type PrometheusRule struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		Groups []RuleGroup `json:"groups"`
	} `json:"spec"`
}

// ParsePrometheusRule reads a PrometheusRule manifest.
func ParsePrometheusRule(b []byte) (*PrometheusRule, error) {
	var pr PrometheusRule
	if err := yaml.Unmarshal(b, &pr); err != nil {
		return nil, err
	}
	if pr.Kind != "PrometheusRule" {
		return nil, fmt.Errorf("kind %q, want PrometheusRule", pr.Kind)
	}
	return &pr, nil
}

// Rules lists every rule of every group.
func (pr *PrometheusRule) Rules() []Rule {
	var out []Rule
	for _, g := range pr.Spec.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// DashboardExprs returns every PromQL expression of a Grafana dashboard
// JSON model: the targets' expr at any depth (rows included) and the
// queries of the query variables.
func DashboardExprs(b []byte) ([]string, error) {
	var d struct {
		Templating struct {
			List []struct {
				Type       string `json:"type"`
				Query      any    `json:"query"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	var out []string
	var walk func(any, string)
	walk = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if k != "templating" {
					walk(e, k)
				}
			}
		case []any:
			for _, e := range x {
				walk(e, key)
			}
		case string:
			if key == "expr" && strings.TrimSpace(x) != "" {
				out = append(out, x)
			}
		}
	}
	walk(v, "")
	for _, tv := range d.Templating.List {
		if tv.Type != "query" {
			continue
		}
		switch q := tv.Query.(type) {
		case string:
			out = append(out, q)
		case map[string]any:
			if s, ok := q["query"].(string); ok {
				out = append(out, s)
			}
		}
		if tv.Definition != "" {
			out = append(out, tv.Definition)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// inlineExpr is inline code that reads as a PromQL expression: a selector
// (name, optionally with matchers and a range) or a call of a function or
// aggregation PromQL users write in prose.
var inlineExpr = regexp.MustCompile("^(?:[a-z_:][a-z0-9_:]*(?:\\{[^}]*\\})?(?:\\[[0-9a-z]+\\])?|(?:rate|irate|increase|sum|max|min|avg|count|histogram_quantile|max_over_time|min_over_time|changes|delta|deriv|absent|topk)\\b.*\\(.*\\))$")

// metricSuffix marks a bare name in prose as a metric (label values such as
// tool_error or queue_full must not count).
var metricSuffix = regexp.MustCompile(`^[a-z][a-z0-9]*_[a-z0-9_:]*_?(total|seconds|bucket|count|sum|bytes|info)$`)

var codeSpan = regexp.MustCompile("`([^`\n]+)`")

// MarkdownExprs returns the PromQL a Markdown document writes:
//   - every fenced code block marked promql;
//   - in a table whose first header cell is "metric" (or starts with it),
//     the inline code of each row's first cell;
//   - elsewhere, inline code that reads as PromQL and is clearly a metric:
//     with matchers or a call (`rate(mcp_tool_calls_total[5m])`,
//     `audit_events_total{mode="sync"}`), or a bare name with a metric
//     suffix (`backend_retries_total`). Bare names without one, and label
//     values, are not metrics to this reader.
func MarkdownExprs(b []byte) []string {
	var out []string
	var fence strings.Builder
	inFence, promqlFence := false, false
	metricTable, inTable := false, false
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			if inFence {
				if promqlFence {
					out = append(out, fence.String())
				}
				inFence, promqlFence = false, false
				fence.Reset()
				continue
			}
			inFence, promqlFence = true, strings.TrimPrefix(trimmed, "```") == "promql"
			continue
		}
		if inFence {
			if promqlFence {
				fence.WriteString(line + "\n")
			}
			continue
		}
		isRow := strings.HasPrefix(trimmed, "|")
		if !isRow {
			inTable, metricTable = false, false
		}
		if isRow {
			cells := strings.Split(strings.Trim(trimmed, "|"), "|")
			first := strings.ToLower(strings.Trim(strings.TrimSpace(cells[0]), "`*"))
			switch {
			case !inTable:
				inTable, metricTable = true, strings.HasPrefix(first, "metric")
				continue
			case strings.Trim(first, "-: ") == "":
				continue // the separator row
			case metricTable:
				for _, m := range codeSpan.FindAllStringSubmatch(cells[0], -1) {
					if inlineExpr.MatchString(m[1]) {
						out = append(out, m[1])
					}
				}
				line = strings.Join(cells[1:], "|")
			}
		}
		for _, m := range codeSpan.FindAllStringSubmatch(line, -1) {
			e := m[1]
			if inlineExpr.MatchString(e) && (strings.ContainsAny(e, "{(") || metricSuffix.MatchString(e)) {
				out = append(out, e)
			}
		}
	}
	return out
}

// Family maps a name used in an expression to the metric family that
// exports it: the name itself if a family has it, else a histogram's or
// summary's family for the _bucket, _sum and _count series.
func Family(name string, families map[string]string) (string, bool) {
	if _, ok := families[name]; ok {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch families[base] {
		case "histogram", "summary":
			if suffix != "_bucket" || families[base] == "histogram" {
				return base, true
			}
		}
	}
	return "", false
}

// Families reads the metric families (name → type) of a Prometheus text
// exposition: its # TYPE lines.
func Families(exposition []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(exposition))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

// KnativeSeries are the Knative Serving series the rules, the dashboard
// and the documentation use, by Prometheus name, with the OpenTelemetry
// instrument each comes from in knative.dev/serving v0.50 (Knative 1.23).
// Knative exports them itself (autoscaler and activator: metrics-protocol:
// prometheus; queue-proxy: request-metrics-protocol: prometheus), so a
// portfolio-mcp server never does; the name checks exempt them, and
// knative/observability's tests find each instrument in Knative's source.
// The Prometheus exporter turns the dots into underscores and appends the
// unit (s: _seconds); the {pod}-style units are annotations and add nothing.
var KnativeSeries = map[string]string{
	"kn_revision_pods_count":                 "kn.revision.pods.count",
	"kn_revision_pods_desired":               "kn.revision.pods.desired",
	"kn_revision_pods_requested":             "kn.revision.pods.requested",
	"kn_revision_pods_not_ready_count":       "kn.revision.pods.not_ready.count",
	"kn_revision_pods_pending_count":         "kn.revision.pods.pending.count",
	"kn_revision_panic_mode":                 "kn.revision.panic.mode",
	"kn_revision_concurrency_stable":         "kn.revision.concurrency.stable",
	"kn_revision_request_queued":             "kn.revision.request.queued",
	"kn_revision_request_active":             "kn.revision.request.active",
	"kn_serving_invocation_duration_seconds": "kn.serving.invocation.duration",
	"kn_serving_queue_depth":                 "kn.serving.queue.depth",
}

// PrometheusSeries are series Prometheus itself makes for every target.
var PrometheusSeries = map[string]bool{"up": true}

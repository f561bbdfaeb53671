package promnames

import (
	"slices"
	"testing"
)

func TestNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`sum by (namespace, knative_service) (rate(mcp_tool_calls_total{job="portfolio-mcp",outcome!~"denied|rate_limited"}[5m]))`,
			[]string{"mcp_tool_calls_total"}},
		{`histogram_quantile(0.99, sum by (le, service) (rate(backend_request_duration_seconds_bucket{job="portfolio-mcp",knative_service=~"$service"}[$__rate_interval])))`,
			[]string{"backend_request_duration_seconds_bucket"}},
		{`1 - (sum(rate(x_bucket{le=~"1(\\.0)?"}[1h])) / sum(rate(x_count[1h])))`, []string{"x_bucket", "x_count"}},
		{"knative_service:mcp_tool_calls_failed:ratio_rate5m > (14.4 * 0.005) and knative_service:mcp_tool_calls_failed:ratio_rate1h > 1e-3",
			[]string{"knative_service:mcp_tool_calls_failed:ratio_rate1h", "knative_service:mcp_tool_calls_failed:ratio_rate5m"}},
		{`max by (a, b) (kn_revision_pods_desired{k8s_namespace_name="portfolio-mcp"}) >= on (kn_service_name) group_left () kn_service_name:autoscaling_max_scale:pods`,
			[]string{"kn_revision_pods_desired", "kn_service_name:autoscaling_max_scale:pods"}},
		{`(a_total unless a_total offset 10m) or increase(a_total[10m])`, []string{"a_total"}},
		{`count by (knative_service) (max_over_time(process_start_time_seconds{job="x"}[1h]) > time() - 3600)`, []string{"process_start_time_seconds"}},
		{`label_values(portfolio_mcp_build_info{job="portfolio-mcp"}, knative_service)`, []string{"portfolio_mcp_build_info"}},
		{`sum(rate(y_total[${__rate_interval}])) by (tool) / vector(0.005)`, []string{"y_total"}},
		{`max(up{job="a"} == bool 0)`, []string{"up"}},
		{`sum without (pod) (z) / ignoring (le) group_right (tool) w`, []string{"w", "z"}},
		{"rate(raw_total{a=`x}y`}[5m])", []string{"raw_total"}},
	}
	for _, c := range cases {
		if got := Names(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("Names(%s) = %q, want %q", c.expr, got, c.want)
		}
	}
}

func TestMarkdownExprs(t *testing.T) {
	doc := "# Title\n\n" +
		"Count `audit_events_total{mode=\"sync\"}` and `backend_retries_total`; not `tool_error`, `request_id`, `queue_full`, `_seconds` or `approvals_pending` in prose.\n\n" +
		"| metric | labels |\n|---|---|\n| `approvals_pending` | none |\n| `kn_revision_pods_count` | `kn_service_name` |\n\n" +
		"| outcome | meaning |\n|---|---|\n| `tool_error` | the tool said isError |\n\n" +
		"```promql\nrate(mcp_tool_calls_total[5m])\n```\n\n" +
		"```sh\nkubectl logs | jq 'select(.trace_id==\"x\")'\n```\n" +
		"and `select(.request_id==\"y\")` is jq.\n"
	got := MarkdownExprs([]byte(doc))
	var names []string
	for _, e := range got {
		names = append(names, Names(e)...)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	want := []string{"approvals_pending", "audit_events_total", "backend_retries_total", "kn_revision_pods_count", "mcp_tool_calls_total"}
	if !slices.Equal(names, want) {
		t.Errorf("names in the Markdown = %q, want %q (expressions %q)", names, want, got)
	}
}

func TestDashboardExprs(t *testing.T) {
	b := []byte(`{"panels":[{"type":"row","panels":[{"targets":[{"expr":"a_total"}]}]},{"targets":[{"expr":"b"},{"expr":""}]}],
	"templating":{"list":[{"type":"query","query":{"query":"label_values(c, l)","refId":"x"},"definition":"label_values(c, l)"},{"type":"datasource","query":"prometheus"}]}}`)
	got, err := DashboardExprs(b)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range got {
		names = append(names, Names(e)...)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	// "prometheus" is the datasource variable's plugin type, not a query.
	if want := []string{"a_total", "b", "c"}; !slices.Equal(names, want) {
		t.Errorf("names = %q, want %q", names, want)
	}
}

func TestFamily(t *testing.T) {
	fams := Families([]byte("# HELP a_seconds x\n# TYPE a_seconds histogram\n# TYPE kn_revision_pods_not_ready_count gauge\n# TYPE s summary\n"))
	for name, want := range map[string]string{
		"a_seconds_bucket": "a_seconds", "a_seconds_count": "a_seconds", "a_seconds": "a_seconds",
		"kn_revision_pods_not_ready_count": "kn_revision_pods_not_ready_count", "s_sum": "s",
	} {
		if got, ok := Family(name, fams); !ok || got != want {
			t.Errorf("Family(%s) = %q, %v, want %q", name, got, ok, want)
		}
	}
	for _, name := range []string{"s_bucket", "missing_total", "kn_revision_pods_not_ready"} {
		if got, ok := Family(name, fams); ok {
			t.Errorf("Family(%s) = %q, want none", name, got)
		}
	}
}

package app_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/audittest"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/audit/verify"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading"
)

// TestTamperEvidentAuditTrail runs two real servers, as two replicas
// would: one delivering its audit events to a CloudEvents sink (the
// archive, checkpointing every 3 events), one without a sink (its trail is
// its log). Agents read, are denied, and place an order; the servers
// drain. The archive's dump and the log, interleaved, verify as two sealed
// streams. Then the archive is tampered with as someone who can write to
// it but does not hold the signing key would, and the verifier catches
// each change, and a key that is not the one that signed.
func TestTamperEvidentAuditTrail(t *testing.T) {
	secret, public := audittest.Key(t, "2026-07")
	_, wrongKey := audittest.Key(t, "2026-07")
	t.Setenv("SECRET_AUDIT_SIGNING_KEY", secret)
	srv, iss, sink := auditedServer(t, map[string]string{"AUDIT_CHECKPOINT_EVENTS": "3"})
	var logs lockedBuffer
	env := tradingEnv(iss, "")
	replica, stopReplica := serveWithLog(t, env, &logs)

	bob := bearer(iss.Token(t, iss.Claims("bob", secResource, allScopes, "ACC-1001")))
	for _, base := range []string{srv.URL, replica} {
		cs := connect(t, base+"/mcp", "2025-11-25", bob)
		var accts struct{ Accounts []backends.Account }
		callTool(t, cs, "list_accounts", nil, &accts)
		var pv backends.PortfolioValuation
		callTool(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1001"}, &pv)
		callToolError(t, cs, "get_portfolio", map[string]any{"account_id": "ACC-1002"}) // denied
		var qs backends.QuoteSet
		callTool(t, cs, "get_quotes", map[string]any{"tickers": []string{"KO"}}, &qs)
		var out trading.Outcome
		callTool(t, cs, "place_order", confirmedArgs("ACC-1001", "audit-trail-"+strings.TrimPrefix(base, "http://"), 1), &out)
		if out.Status != backends.StatusFilled {
			t.Fatalf("order: %+v", out)
		}
	}
	if err := srv.stop(); err != nil {
		t.Fatal(err)
	}
	stopReplica()

	archive := archiveDump(t, sink)
	order := seqOf(t, archive, "place_order")
	r := audittest.Verify(t, public, verify.Options{}, archive, []byte(logs.String()))
	if !r.OK() || len(r.Streams) != 2 {
		t.Fatalf("the two replicas' trail does not verify as two streams:\n%s", audittest.Text(r))
	}
	t.Log("\n" + audittest.Text(r))
	for _, s := range r.Streams {
		if !s.Final || s.Sealed != s.Last || s.First != 1 {
			t.Errorf("stream %s: %s; want seq 1.. sealed by its final checkpoint", s.ID, audittest.Text(r))
		}
	}

	lines := audittest.Lines(archive)
	for _, c := range []struct {
		name   string
		export [][]byte
		keys   string
		want   verify.Kind
	}{
		{"deleted: the order's record", audittest.Delete(t, lines, order), public, verify.Gap},
		{"inserted: a forged trade, the chain rebuilt after it", audittest.Insert(t, lines, order), public, verify.BadSignature},
		{"reordered: the order before the call that preceded it", audittest.Reorder(t, lines, order-1, order), public, verify.Reordered},
		{"edited: the order's principal", audittest.Edit(t, lines, order, "principal", "mallory"), public, verify.Edited},
		{"wrong key", lines, wrongKey, verify.BadSignature},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := audittest.Verify(t, c.keys, verify.Options{}, audittest.Join(c.export))
			text := audittest.Text(r)
			t.Log("\n" + text)
			if r.OK() || !strings.Contains(text, " "+string(c.want)+": ") || !strings.Contains(text, "FAIL:") {
				t.Errorf("want a %s problem and FAIL:\n%s", c.want, text)
			}
		})
	}
}

// archiveDump is what an archive subscriber stores of the sink's events:
// each in structured mode, one JSON line each.
func archiveDump(t *testing.T, s *secSink) []byte {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	for _, ev := range s.events {
		line, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	return b.Bytes()
}

// seqOf is the place of the first record of tool in export.
func seqOf(t *testing.T, export []byte, tool string) uint64 {
	t.Helper()
	in := &verify.Input{}
	if err := in.Read(bytes.NewReader(export), "archive"); err != nil {
		t.Fatal(err)
	}
	for _, e := range in.Entries {
		if e.Event.Tool == tool && e.Event.Action == "" {
			return e.Event.Chain.Seq
		}
	}
	t.Fatalf("no %s record in the export", tool)
	return 0
}

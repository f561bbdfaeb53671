package main

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"alice@firm.example":                "alice@firm.example",
		"<!channel>":                        "&lt;!channel&gt;",
		"<https://evil.example|click>":      "&lt;https://evil.example|click&gt;",
		"a & b":                             "a &amp; b",
		"&lt;":                              "&amp;lt;",
		"line one\nline two\r\n\tthree":     "line one line two three",
		"abc\u202edef\u200b":                "abc def",
		"  spaced   out  ":                  "spaced out",
		"\xff<":                             "\ufffd&lt;",
		"*bold* _it_ `code` ~strike~ @here": "*bold* _it_ `code` ~strike~ @here",
	} {
		if got := escape(in, 100); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := escape(strings.Repeat("x", 50), 10); got != strings.Repeat("x", 9)+"…" {
		t.Errorf("escape cut to %q", got)
	}
	// Cut before escaping: an entity is never split.
	if got := escape(strings.Repeat("<", 5), 3); got != "&lt;&lt;…" {
		t.Errorf("escape cut an entity: %q", got)
	}
}

// FuzzEscape: whatever a field holds, the escaped text opens no mrkdwn
// sequence, breaks no line and is valid UTF-8.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"<!channel>", "<https://x|y>", "&amp;", "a\nb", "\u202e", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := escape(s, maxReasonRunes)
		if strings.ContainsAny(got, "<>\n\r") || !utf8.ValidString(got) {
			t.Fatalf("escape(%q) = %q", s, got)
		}
		if n := utf8.RuneCountInString(strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">").Replace(got)); n > maxReasonRunes {
			t.Fatalf("escape(%q) kept %d runes", s, n)
		}
		for i := strings.IndexByte(got, '&'); i >= 0; i = strings.IndexByte(got, '&') {
			rest := got[i:]
			if !strings.HasPrefix(rest, "&amp;") && !strings.HasPrefix(rest, "&lt;") && !strings.HasPrefix(rest, "&gt;") {
				t.Fatalf("escape(%q) = %q: a bare &", s, got)
			}
			got = rest[1:]
		}
	})
}

func TestDecision(t *testing.T) {
	for detail, want := range map[string][2]string{
		"approve: fine":          {"approved", "fine"},
		"reject: too big: sorry": {"rejected", "too big: sorry"},
		"reject: ":               {"rejected", ""},
		"approve":                {"decided", "approve"},
		"":                       {"decided", ""},
		"escalate: why":          {"decided", "escalate: why"},
	} {
		verb, reason := decision(detail)
		if verb != want[0] || reason != want[1] {
			t.Errorf("decision(%q) = %q, %q; want %q, %q", detail, verb, reason, want[0], want[1])
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 14, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{
		"3":                             3 * time.Second,
		" 0 ":                           0,
		"Tue, 24 Nov 2026 14:00:05 GMT": 5 * time.Second,
		"Tue, 24 Nov 2026 13:00:00 GMT": 0, // in the past: retry now
	} {
		if got, ok := retryAfter(h, now); !ok || got != want {
			t.Errorf("retryAfter(%q) = %v %v, want %v", h, got, ok, want)
		}
	}
	for _, h := range []string{"", "-1", "soon", "1.5"} {
		if got, ok := retryAfter(h, now); ok {
			t.Errorf("retryAfter(%q) = %v, want none", h, got)
		}
	}
}

func TestConsoleBase(t *testing.T) {
	for in, want := range map[string]string{
		"https://portfolio-mcp-live.portfolio-mcp.example.com":  "https://portfolio-mcp-live.portfolio-mcp.example.com",
		"https://portfolio-mcp-live.portfolio-mcp.example.com/": "https://portfolio-mcp-live.portfolio-mcp.example.com",
		"https://gateway.example.com/trading/":                  "https://gateway.example.com/trading",
		"http://127.0.0.1:8080":                                 "http://127.0.0.1:8080",
		"http://localhost:8080":                                 "http://localhost:8080",
	} {
		u, err := consoleBase(in)
		if err != nil || u.String() != want {
			t.Errorf("consoleBase(%q) = %v %v, want %s", in, u, err, want)
		}
	}
	for _, in := range []string{
		"", "portfolio-mcp.example.com", "/console", "http://portfolio-mcp.example.com", "ftp://x.example.com",
		"https://user:pw@x.example.com", "https://x.example.com/?a=1", "https://x.example.com/#f",
		"https://x.example.com/a|b", "https://x.example.com/<!channel>", "https://x.example.com/a b",
	} {
		if u, err := consoleBase(in); err == nil {
			t.Errorf("consoleBase(%q) accepted %v", in, u)
		}
	}
}

func TestDefaultWebhookURLFileIsTheTagDefault(t *testing.T) {
	cfg, err := loadConfig(t.Context(), mapEnv{"CONSOLE_URL": consoleURL})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.WebhookURLFile != DefaultWebhookURLFile || cfg.addr() != "127.0.0.1:8080" {
		t.Errorf("defaults: WEBHOOK_URL_FILE %q, listen %s", cfg.WebhookURLFile, cfg.addr())
	}
}

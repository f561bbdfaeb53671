package demo

import (
	"slices"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

func TestListingsWellFormed(t *testing.T) {
	sectors := []string{
		"Information Technology", "Health Care", "Financials",
		"Consumer Discretionary", "Communication Services", "Industrials",
		"Consumer Staples", "Energy", "Utilities", "Real Estate", "Materials",
	}
	if len(listings) < 150 {
		t.Fatalf("len(listings) = %d, want >= 150", len(listings))
	}
	seen := make(map[string]bool, len(listings))
	perSector := make(map[string]int, len(sectors))
	for i, l := range listings {
		if l.Ticker == "" || l.Name == "" {
			t.Errorf("listing %d: empty ticker or name: %+v", i, l)
		}
		if seen[l.Ticker] {
			t.Errorf("duplicate ticker %q", l.Ticker)
		}
		seen[l.Ticker] = true
		if i > 0 && listings[i-1].Ticker >= l.Ticker {
			t.Errorf("tickers not sorted: %q before %q", listings[i-1].Ticker, l.Ticker)
		}
		if !slices.Contains(sectors, l.Sector) {
			t.Errorf("%s: unknown sector %q", l.Ticker, l.Sector)
		}
		perSector[l.Sector]++
		if l.Exchange != "NYSE" && l.Exchange != "NASDAQ" {
			t.Errorf("%s: unknown exchange %q", l.Ticker, l.Exchange)
		}
		if l.Price <= 0 {
			t.Errorf("%s: price %v, want > 0", l.Ticker, l.Price)
		}
		if l.MarketCapBn <= 0 {
			t.Errorf("%s: market cap %v, want > 0", l.Ticker, l.MarketCapBn)
		}
		if l.Beta < 0.2 || l.Beta > 2.5 {
			t.Errorf("%s: beta %v, want in [0.2, 2.5]", l.Ticker, l.Beta)
		}
	}
	for _, s := range sectors {
		if perSector[s] < 5 {
			t.Errorf("sector %q has %d listings, want >= 5", s, perSector[s])
		}
	}
}

// TestIndustries: every listing has its GICS industry, and every lookup
// finds its listing (the binary search relies on the sort order).
func TestIndustries(t *testing.T) {
	for _, l := range listings {
		if l.Industry == "" {
			t.Errorf("%s has no industry", l.Ticker)
		}
		if got, ok := listingOf(l.Ticker); !ok || got != l {
			t.Errorf("listingOf(%q) = %v, %v", l.Ticker, got, ok)
		}
	}
	for _, ticker := range []string{"", "a", "ZZZZ", "BRK"} {
		if listed(ticker) {
			t.Errorf("listed(%q) = true, want false", ticker)
		}
	}
}

// TestSearchFindsWhatPeopleType: a word for a kind of business finds the
// businesses, not only names that happen to contain it.
func TestSearchFindsWhatPeopleType(t *testing.T) {
	b := New(nil)
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"bank", []string{"JPM", "BAC", "WFC", "C"}},
		{"semiconductor", []string{"NVDA", "AVGO", "AMD", "INTC", "QCOM", "TXN"}},
		{"insurance", []string{"AIG"}},
	} {
		page, err := b.SearchEquities(t.Context(), backends.EquityQuery{Text: tc.text, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, e := range page.Equities {
			got[e.Ticker] = true
		}
		for _, w := range tc.want {
			if !got[w] {
				t.Errorf("search %q: %s missing from %d results", tc.text, w, len(page.Equities))
			}
		}
	}
}

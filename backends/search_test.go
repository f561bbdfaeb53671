package backends_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

var universe = []backends.Equity{
	{Ticker: "MA", Name: "Mastercard Incorporated", Sector: "Financials", Exchange: "NYSE", MarketCap: 490e9},
	{Ticker: "MAR", Name: "Marriott International, Inc.", Sector: "Consumer Discretionary", Exchange: "NASDAQ", MarketCap: 78e9},
	{Ticker: "MMC", Name: "Marsh & McLennan Companies, Inc.", Sector: "Financials", Exchange: "NYSE", MarketCap: 110e9},
	{Ticker: "AMAT", Name: "Applied Materials, Inc.", Sector: "Information Technology", Exchange: "NASDAQ", MarketCap: 150e9},
	{Ticker: "EL", Name: "The Estée Lauder Companies Inc.", Sector: "Consumer Staples", Exchange: "NYSE", MarketCap: 30e9},
	{Ticker: "HUM", Name: "Humana Inc.", Sector: "Health Care", Exchange: "NYSE", MarketCap: 30e9},
}

func tickers(p backends.EquityPage) []string {
	var out []string
	for _, e := range p.Equities {
		out = append(out, e.Ticker)
	}
	return out
}

func TestSearchRanking(t *testing.T) {
	tests := []struct {
		q    backends.EquityQuery
		want []string
	}{
		// exact ticker, ticker prefix, name prefix, substring (by market cap within a rank)
		{backends.EquityQuery{Text: "ma"}, []string{"MA", "MAR", "MMC", "AMAT", "HUM"}},
		{backends.EquityQuery{Text: "  MAR "}, []string{"MAR", "MMC"}},
		{backends.EquityQuery{Text: "estée"}, []string{"EL"}},
		{backends.EquityQuery{Text: "ESTÉE"}, []string{"EL"}},
		{backends.EquityQuery{Text: "ma", Sector: "financials"}, []string{"MA", "MMC"}},
		{backends.EquityQuery{Exchange: "nasdaq"}, []string{"AMAT", "MAR"}},
		{backends.EquityQuery{MinMarketCap: 100e9, MaxMarketCap: 200e9}, []string{"AMAT", "MMC"}},
		{backends.EquityQuery{Text: "zzz"}, nil},
	}
	for _, tt := range tests {
		p, err := backends.SearchUniverse(universe, tt.q)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tickers(p), tt.want) || p.Total != len(tt.want) {
			t.Errorf("%+v: got %v (total %d), want %v", tt.q, tickers(p), p.Total, tt.want)
		}
	}
}

func TestSearchPagingAndLimits(t *testing.T) {
	p1, _ := backends.SearchUniverse(universe, backends.EquityQuery{Limit: 4})
	if len(p1.Equities) != 4 || p1.NextCursor == "" {
		t.Fatalf("page 1: %v %q", tickers(p1), p1.NextCursor)
	}
	p2, err := backends.SearchUniverse(universe, backends.EquityQuery{Limit: 4, Cursor: p1.NextCursor})
	if err != nil || len(p2.Equities) != 2 || p2.NextCursor != "" {
		t.Fatalf("page 2: %v %q %v", tickers(p2), p2.NextCursor, err)
	}
	for _, q := range []backends.EquityQuery{
		{Limit: 101}, {Limit: -1}, {Cursor: "garbage"}, {Text: "m", Cursor: p1.NextCursor},
	} {
		if _, err := backends.SearchUniverse(universe, q); !errors.Is(err, backends.ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", q, err)
		}
	}
}

func BenchmarkSearchUniverse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		backends.SearchUniverse(universe, backends.EquityQuery{Text: "in", Limit: 20})
	}
}

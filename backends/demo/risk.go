package demo

import (
	"cmp"
	"context"
	"math"
	"slices"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
)

// varLookback is the number of daily scenarios in historical VaR.
const varLookback = HistoryDays - 1

// RiskSummary implements backends.Risk. VaR is historical simulation: today's
// positions revalued under each of the last varLookback daily returns, and
// the loss at confidence c is the k-th worst scenario with k = ceil(n*(1-c)).
func (b *Backend) RiskSummary(ctx context.Context, accountID string) (backends.RiskSummary, error) {
	v, err := b.GetPortfolio(ctx, accountID)
	if err != nil {
		return backends.RiskSummary{}, err
	}
	rs := backends.RiskSummary{
		AccountID: v.ID, BaseCurrency: v.BaseCurrency, TotalValue: v.TotalValue, AsOf: v.AsOf,
		VaRMethod:      "historical simulation: current positions revalued with each of the last 250 daily returns",
		VaRHorizonDays: 1, VaRLookbackDays: varLookback,
		SectorExposure:    []backends.SectorExposure{},
		TopConcentrations: []backends.Concentration{},
	}

	sectors := map[string]float64{}
	pnl := make([]float64, varLookback)
	var beta float64
	for _, h := range v.Holdings {
		sectors[h.Sector] += h.MarketValue
		l, _ := listingOf(h.Ticker)
		beta += h.Weight * l.Beta
		closes := b.history.closes(h.Ticker)
		for t := range varLookback {
			i := len(closes) - varLookback + t
			pnl[t] += h.MarketValue * (closes[i]/closes[i-1] - 1)
		}
	}
	rs.Beta = math.Round(beta*100) / 100
	for s, mv := range sectors {
		rs.SectorExposure = append(rs.SectorExposure, backends.SectorExposure{Sector: s, MarketValue: round2(mv), Weight: round6(mv / v.TotalValue)})
	}
	slices.SortFunc(rs.SectorExposure, func(x, y backends.SectorExposure) int {
		return cmp.Or(cmp.Compare(y.MarketValue, x.MarketValue), cmp.Compare(x.Sector, y.Sector))
	})
	for _, h := range v.Holdings[:min(5, len(v.Holdings))] {
		rs.TopConcentrations = append(rs.TopConcentrations, backends.Concentration{Ticker: h.Ticker, Name: h.Name, MarketValue: h.MarketValue, Weight: h.Weight})
	}

	slices.Sort(pnl)
	for _, c := range []float64{0.95, 0.99} {
		k := int(math.Ceil(float64(len(pnl))*(1-c) - 1e-9))
		loss := math.Max(0, -pnl[k-1])
		rs.VaR = append(rs.VaR, backends.ValueAtRisk{Confidence: c, Amount: round2(loss), Percent: round2(loss / v.TotalValue * 100)})
	}
	return rs, nil
}

package handlers

import (
	"context"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/backends"
	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/catalog"
)

func (h *handlers) registerRisk(r registrar) {
	addTool(r, catalog.Tool{Class: catalog.Read}, &mcp.Tool{
		Name:  "get_risk_summary",
		Title: "Get risk summary",
		Description: "Risk view of one account: exposure by GICS sector, the five largest positions, value-weighted beta, " +
			"and one-day Value at Risk at 95% and 99% confidence (the method and look-back are named in the output).",
		Annotations: readOnly,
	}, accountSchema(), h.getRiskSummary)
}

func (h *handlers) getRiskSummary(ctx context.Context, _ *mcp.CallToolRequest, in AccountInput) (*mcp.CallToolResult, backends.RiskSummary, error) {
	rs, err := h.Backends.Risk.RiskSummary(ctx, in.AccountID)
	if err != nil {
		return nil, backends.RiskSummary{}, h.toolError(ctx, fmt.Sprintf("account %q", in.AccountID), err)
	}
	return nil, rs, nil
}

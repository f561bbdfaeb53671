package handlers

import (
	"context"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/portfolio-mcp/portfolio-mcp/internal/governance/principal"
)

func (h *handlers) registerPrompts(s *mcp.Server) {
	s.AddPrompt(portfolioReviewPrompt(), h.portfolioReview)
}

// portfolioReviewPrompt is the portfolio_review prompt: registered, and
// read by completion for its arguments.
func portfolioReviewPrompt() *mcp.Prompt {
	return &mcp.Prompt{
		Name:        "portfolio_review",
		Title:       "Portfolio review",
		Description: "Guides a structured review of one account: holdings, risk, market moves and ideas, using this server's tools.",
		Arguments: []*mcp.PromptArgument{{
			Name: "account_id", Description: "the account to review (see list_accounts)", Required: true,
		}},
	}
}

func (h *handlers) portfolioReview(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	id, ok := req.Params.Arguments["account_id"]
	switch {
	case !ok || id == "":
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "portfolio_review needs the argument account_id (an account id from list_accounts, e.g. ACC-1001)"}
	case !principal.ValidAccountID(id):
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("account_id %q is not a valid account id; call list_accounts to find one", id)}
	}
	text := fmt.Sprintf(`Review the portfolio of account %[1]s. Work through these steps with the tools, and cite numbers from their outputs only.

1. Holdings: call get_portfolio with account_id %[1]q. Summarise total value, cash weight, unrealized P&L, and the five largest positions with their weights.
2. Risk: call get_risk_summary for the same account. Report beta, the one-day VaR at 95%% and 99%% (amount and percent, and the method named in the output), the sector exposure, and any single position above 10%% of value.
3. Market: call get_quotes for the ten largest holdings. Note the day's biggest movers and their effect on the account.
4. Ideas: for the most under-weight sectors relative to a diversified benchmark, call search_equities with that sector and a minimum market cap of 10000000000 to list candidates. Do not recommend trades; list candidates for the client's adviser.
5. Conclude with: concentration risks, diversification gaps, and three questions for the client. State the valuation time (as_of) so the reader knows how fresh the data is.`, id)
	return &mcp.GetPromptResult{
		Description: "Portfolio review of account " + id,
		Messages:    []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: text}}},
	}, nil
}

package demo

// accountDef is a demo account: who holds it and what, with average costs
// derived from the simulated history so that P&L looks like a real book.
type accountDef struct {
	ID, Name, Type, Owner string
	Cash                  float64
	Positions             []position
}

type position struct {
	Ticker   string
	Quantity float64
	// CostDaysAgo picks the close the position was (on average) bought at.
	CostDaysAgo int
}

var accounts = []accountDef{
	{
		ID: "ACC-1001", Name: "Growth Equity", Type: "individual", Owner: "Jordan Rivera", Cash: 25_400,
		Positions: []position{
			{"AAPL", 120, 210}, {"MSFT", 80, 180}, {"NVDA", 150, 240}, {"AMZN", 60, 150},
			{"GOOGL", 70, 200}, {"META", 40, 120}, {"TSLA", 25, 90}, {"AVGO", 30, 160},
		},
	},
	{
		ID: "ACC-1002", Name: "Dividend Income", Type: "trust", Owner: "Chen Family Trust", Cash: 41_250,
		Positions: []position{
			{"JNJ", 220, 230}, {"PG", 180, 200}, {"KO", 500, 240}, {"PEP", 160, 190},
			{"XOM", 260, 170}, {"CVX", 140, 150}, {"JPM", 120, 210}, {"VZ", 600, 220},
			{"NEE", 250, 130}, {"DUK", 200, 180}, {"MCD", 60, 100},
		},
	},
	{
		ID: "ACC-1003", Name: "Balanced IRA", Type: "ira", Owner: "Maya Okafor", Cash: 12_800,
		Positions: []position{
			{"AAPL", 40, 120}, {"JPM", 35, 150}, {"UNH", 15, 200}, {"HD", 20, 110},
			{"CAT", 12, 90}, {"LIN", 10, 140}, {"AMT", 25, 160}, {"COST", 8, 60},
			{"V", 30, 130}, {"XOM", 45, 80}, {"NEE", 50, 170}, {"GOOGL", 30, 100},
		},
	},
	{
		ID: "ACC-2001", Name: "Northwind Pension - US Large Cap", Type: "institutional", Owner: "Northwind Pension Fund", Cash: 1_850_000,
		Positions: []position{
			{"AAPL", 9_500, 230}, {"MSFT", 6_200, 230}, {"NVDA", 11_000, 230}, {"AMZN", 7_400, 230},
			{"GOOGL", 6_800, 230}, {"META", 2_900, 230}, {"BRK.B", 3_100, 230}, {"JPM", 5_200, 230},
			{"LLY", 1_400, 230}, {"V", 3_600, 230}, {"UNH", 1_700, 230}, {"XOM", 8_300, 230},
			{"PG", 4_100, 230}, {"HD", 1_900, 230}, {"COST", 900, 230}, {"MA", 1_600, 230},
			{"ABBV", 3_400, 230}, {"CAT", 1_500, 230}, {"LIN", 1_300, 230}, {"NEE", 5_600, 230},
		},
	},
	{
		ID: "ACC-2002", Name: "Semiconductor Conviction", Type: "individual", Owner: "Anika Patel", Cash: 6_300,
		Positions: []position{
			{"NVDA", 900, 250}, {"AMD", 120, 200}, {"AVGO", 40, 180}, {"QCOM", 60, 140}, {"INTC", 300, 60},
		},
	},
}

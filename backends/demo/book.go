package demo

import (
	"fmt"
	"maps"
)

// book is an account's positions and cash: the data set's, moved by every
// order that filled since, as a broker's would. An agent that buys sees
// the shares, and the pre-trade checks see the cash spent.
type book struct {
	cash float64
	lots map[string]lot // by ticker
}

// lot is a position: shares held and their cost basis.
type lot struct{ qty, cost float64 }

// bookOf returns a's book, built from the data set on first use. Callers
// hold b.mu.
func (b *Backend) bookOf(a accountDef) *book {
	if bk, ok := b.books[a.ID]; ok {
		return bk
	}
	bk := &book{cash: a.Cash, lots: make(map[string]lot, len(a.Positions))}
	for _, p := range a.Positions {
		closes := b.history.closes(p.Ticker)
		avg := closes[len(closes)-1-min(p.CostDaysAgo, len(closes)-1)]
		bk.lots[p.Ticker] = lot{qty: p.Quantity, cost: avg * p.Quantity}
	}
	b.books[a.ID] = bk
	return bk
}

func (bk *book) clone() book { return book{cash: bk.cash, lots: maps.Clone(bk.lots)} }

// fill moves the book by a filled order of qty shares at price. A buy needs
// the cash, a sell the shares (no margin, no short selling); the error
// names what is missing.
func (bk *book) fill(ticker string, buy bool, qty, price float64) error {
	l := bk.lots[ticker]
	if buy {
		cost := qty * price
		if cost > bk.cash {
			return fmt.Errorf("insufficient cash: the order needs %.2f, the account has %.2f", cost, bk.cash)
		}
		bk.cash = round2(bk.cash - cost)
		bk.lots[ticker] = lot{qty: l.qty + qty, cost: l.cost + cost}
		return nil
	}
	if qty > l.qty {
		return fmt.Errorf("cannot sell %g shares of %s: the account holds %g", qty, ticker, l.qty)
	}
	bk.cash = round2(bk.cash + qty*price)
	if qty == l.qty {
		delete(bk.lots, ticker)
		return nil
	}
	bk.lots[ticker] = lot{qty: l.qty - qty, cost: l.cost * (l.qty - qty) / l.qty}
	return nil
}

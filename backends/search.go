package backends

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// Search limits shared by every implementation and the MCP tool schema.
const (
	DefaultSearchLimit = 20
	MaxSearchLimit     = 100
)

// SearchUniverse ranks and pages universe for q. It is the one definition of
// search semantics: the demo backend and the fake Portfolio service both call
// it, so their answers agree by construction.
func SearchUniverse(universe []Equity, q EquityQuery) (EquityPage, error) {
	limit := q.Limit
	if limit == 0 {
		limit = DefaultSearchLimit
	}
	if limit < 1 || limit > MaxSearchLimit {
		return EquityPage{}, fmt.Errorf("%w: limit must be between 1 and %d", ErrInvalid, MaxSearchLimit)
	}
	offset, err := decodeCursor(q)
	if err != nil {
		return EquityPage{}, err
	}

	text := strings.ToLower(strings.TrimSpace(q.Text))
	// Rank indexes, not copies: the hot path of every search call.
	type hit struct {
		i, rank int32
	}
	// On the stack (2 KB) for a universe of up to 256, as the demo's (205):
	// a search then allocates only the page it returns.
	var buf [256]hit
	hits := buf[:0]
	for i := range universe {
		e := &universe[i]
		if q.Sector != "" && !strings.EqualFold(e.Sector, q.Sector) ||
			q.Exchange != "" && !strings.EqualFold(e.Exchange, q.Exchange) ||
			q.MinMarketCap > 0 && e.MarketCap < q.MinMarketCap ||
			q.MaxMarketCap > 0 && e.MarketCap > q.MaxMarketCap {
			continue
		}
		r := textRank(e, text)
		if r < 0 {
			continue
		}
		hits = append(hits, hit{int32(i), int32(r)})
	}
	slices.SortFunc(hits, func(a, b hit) int {
		ea, eb := &universe[a.i], &universe[b.i]
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(eb.MarketCap, ea.MarketCap), cmp.Compare(ea.Ticker, eb.Ticker))
	})

	offset = min(offset, len(hits))
	end := min(offset+limit, len(hits))
	page := EquityPage{Total: len(hits), Equities: make([]Equity, 0, end-offset)}
	for _, h := range hits[offset:end] {
		page.Equities = append(page.Equities, universe[h.i])
	}
	if end < len(hits) {
		page.NextCursor = encodeCursor(q, end)
	}
	return page, nil
}

// textRank orders matches: 0 exact ticker, 1 ticker prefix, 2 name prefix,
// 3 substring of ticker or name, 4 GICS industry, 5 GICS sector (what
// people type: "bank" finds the banks, "semiconductor" the chip makers,
// "utilities" the utilities); -1 no match. Empty text matches all at 0.
func textRank(e *Equity, text string) int {
	switch {
	case text == "":
		return 0
	case strings.EqualFold(e.Ticker, text):
		return 0
	case hasPrefixFold(e.Ticker, text):
		return 1
	case hasPrefixFold(e.Name, text):
		return 2
	case containsFold(e.Ticker, text) || containsFold(e.Name, text):
		return 3
	case len(text) >= 3 && containsFold(e.Industry, text):
		return 4
	case len(text) >= 3 && containsFold(e.Sector, text):
		return 5
	}
	return -1
}

// hasPrefixFold and containsFold match a lower-cased needle without
// allocating a lower-cased copy of the haystack. Reference data is ASCII
// apart from a few accented names, which fall back to the allocating path.
func hasPrefixFold(s, lowerPrefix string) bool {
	return len(s) >= len(lowerPrefix) && strings.EqualFold(s[:len(lowerPrefix)], lowerPrefix)
}

func containsFold(s, lowerSub string) bool {
	for i := 0; i+len(lowerSub) <= len(s); i++ {
		if s[i] >= 0x80 {
			return strings.Contains(strings.ToLower(s), lowerSub)
		}
		if strings.EqualFold(s[i:i+len(lowerSub)], lowerSub) {
			return true
		}
	}
	return false
}

// A cursor is the offset of the next page plus a fingerprint of the filters,
// so a cursor replayed against a different query is refused rather than
// silently paging the wrong result set.
func encodeCursor(q EquityQuery, offset int) string {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:4], uint32(offset))
	binary.BigEndian.PutUint64(b[4:], queryFingerprint(q))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func decodeCursor(q EquityQuery) (int, error) {
	if q.Cursor == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
	if err != nil || len(b) != 12 || binary.BigEndian.Uint64(b[4:]) != queryFingerprint(q) {
		return 0, fmt.Errorf("%w: cursor is not valid for this query; repeat the search without a cursor", ErrInvalid)
	}
	return int(binary.BigEndian.Uint32(b[:4])), nil
}

func queryFingerprint(q EquityQuery) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%g\x00%g", strings.ToLower(strings.TrimSpace(q.Text)),
		strings.ToLower(q.Sector), strings.ToLower(q.Exchange), q.MinMarketCap, q.MaxMarketCap)
	return h.Sum64()
}

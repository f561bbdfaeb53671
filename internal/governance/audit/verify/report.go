package verify

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// Write prints the report for a person: a line a stream with its problems
// and notes under it, then one summary line that starts with OK, OPEN (no
// problem, but open streams' tails no signature vouches for) or FAIL.
func (r *Report) Write(w io.Writer) {
	for _, p := range r.Problems {
		fmt.Fprintf(w, "%s: %s: %s\n", p.Where, p.Kind, p.Detail)
	}
	events := 0
	for _, s := range r.Streams {
		events += s.Events
		fmt.Fprintf(w, "stream %s: %s\n", s.ID, s.summary())
		for _, p := range s.Problems {
			fmt.Fprintf(w, "  %s %s: %s%s\n", place(p), p.Kind, p.Detail, at(p.Where))
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	verdict, open := "OK", ""
	switch {
	case !r.OK():
		verdict = "FAIL"
	case r.Open() > 0:
		verdict, open = "OPEN", fmt.Sprintf(", %d of them in open streams and not vouched for by a signed checkpoint", r.Open())
	}
	fmt.Fprintf(w, "%s: %d stream(s), %d event(s)%s%s; %d record(s) skipped (not audit events)\n",
		verdict, len(r.Streams), events, open, r.counts(), r.Skipped)
}

func (s *Stream) summary() string {
	seal := "no valid signed checkpoint"
	if s.Sealed > 0 {
		seal = fmt.Sprintf("sealed through seq %d", s.Sealed)
		if s.Final {
			seal += " by its final checkpoint"
		}
		seal += " (key " + strings.Join(s.Keys, ", ") + ")"
	}
	status := "ok"
	switch n := len(s.Problems); {
	case n > 0:
		status = fmt.Sprintf("%d problem(s)", n)
	case s.Open > 0:
		status = fmt.Sprintf("open, %d event(s) not vouched for", s.Open)
	}
	return fmt.Sprintf("seq %d-%d, %d event(s), %s: %s", s.First, s.Last, s.Events, seal, status)
}

// counts is ", N problem(s): k1 n1, k2 n2" or "".
func (r *Report) counts() string {
	by := map[Kind]int{}
	n := 0
	for _, p := range r.Problems {
		by[p.Kind]++
		n++
	}
	for _, s := range r.Streams {
		for _, p := range s.Problems {
			by[p.Kind]++
			n++
		}
	}
	if n == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, by[k]))
	}
	return fmt.Sprintf(", %d problem(s): %s", n, strings.Join(parts, ", "))
}

func place(p Problem) string {
	switch {
	case p.Last > p.Seq:
		return fmt.Sprintf("seq %d-%d", p.Seq, p.Last)
	case p.Seq > 0:
		return fmt.Sprintf("seq %d", p.Seq)
	}
	return "stream"
}

func at(where string) string {
	if where == "" {
		return ""
	}
	return " [" + where + "]"
}

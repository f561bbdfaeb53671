package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// progress draws one bar for all scenarios on a terminal.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	on    bool
	fracs []float64
	shown int // last percent drawn
}

func newProgress(w io.Writer, mode string, n int) *progress {
	on := mode == "on"
	if mode == "auto" {
		if f, ok := w.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				on = true
			}
		}
	}
	return &progress{w: w, on: on, fracs: make([]float64, n), shown: -1}
}

func (p *progress) reporter(i int) func(float64) {
	if !p.on {
		return nil
	}
	return func(f float64) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.fracs[i] = f
		sum := 0.
		for _, x := range p.fracs {
			sum += x
		}
		pct := int(100 * sum / float64(len(p.fracs)))
		if pct == p.shown {
			return
		}
		p.shown = pct
		const width = 40
		filled := pct * width / 100
		fmt.Fprintf(p.w, "\r[%s%s] %3d%% of %d scenarios", strings.Repeat("#", filled), strings.Repeat(".", width-filled), pct, len(p.fracs))
	}
}

func (p *progress) done() {
	if p.on && p.shown >= 0 {
		fmt.Fprintln(p.w)
	}
}

package autoscale

import (
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/prewarm"
	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

// PrewarmFloor is the time-varying min-scale the pre-warm job applies with
// schedule s: its floor inside the warm window, the manifest's own min-scale
// outside it.
func PrewarmFloor(cal *calendar.Calendar, s prewarm.Schedule) func(time.Time) (int32, bool) {
	return func(t time.Time) (int32, bool) {
		if s.Warm(cal, t) {
			return int32(s.MinScale), true
		}
		return 0, false
	}
}

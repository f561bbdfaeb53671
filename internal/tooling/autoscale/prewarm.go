package autoscale

import (
	"time"

	"github.com/portfolio-mcp/portfolio-mcp/internal/trading/calendar"
)

// PrewarmSchedule is the min-scale schedule the pre-warm tool applies: warm
// from before ahead of each session's open until after past its close (or,
// if hold > 0, until hold past the open), otherwise the manifest's own
// min-scale.
func PrewarmSchedule(cal *calendar.Calendar, warm int32, before, after, hold time.Duration) func(time.Time) (int32, bool) {
	return func(t time.Time) (int32, bool) {
		if Warm(cal, t, before, after, hold) {
			return warm, true
		}
		return 0, false
	}
}

// Warm reports whether t is in the pre-warm window: [open-before,
// close+after), or [open-before, open+hold) when hold > 0.
func Warm(cal *calendar.Calendar, t time.Time, before, after, hold time.Duration) bool {
	if hold > 0 {
		return cal.WithinOpening(t, before, hold)
	}
	return cal.WithinSession(t, before, after)
}

// Package calendar answers "is the exchange open?" for a US equity exchange:
// regular sessions, weekends, full-day holidays and early closes, in the
// exchange's own time zone (America/New_York), daylight saving included.
//
// It depends on the standard library only (the time zone database is
// embedded through time/tzdata), so the server can use it for market-hours
// checks and the pre-warm tool can use it for its schedule.
package calendar

import (
	"fmt"
	"sort"
	"strings"
	"time"
	_ "time/tzdata" // embed the zone database: scratch images have none.
)

// Date is a civil date in the exchange's time zone.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// DateOf returns the civil date of t as seen in loc.
func DateOf(t time.Time, loc *time.Location) Date {
	y, m, d := t.In(loc).Date()
	return Date{Year: y, Month: m, Day: d}
}

// ParseDate parses a date in the form 2006-01-02.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, fmt.Errorf("calendar: bad date %q: want YYYY-MM-DD", s)
	}
	return Date{Year: t.Year(), Month: t.Month(), Day: t.Day()}, nil
}

// UnmarshalText parses a date in the form 2006-01-02, so a Date can be read
// straight from configuration.
func (d *Date) UnmarshalText(b []byte) error {
	v, err := ParseDate(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// String formats d as 2006-01-02.
func (d Date) String() string {
	return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day)
}

// In returns the given wall-clock time of day on d in loc.
func (d Date) In(loc *time.Location, tod TimeOfDay) time.Time {
	return time.Date(d.Year, d.Month, d.Day, tod.Hour, tod.Minute, 0, 0, loc)
}

// AddDays returns the date n days after d (n may be negative).
func (d Date) AddDays(n int) Date {
	t := time.Date(d.Year, d.Month, d.Day+n, 12, 0, 0, 0, time.UTC)
	return Date{Year: t.Year(), Month: t.Month(), Day: t.Day()}
}

// Weekday returns the day of the week of d.
func (d Date) Weekday() time.Weekday {
	return time.Date(d.Year, d.Month, d.Day, 12, 0, 0, 0, time.UTC).Weekday()
}

// Before reports whether d is earlier than o.
func (d Date) Before(o Date) bool {
	if d.Year != o.Year {
		return d.Year < o.Year
	}
	if d.Month != o.Month {
		return d.Month < o.Month
	}
	return d.Day < o.Day
}

// TimeOfDay is a wall-clock time in the exchange's time zone.
type TimeOfDay struct {
	Hour, Minute int
}

// ParseTimeOfDay parses a time of day in the form 15:04.
func ParseTimeOfDay(s string) (TimeOfDay, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return TimeOfDay{}, fmt.Errorf("calendar: bad time of day %q: want HH:MM", s)
	}
	return TimeOfDay{Hour: t.Hour(), Minute: t.Minute()}, nil
}

// String formats tod as 15:04.
func (tod TimeOfDay) String() string {
	return fmt.Sprintf("%02d:%02d", tod.Hour, tod.Minute)
}

// Regular NYSE session hours, Eastern Time.
var (
	RegularOpen  = TimeOfDay{Hour: 9, Minute: 30}
	RegularClose = TimeOfDay{Hour: 16, Minute: 0}
	EarlyClose   = TimeOfDay{Hour: 13, Minute: 0}
)

// Zone is the exchange's time zone name.
const Zone = "America/New_York"

// Calendar is an exchange calendar. The zero value is not usable; build one
// with New or NYSE. A Calendar is immutable and safe for concurrent use.
type Calendar struct {
	loc         *time.Location
	open, close TimeOfDay
	holidays    map[Date]bool
	earlyCloses map[Date]TimeOfDay
}

// New returns a calendar with the regular 09:30-16:00 Eastern session on
// weekdays, except the given full-day holidays, and with the given early
// closes (date to closing time). An early close on a holiday or weekend is an
// error, as is a closing time not after the open.
func New(holidays []Date, earlyCloses map[Date]TimeOfDay) (*Calendar, error) {
	loc, err := time.LoadLocation(Zone)
	if err != nil {
		return nil, fmt.Errorf("calendar: load %s: %w", Zone, err)
	}
	c := &Calendar{
		loc:         loc,
		open:        RegularOpen,
		close:       RegularClose,
		holidays:    make(map[Date]bool, len(holidays)),
		earlyCloses: make(map[Date]TimeOfDay, len(earlyCloses)),
	}
	for _, h := range holidays {
		c.holidays[h] = true
	}
	for d, tod := range earlyCloses {
		if c.holidays[d] {
			return nil, fmt.Errorf("calendar: %s is both a holiday and an early close", d)
		}
		if wd := d.Weekday(); wd == time.Saturday || wd == time.Sunday {
			return nil, fmt.Errorf("calendar: early close %s falls on a %s", d, wd)
		}
		if tod.Hour*60+tod.Minute <= c.open.Hour*60+c.open.Minute {
			return nil, fmt.Errorf("calendar: early close %s at %s is not after the open", d, tod)
		}
		c.earlyCloses[d] = tod
	}
	return c, nil
}

// Location returns the exchange's time zone.
func (c *Calendar) Location() *time.Location { return c.loc }

// Holidays returns the calendar's full-day holidays in date order.
func (c *Calendar) Holidays() []Date {
	out := make([]Date, 0, len(c.holidays))
	for d := range c.holidays {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

// Session returns the open and close instants of the regular session on d,
// and ok=false when the exchange does not open that day (weekend or holiday).
func (c *Calendar) Session(d Date) (open, close time.Time, ok bool) {
	if wd := d.Weekday(); wd == time.Saturday || wd == time.Sunday || c.holidays[d] {
		return time.Time{}, time.Time{}, false
	}
	closeAt := c.close
	if tod, early := c.earlyCloses[d]; early {
		closeAt = tod
	}
	return d.In(c.loc, c.open), d.In(c.loc, closeAt), true
}

// IsOpen reports whether the regular session is in progress at t: open is
// inclusive, close exclusive.
func (c *Calendar) IsOpen(t time.Time) bool {
	open, closeAt, ok := c.Session(DateOf(t, c.loc))
	return ok && !t.Before(open) && t.Before(closeAt)
}

// maxScan bounds searches for the next session; no real calendar has
// a gap this long.
const maxScan = 31

// NextOpen returns the first session open at or after t.
func (c *Calendar) NextOpen(t time.Time) time.Time {
	d := DateOf(t, c.loc)
	for i := 0; i < maxScan; i++ {
		if open, _, ok := c.Session(d.AddDays(i)); ok && !open.Before(t) {
			return open
		}
	}
	panic("calendar: no session within a month")
}

// NextClose returns the first session close strictly after t.
func (c *Calendar) NextClose(t time.Time) time.Time {
	d := DateOf(t, c.loc)
	for i := 0; i < maxScan; i++ {
		if _, closeAt, ok := c.Session(d.AddDays(i)); ok && closeAt.After(t) {
			return closeAt
		}
	}
	panic("calendar: no session within a month")
}

// TradingDay is the session an instant counts towards, for limits that
// reset each trading day: the session in progress, else the next one. The
// day rolls over at the close (an early close included), so an order after
// Friday's close, on the weekend or on a holiday counts towards the next
// session, whatever the wall clock or the DST offset says.
func (c *Calendar) TradingDay(t time.Time) Date {
	return DateOf(c.NextClose(t), c.loc)
}

// WithinSession reports whether t falls in [open-before, close+after) of any
// session: the window in which a service should be kept warm. before and
// after must each be under 24 hours.
func (c *Calendar) WithinSession(t time.Time, before, after time.Duration) bool {
	return c.within(t, func(open, closeAt time.Time) (time.Time, time.Time) {
		return open.Add(-before), closeAt.Add(after)
	})
}

// WithinOpening reports whether t falls in [open-before, open+hold) of any
// session: a warm window around the opening bell only. before and hold must
// each be under 24 hours.
func (c *Calendar) WithinOpening(t time.Time, before, hold time.Duration) bool {
	return c.within(t, func(open, _ time.Time) (time.Time, time.Time) {
		return open.Add(-before), open.Add(hold)
	})
}

func (c *Calendar) within(t time.Time, window func(open, closeAt time.Time) (from, to time.Time)) bool {
	d := DateOf(t, c.loc)
	for i := -1; i <= 1; i++ {
		if open, closeAt, ok := c.Session(d.AddDays(i)); ok {
			if from, to := window(open, closeAt); !t.Before(from) && t.Before(to) {
				return true
			}
		}
	}
	return false
}

// ParseDates parses a comma-separated list of YYYY-MM-DD dates (for
// holiday flags); blanks are skipped.
func ParseDates(list string) ([]Date, error) {
	var out []Date
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := ParseDate(f)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// ParseEarlyCloses parses a comma-separated list of YYYY-MM-DD=HH:MM early
// closes (for flags); blanks are skipped.
func ParseEarlyCloses(list string) (map[Date]TimeOfDay, error) {
	out := map[Date]TimeOfDay{}
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		ds, ts, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("calendar: early close %q: want YYYY-MM-DD=HH:MM", f)
		}
		d, err := ParseDate(ds)
		if err != nil {
			return nil, err
		}
		tod, err := ParseTimeOfDay(ts)
		if err != nil {
			return nil, err
		}
		out[d] = tod
	}
	return out, nil
}

// NYSEFromLists is NYSE with extra holidays and early closes given as the
// comma-separated lists ParseDates and ParseEarlyCloses read (flags, env).
func NYSEFromLists(holidays, earlyCloses string) (*Calendar, error) {
	hol, err := ParseDates(holidays)
	if err != nil {
		return nil, err
	}
	ec, err := ParseEarlyCloses(earlyCloses)
	if err != nil {
		return nil, err
	}
	return NYSE(hol, ec)
}

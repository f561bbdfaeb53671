package calendar

import (
	"testing"
	"time"
)

func nyse(t *testing.T) *Calendar {
	t.Helper()
	c, err := NYSE(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestSessionAcrossDSTStart(t *testing.T) {
	c := nyse(t)
	// US DST starts Sunday 2026-03-08: EST (UTC-5) before, EDT (UTC-4) after.
	cases := []struct {
		date        Date
		open, close string
	}{
		{Date{2026, time.March, 6}, "2026-03-06T14:30:00Z", "2026-03-06T21:00:00Z"},
		{Date{2026, time.March, 9}, "2026-03-09T13:30:00Z", "2026-03-09T20:00:00Z"},
		// DST ends Sunday 2026-11-01.
		{Date{2026, time.October, 30}, "2026-10-30T13:30:00Z", "2026-10-30T20:00:00Z"},
		{Date{2026, time.November, 2}, "2026-11-02T14:30:00Z", "2026-11-02T21:00:00Z"},
	}
	for _, tc := range cases {
		open, closeAt, ok := c.Session(tc.date)
		if !ok {
			t.Fatalf("%s: no session", tc.date)
		}
		if !open.Equal(utc(tc.open)) || !closeAt.Equal(utc(tc.close)) {
			t.Errorf("%s: session %s-%s UTC, want %s-%s", tc.date,
				open.UTC().Format(time.RFC3339), closeAt.UTC().Format(time.RFC3339), tc.open, tc.close)
		}
		if got := closeAt.Sub(open); got != 6*time.Hour+30*time.Minute {
			t.Errorf("%s: session lasts %v", tc.date, got)
		}
	}
}

func TestNextOpenOverDSTWeekend(t *testing.T) {
	c := nyse(t)
	// Friday after the close, before the spring-forward weekend: the next open
	// is Monday 09:30 EDT, which is 13:30 UTC, not 14:30.
	got := c.NextOpen(utc("2026-03-06T21:00:00Z"))
	if want := utc("2026-03-09T13:30:00Z"); !got.Equal(want) {
		t.Fatalf("NextOpen = %s, want %s", got.UTC(), want)
	}
	// And the fall-back weekend: Monday 09:30 EST is 14:30 UTC.
	got = c.NextOpen(utc("2026-10-30T20:00:00Z"))
	if want := utc("2026-11-02T14:30:00Z"); !got.Equal(want) {
		t.Fatalf("NextOpen = %s, want %s", got.UTC(), want)
	}
}

func TestEarlyClose(t *testing.T) {
	c := nyse(t)
	d := Date{2026, time.November, 27} // day after Thanksgiving
	_, closeAt, ok := c.Session(d)
	if !ok {
		t.Fatal("no session on the day after Thanksgiving")
	}
	if want := utc("2026-11-27T18:00:00Z"); !closeAt.Equal(want) { // 13:00 EST
		t.Fatalf("close = %s, want %s", closeAt.UTC(), want)
	}
	if !c.IsOpen(utc("2026-11-27T17:59:00Z")) {
		t.Error("closed at 12:59 on an early-close day")
	}
	if c.IsOpen(utc("2026-11-27T18:00:00Z")) {
		t.Error("open at 13:00 on an early-close day")
	}
	// The next close after Thanksgiving morning is the early close.
	if got := c.NextClose(utc("2026-11-26T15:00:00Z")); !got.Equal(utc("2026-11-27T18:00:00Z")) {
		t.Errorf("NextClose = %s", got.UTC())
	}
}

func TestHolidayAndWeekend(t *testing.T) {
	c := nyse(t)
	for _, d := range []Date{
		{2026, time.July, 3},      // Independence Day observed (Friday)
		{2026, time.July, 4},      // Saturday
		{2027, time.March, 26},    // Good Friday
		{2027, time.December, 24}, // Christmas observed
	} {
		if _, _, ok := c.Session(d); ok {
			t.Errorf("%s: session on a holiday/weekend", d)
		}
	}
	// Thursday 2 July 2026 12:00 EDT: open; the next open after it is Monday 6 July.
	if !c.IsOpen(utc("2026-07-02T16:00:00Z")) {
		t.Error("closed on 2 July 2026")
	}
	if got, want := c.NextOpen(utc("2026-07-02T21:00:00Z")), utc("2026-07-06T13:30:00Z"); !got.Equal(want) {
		t.Errorf("NextOpen over the holiday weekend = %s, want %s", got.UTC(), want)
	}
	if c.IsOpen(utc("2026-07-03T15:00:00Z")) {
		t.Error("open on the observed Independence Day")
	}
}

func TestConfigurableHolidaysAndEarlyCloses(t *testing.T) {
	extraHoliday := Date{2026, time.November, 27} // an unscheduled closure replaces the early close
	extraEarly := map[Date]TimeOfDay{{2026, time.December, 31}: {14, 0}}
	c, err := NYSE([]Date{extraHoliday}, extraEarly)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c.Session(extraHoliday); ok {
		t.Error("extra holiday still has a session")
	}
	_, closeAt, ok := c.Session(Date{2026, time.December, 31})
	if !ok || !closeAt.Equal(utc("2026-12-31T19:00:00Z")) {
		t.Errorf("extra early close: %s %v", closeAt.UTC(), ok)
	}
	if _, err := New([]Date{{2026, time.May, 1}}, map[Date]TimeOfDay{{2026, time.May, 1}: EarlyClose}); err == nil {
		t.Error("holiday that is also an early close accepted")
	}
	if _, err := New(nil, map[Date]TimeOfDay{{2026, time.May, 2}: EarlyClose}); err == nil {
		t.Error("early close on a Saturday accepted")
	}
}

func TestIsOpenBoundaries(t *testing.T) {
	c := nyse(t)
	ny := c.Location()
	day := Date{2026, time.March, 10}
	if c.IsOpen(day.In(ny, TimeOfDay{9, 29})) {
		t.Error("open at 09:29")
	}
	if !c.IsOpen(day.In(ny, TimeOfDay{9, 30})) {
		t.Error("closed at 09:30")
	}
	if c.IsOpen(day.In(ny, TimeOfDay{16, 0})) {
		t.Error("open at 16:00")
	}
	// NextOpen at the open instant returns that instant.
	if got := c.NextOpen(day.In(ny, TimeOfDay{9, 30})); !got.Equal(day.In(ny, TimeOfDay{9, 30})) {
		t.Errorf("NextOpen at the open = %s", got)
	}
}

func TestParse(t *testing.T) {
	d, err := ParseDate("2027-11-26")
	if err != nil || d != (Date{2027, time.November, 26}) || d.String() != "2027-11-26" {
		t.Fatalf("ParseDate = %v, %v", d, err)
	}
	if _, err := ParseDate("26/11/2027"); err == nil {
		t.Error("bad date accepted")
	}
	tod, err := ParseTimeOfDay("13:00")
	if err != nil || tod != EarlyClose {
		t.Fatalf("ParseTimeOfDay = %v, %v", tod, err)
	}
}

func TestWithinSession(t *testing.T) {
	c := nyse(t)
	ny := c.Location()
	at := func(d Date, h, m int) time.Time { return d.In(ny, TimeOfDay{h, m}) }
	mon := Date{2026, time.March, 9}
	early := Date{2026, time.November, 27}
	cases := []struct {
		t    time.Time
		want bool
	}{
		{at(mon, 9, 14), false},
		{at(mon, 9, 15), true}, // open - 15m
		{at(mon, 16, 14), true},
		{at(mon, 16, 15), false}, // close + 15m
		{at(early, 13, 14), true},
		{at(early, 13, 15), false},                    // early close + 15m
		{at(Date{2026, time.March, 7}, 12, 0), false}, // Saturday
		{at(Date{2026, time.July, 3}, 12, 0), false},  // holiday
	}
	for _, tc := range cases {
		if got := c.WithinSession(tc.t, 15*time.Minute, 15*time.Minute); got != tc.want {
			t.Errorf("WithinSession(%s) = %v, want %v", tc.t, got, tc.want)
		}
	}
	// Around the opening bell only.
	if !c.WithinOpening(at(mon, 10, 14), 15*time.Minute, 45*time.Minute) || c.WithinOpening(at(mon, 10, 15), 15*time.Minute, 45*time.Minute) ||
		c.WithinOpening(at(mon, 9, 14), 15*time.Minute, 45*time.Minute) {
		t.Error("WithinOpening window wrong")
	}
	// A window reaching past midnight belongs to the previous day's session.
	if !c.WithinSession(at(Date{2026, time.March, 10}, 0, 30), 0, 9*time.Hour) {
		t.Error("after-window crossing midnight not honoured")
	}
}

func TestParseLists(t *testing.T) {
	ds, err := ParseDates(" 2028-01-17, ,2028-02-21")
	if err != nil || len(ds) != 2 || ds[1] != (Date{2028, time.February, 21}) {
		t.Fatalf("ParseDates = %v, %v", ds, err)
	}
	ec, err := ParseEarlyCloses("2028-11-24=13:00")
	if err != nil || ec[Date{2028, time.November, 24}] != EarlyClose {
		t.Fatalf("ParseEarlyCloses = %v, %v", ec, err)
	}
	if _, err := ParseEarlyCloses("2028-11-24"); err == nil {
		t.Error("early close without a time accepted")
	}
	if _, err := ParseDates("2028-13-01"); err == nil {
		t.Error("bad month accepted")
	}
}

func TestTradingDay(t *testing.T) {
	cal := nyse(t)
	ny := cal.Location()
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"before the open counts towards that session", time.Date(2026, 11, 23, 8, 0, 0, 0, ny), "2026-11-23"},
		{"in the session", time.Date(2026, 11, 23, 15, 59, 59, 0, ny), "2026-11-23"},
		{"at the close rolls over", time.Date(2026, 11, 23, 16, 0, 0, 0, ny), "2026-11-24"},
		{"after the close", time.Date(2026, 11, 23, 23, 0, 0, 0, ny), "2026-11-24"},
		{"UTC midnight is still the New York evening", time.Date(2026, 11, 24, 2, 0, 0, 0, time.UTC), "2026-11-24"},
		{"day before Thanksgiving after the close skips the holiday", time.Date(2026, 11, 25, 17, 0, 0, 0, ny), "2026-11-27"},
		{"early close: in the short session", time.Date(2026, 11, 27, 12, 59, 0, 0, ny), "2026-11-27"},
		{"early close: after 13:00 it is Monday's", time.Date(2026, 11, 27, 13, 0, 0, 0, ny), "2026-11-30"},
		{"weekend", time.Date(2026, 11, 28, 12, 0, 0, 0, ny), "2026-11-30"},
		{"DST start Sunday counts towards Monday", time.Date(2026, 3, 8, 3, 30, 0, 0, ny), "2026-03-09"},
		{"DST start Monday in the session (EDT)", time.Date(2026, 3, 9, 13, 45, 0, 0, time.UTC), "2026-03-09"},
		{"DST end Monday: 20:59 UTC is 15:59 EST, still the session", time.Date(2026, 11, 2, 20, 59, 0, 0, time.UTC), "2026-11-02"},
		{"DST end Monday: 21:00 UTC is the close", time.Date(2026, 11, 2, 21, 0, 0, 0, time.UTC), "2026-11-03"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cal.TradingDay(tt.at).String(); got != tt.want {
				t.Errorf("TradingDay(%s) = %s, want %s", tt.at.In(ny), got, tt.want)
			}
		})
	}
}

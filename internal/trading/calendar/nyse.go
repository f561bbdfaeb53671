package calendar

import "time"

// NYSEHolidays are the NYSE full-day closures for 2026 and 2027, as
// published by NYSE Group (holiday and early closings calendar). Observed
// dates are listed, e.g. Independence Day 2026 falls on a Saturday and is
// observed on Friday 3 July.
var NYSEHolidays = []Date{
	{2026, time.January, 1},   // New Year's Day
	{2026, time.January, 19},  // Martin Luther King, Jr. Day
	{2026, time.February, 16}, // Washington's Birthday
	{2026, time.April, 3},     // Good Friday
	{2026, time.May, 25},      // Memorial Day
	{2026, time.June, 19},     // Juneteenth
	{2026, time.July, 3},      // Independence Day (observed)
	{2026, time.September, 7}, // Labor Day
	{2026, time.November, 26}, // Thanksgiving Day
	{2026, time.December, 25}, // Christmas Day

	{2027, time.January, 1},   // New Year's Day
	{2027, time.January, 18},  // Martin Luther King, Jr. Day
	{2027, time.February, 15}, // Washington's Birthday
	{2027, time.March, 26},    // Good Friday
	{2027, time.May, 31},      // Memorial Day
	{2027, time.June, 18},     // Juneteenth (observed)
	{2027, time.July, 5},      // Independence Day (observed)
	{2027, time.September, 6}, // Labor Day
	{2027, time.November, 25}, // Thanksgiving Day
	{2027, time.December, 24}, // Christmas Day (observed)
}

// NYSEEarlyCloses are the NYSE 13:00 early closes for 2026 and 2027.
var NYSEEarlyCloses = map[Date]TimeOfDay{
	{2026, time.November, 27}: EarlyClose, // day after Thanksgiving
	{2026, time.December, 24}: EarlyClose, // Christmas Eve
	{2027, time.November, 26}: EarlyClose, // day after Thanksgiving
}

// NYSE returns the NYSE calendar with the built-in 2026-2027 holidays and
// early closes plus any extra ones (for years not built in, or unscheduled
// closures). Outside 2026-2027 only the extra dates and weekends are known.
func NYSE(extraHolidays []Date, extraEarlyCloses map[Date]TimeOfDay) (*Calendar, error) {
	hol := append(append([]Date(nil), NYSEHolidays...), extraHolidays...)
	ec := make(map[Date]TimeOfDay, len(NYSEEarlyCloses)+len(extraEarlyCloses))
	for d, t := range NYSEEarlyCloses {
		ec[d] = t
	}
	for d, t := range extraEarlyCloses {
		ec[d] = t
	}
	for _, d := range extraHolidays {
		delete(ec, d) // an unscheduled full closure beats a scheduled early close
	}
	return New(hol, ec)
}

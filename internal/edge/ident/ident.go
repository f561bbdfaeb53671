// Package ident is the one definition of the identifiers the server takes
// from outside and writes into paths, URLs and log lines: account ids,
// audit key ids, secret names, adopted request ids. Each is made of ASCII
// letters, digits, '.', '_' and '-' only, so none can escape a directory,
// break a log line or a header, or carry markup.
package ident

// Valid reports whether s is 1 to max such characters, starting with a
// letter or digit (so not a dot file, a "..data" link or a flag).
func Valid(s string, max int) bool {
	return s != "" && s[0] != '.' && s[0] != '_' && s[0] != '-' && Chars(s, max)
}

// Chars reports whether s is 1 to max such characters.
func Chars(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

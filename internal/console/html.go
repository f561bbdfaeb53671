package console

import (
	"html"
	"net/url"
)

// The console's pages are written by typed Go code (views.go), not by
// html/template: executing templates calls methods by name through
// reflection, which turns off the linker's dead-code elimination for the
// whole binary. With it the server was a third larger and started slower
// (docs/performance.md).
//
// Escaping is by construction. markup is HTML written as is, and only a
// constant can be markup: an untyped string constant converts to it, a
// string value does not (TestMarkupIsConstant keeps the package free of
// explicit conversions). Everything else, text from an approval, a
// request or a token, reaches a page through text, attr or query, which
// escape it for the one context each is used in: element text, a quoted
// attribute value, a URL query value.
type markup string

// htmlWriter builds a page.
type htmlWriter struct{ b []byte }

// m writes markup.
func (w *htmlWriter) m(parts ...markup) {
	for _, p := range parts {
		w.b = append(w.b, p...)
	}
}

// text writes s as element text (or inside a quoted attribute value).
func (w *htmlWriter) text(s string) { w.b = append(w.b, html.EscapeString(s)...) }

// el writes text between two pieces of markup: an element and its text.
func (w *htmlWriter) el(open markup, s string, close markup) {
	w.m(open)
	w.text(s)
	w.m(close)
}

// attr writes ` name="value"`, value escaped.
func (w *htmlWriter) attr(name markup, value string) {
	w.m(" ", name, `="`)
	w.text(value)
	w.m(`"`)
}

// query writes s as a URL query value, inside a quoted attribute.
func (w *htmlWriter) query(s string) { w.text(url.QueryEscape(s)) }

// path writes s as one URL path segment, inside a quoted attribute.
func (w *htmlWriter) path(s string) { w.text(url.PathEscape(s)) }

// when writes m when cond holds.
func (w *htmlWriter) when(cond bool, m markup) {
	if cond {
		w.m(m)
	}
}

package dashboard

import (
	"fmt"
	"html/template"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

var funcs = template.FuncMap{
	"ferr":    func(p *page, field string) string { return p.Errors[field] },
	"val":     func(p *page, field string) string { return p.Form.Get(field) },
	"checked": func(p *page, field string) bool { return p.Form.Get(field) != "" },
	"join":    func(s []string) string { return strings.Join(s, ", ") },
	"has":     slices.Contains[[]string],
	"when":    when,
	"ago":     ago,
	"ms":      func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) + " ms" },
	"bytes":   humanBytes,
	"is":      func(a, b string) bool { return a == b },
	"opts":    func(s ...string) []string { return s },
}

// when formats a timestamp for a table; "—" when unset.
func when(t *timestamppb.Timestamp) string {
	if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
		return "—"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04 UTC")
}

// ago says how long ago t was, roughly.
func ago(t *timestamppb.Timestamp) string {
	if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
		return "never"
	}
	d := time.Since(t.AsTime())
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// list reads a comma- or line-separated form field.
func list(v url.Values, field string) []string {
	var out []string
	for _, x := range strings.FieldsFunc(v.Get(field), func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// multi reads a multi-select (or repeated checkbox) field.
func multi(v url.Values, field string) []string {
	var out []string
	for _, x := range v[field] {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func on(v url.Values, field string) bool { return v.Get(field) != "" }

// number reads an integer field; empty is 0.
func number(v url.Values, field, what string) (int64, error) {
	s := strings.TrimSpace(v.Get(field))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a whole number", what, s)
	}
	return n, nil
}

package dashboard

import (
	"net/url"
	"testing"
)

// Errors land on the field the admin API's message is about, whatever the
// values typed say.
func TestFieldFor(t *testing.T) {
	fields := []field{f("name", "policy name", "name"), f("sources", "source", "group"),
		f("destinations", "destination"), f("protocol", "protocol"), f("ports", "port")}
	for _, c := range []struct {
		msg   string
		typed url.Values
		want  string
	}{
		{`policy typed-name: port "1-2-3": want a port 1-65535`, url.Values{"name": {"typed-name"}, "ports": {"1-2-3"}}, "ports"},
		{`policy name is empty`, url.Values{"name": {""}}, "name"},
		{`no group "portal": see meshd admin groups list`, url.Values{"sources": {"portal"}, "bidirectional": {"on"}}, "sources"},
		{`policy p needs at least one source and one destination group`, url.Values{"enabled": {"on"}}, "sources"},
		{`something else entirely`, nil, ""},
	} {
		if got := fieldFor(c.msg, c.typed, fields); got != c.want {
			t.Errorf("%q with %v: field %q, want %q", c.msg, c.typed, got, c.want)
		}
	}
}

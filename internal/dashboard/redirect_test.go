package dashboard_test

import (
	"net/http"
	"net/url"
	"testing"
)

// The "return to" after sign-in stays on this site whatever an attacker's
// link puts in next: browsers drop tabs and newlines from a Location and
// read a backslash as a slash, so "/\t/evil.example" would be
// //evil.example.
func TestSignInNextStaysHere(t *testing.T) {
	e := newEnv(t, 0)
	for _, next := range []string{"//evil.example", "/\t/evil.example", "/\n/evil.example", "/\\evil.example",
		"https://evil.example", "/%09/evil.example/x\x00", "/ /evil.example", "\t//evil.example"} {
		c := e.client(t)
		r := e.post(t, c, "/signin", url.Values{"token": {e.h.Boot.AdminToken}, "next": {next}})
		if r.status != http.StatusSeeOther {
			t.Fatalf("next %q: sign-in answered %d", next, r.status)
		}
		u, err := url.Parse(r.loc)
		if err != nil || u.Host != "" || u.Scheme != "" || len(r.loc) < 1 || r.loc[0] != '/' || (len(r.loc) > 1 && (r.loc[1] == '/' || r.loc[1] == '\\')) {
			t.Errorf("next %q: redirected to %q", next, r.loc)
		}
		for _, b := range []byte(r.loc) {
			if b < 0x21 || b == 0x7f {
				t.Errorf("next %q: redirect %q carries a control character or space", next, r.loc)
				break
			}
		}
	}
}

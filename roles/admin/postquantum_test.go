package admin

import (
	"strings"
	"testing"

	"meshd/internal/control/controltest"
)

// `account update --post-quantum` sets the mode, `account get` shows it,
// and a mode that does not exist is refused with the ones that do.
func TestAccountPostQuantum(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	if out := ok(t, h, "account", "get"); !strings.Contains(out, "post-quantum:") || !strings.Contains(out, "off") {
		t.Fatalf("account get:\n%s", out)
	}
	if out := ok(t, h, "account", "update", "--post-quantum", "permissive", "--json"); !strings.Contains(out, `"post_quantum":"permissive"`) {
		t.Fatalf("account update --json:\n%s", out)
	}
	_, code, msg := runAdmin(t, h, append(auth(h), "account", "update", "--post-quantum", "always")...)
	if code == 0 || !strings.Contains(msg, "use one of off, permissive, strict") {
		t.Fatalf("bad mode: exit %d %q", code, msg)
	}
}

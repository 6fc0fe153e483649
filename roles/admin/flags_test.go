package admin

import (
	"strings"
	"testing"

	"meshd/internal/control/controltest"
)

// Numbers that do not fit the API's fields are refused by the command
// instead of wrapping into small, valid-looking values; those that fit but
// are out of range are refused by control with the range.
func TestAdminCommandRefusesOverflowingNumbers(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dns", "records", "create", "big", "--type", "A", "--value", "10.0.0.1", "--ttl", "4294967296"}, 2, "--ttl 4294967296 is out of range"},
		{[]string{"dns", "records", "create", "big", "--type", "A", "--value", "10.0.0.1", "--ttl", "4294967295"}, 1, "want 1 to 86400 seconds"},
		{[]string{"setup-keys", "create", "--usage-limit", "4294967297"}, 2, "--usage-limit 4294967297 is out of range"},
		{[]string{"setup-keys", "create", "--expires", "106752d"}, 2, "at most 100000d"},
		{[]string{"setup-keys", "create", "--expires", "99999d"}, 1, "setup key expiry 8639913600 s is out of range"},
		{[]string{"routes", "create", "--network", "10.9.0.0/24", "--peer", "agent-0", "--metric", "4294967297"}, 2, "--metric"},
		{[]string{"events", "list", "--limit", "-4294967295"}, 2, "--limit"},
		{[]string{"account", "update", "--login-expiration", "213503d"}, 2, "at most 100000d"},
		{[]string{"account", "update", "--login-expiration", "2562047h"}, 1, "login expiration 9223369200 s is out of range"},
	} {
		_, code, msg := runAdmin(t, h, append(auth(h), c.args...)...)
		if code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("meshd admin %s: exit %d %q, want %d with %q", strings.Join(c.args, " "), code, msg, c.code, c.msg)
		}
	}
	if out := ok(t, h, "account", "get"); !strings.Contains(out, "login expiration:") || !strings.Contains(out, "off") {
		t.Fatalf("account changed:\n%s", out)
	}
}

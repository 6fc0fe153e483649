package admin

import (
	"strings"
	"testing"

	"meshd/internal/control/controltest"
)

// `policies check` answers from the admin API's CheckAccess.
func TestPoliciesCheck(t *testing.T) {
	h := controltest.NewHarness(t, 2, controltest.Quiet())
	if out := ok(t, h, "policies", "check", "agent-0", "agent-1", "--port", "22"); !strings.HasPrefix(out, "yes: agent-0 to agent-1 on tcp/22: allowed by Default") {
		t.Fatalf("under the default policy: %q", out)
	}
	ok(t, h, "policies", "update", "Default", "--disabled")
	if out := ok(t, h, "policies", "check", "agent-0", "agent-1", "--protocol", "icmp"); !strings.HasPrefix(out, "no: ") {
		t.Fatalf("with no policy: %q", out)
	}
	if _, code, msg := runAdmin(t, h, append(auth(h), "policies", "check", "agent-0")...); code != 2 || !strings.Contains(msg, "source and the destination") {
		t.Fatalf("one peer: exit %d %s", code, msg)
	}
}

package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"go.uber.org/goleak"

	"meshd/internal/control/controltest"
)

// pgtest's shared server outlives the tests (its watchdog stops it when
// the binary exits).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("meshd/internal/pgtest.(*Server).startWatchdog.func1"))
}

// runAdmin runs `meshd admin ARGS...` in-process against h and returns its
// output, exit code and error message.
func runAdmin(t *testing.T, h *controltest.Harness, args ...string) (string, int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{
		Name:           "meshd",
		Writer:         &out,
		ErrWriter:      &errOut,
		Commands:       []*cli.Command{NewCommand(Options{HTTPClient: h.HTTPClient()})},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	err := app.Run(append([]string{"meshd", "admin"}, args...))
	code := 0
	msg := ""
	if err != nil {
		code, msg = 1, err.Error()
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
	}
	return out.String(), code, msg
}

func auth(h *controltest.Harness) []string {
	return []string{"--control", h.URL, "--token", h.Boot.AdminToken}
}

func ok(t *testing.T, h *controltest.Harness, args ...string) string {
	t.Helper()
	out, code, msg := runAdmin(t, h, append(auth(h), args...)...)
	if code != 0 {
		t.Fatalf("meshd admin %s: exit %d: %s", strings.Join(args, " "), code, msg)
	}
	return out
}

func TestAdminCommandCoversTheAPI(t *testing.T) {
	h := controltest.NewHarness(t, 2)

	// Flags may follow the name.
	out := ok(t, h, "groups", "create", "eng", "--peer", "agent-0")
	if !strings.Contains(out, "name:") || !strings.Contains(out, "eng") || !strings.Contains(out, "agent-0") {
		t.Fatalf("groups create:\n%s", out)
	}
	ok(t, h, "groups", "create", "servers", "--peer=agent-1")

	// The plaintext key, once, in JSON.
	out = ok(t, h, "setup-keys", "create", "--one-off", "--expires", "24h", "--group", "eng", "--json")
	var key struct {
		Key        string   `json:"key"`
		OneOff     bool     `json:"one_off"`
		AutoGroups []string `json:"auto_groups"`
		Expires    string   `json:"expires"`
	}
	if err := json.Unmarshal([]byte(out), &key); err != nil || key.Key == "" || !key.OneOff || key.AutoGroups[0] != "eng" || key.Expires == "" {
		t.Fatalf("setup-keys create --json: %v\n%s", err, out)
	}
	if err := h.NewAgent(controltest.AgentOptions{Hostname: "new"}).Login(key.Key); err != nil {
		t.Fatalf("the printed key does not join: %v", err)
	}
	if out := ok(t, h, "setup-keys", "list"); strings.Contains(out, key.Key) || !strings.Contains(out, "used up") {
		t.Fatalf("setup-keys list shows the key or not its state:\n%s", out)
	}

	out = ok(t, h, "policies", "create", "--name", "web", "--source", "eng", "--destination", "servers", "--protocol", "tcp", "--ports", "443")
	if !strings.Contains(out, "eng") || !strings.Contains(out, "servers") || !strings.Contains(out, "443") {
		t.Fatalf("policies create:\n%s", out)
	}
	out = ok(t, h, "policies", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[2], "web") || !strings.Contains(lines[2], "tcp") {
		t.Fatalf("policies list:\n%s", out)
	}
	ok(t, h, "policies", "update", "web", "--ports", "443,8443", "--bidirectional")
	ok(t, h, "policies", "delete", "Default")

	// The list is a JSON array.
	out = ok(t, h, "peers", "list", "--json")
	var peers []map[string]any
	if err := json.Unmarshal([]byte(out), &peers); err != nil || len(peers) != 3 {
		t.Fatalf("peers list --json: %v\n%s", err, out)
	}
	out = ok(t, h, "peers", "update", "agent-1", "--name", "db", "--group", "servers,eng")
	if !strings.Contains(out, "db.meshd.internal") || !strings.Contains(out, "All,servers,eng") {
		t.Fatalf("peers update:\n%s", out)
	}
	ok(t, h, "routes", "create", "--network", "192.168.7.0/24", "--peer", "db", "--masquerade")
	out = ok(t, h, "routes", "get", "192.168.7.0/24", "--json")
	if !strings.Contains(out, `"peers":["db"]`) {
		t.Fatalf("routes get --json:\n%s", out)
	}
	ok(t, h, "dns", "nameservers", "create", "corp", "--nameserver", "10.0.0.53", "--domain", "corp.example")
	ok(t, h, "dns", "records", "create", "nas", "--type", "A", "--value", "192.168.7.10")
	ok(t, h, "dns", "update", "--domain", "mesh.home.arpa")
	if out := ok(t, h, "dns", "get"); !strings.Contains(out, "mesh.home.arpa") {
		t.Fatalf("dns get:\n%s", out)
	}
	ok(t, h, "account", "update", "--login-expiration", "30d")
	if out := ok(t, h, "account", "get"); !strings.Contains(out, "720h0m0s") {
		t.Fatalf("account get:\n%s", out)
	}
	ok(t, h, "peers", "delete", "new")
	if _, code, msg := runAdmin(t, h, append(auth(h), "groups", "delete", "servers")...); code != 1 || !strings.Contains(msg, "used by policy web") {
		t.Fatalf("deleting a group in use: exit %d %q", code, msg)
	}
	out = ok(t, h, "events", "list")
	for _, want := range []string{"group.created", "setup_key.created", "policy.updated", "peer.updated", "route.created", "peer.deleted"} {
		if !strings.Contains(out, want) {
			t.Errorf("events list lacks %s:\n%s", want, out)
		}
	}
}

func TestAdminCommandErrors(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{append(auth(h), "policies", "create", "--name", "x", "--source", "nope", "--destination", "All"), 1, `no group "nope"`},
		{append(auth(h), "routes", "create", "--network", "10.1.2.3/33", "--peer", "agent-0"), 1, "not a CIDR"},
		{append(auth(h), "groups", "delete", "All"), 1, "cannot be deleted"},
		{append(auth(h), "peers", "get", "ghost"), 1, `no peer "ghost"`},
		{[]string{"--control", h.URL, "--token", "mat_wrong", "peers", "list"}, 1, "admin token not accepted"},
		{append(auth(h), "peers", "list", "--bogus"), 2, "bogus"},
		{append(auth(h), "peers", "get"), 2, "name the peer"},
		{append(auth(h), "setup-keys", "create", "--expires", "soon"), 2, "--expires"},
		{[]string{"peers", "list"}, 2, "--control"},
	}
	for _, c := range cases {
		_, code, msg := runAdmin(t, h, c.args...)
		if code != c.code || !strings.Contains(msg, c.msg) {
			t.Errorf("meshd admin %s: exit %d %q, want %d with %q", strings.Join(c.args, " "), code, msg, c.code, c.msg)
		}
	}
}

// On the control host, --data DIR is enough.
func TestAdminCommandWithDataDir(t *testing.T) {
	h := controltest.NewHarness(t, 1)
	out, code, msg := runAdmin(t, h, "--data", h.Dir, "peers", "list")
	if code != 0 || !strings.Contains(out, "agent-0") || !strings.Contains(out, "100.64.0.1") {
		t.Fatalf("exit %d %s:\n%s", code, msg, out)
	}
	// Also after the verb.
	if _, code, msg := runAdmin(t, h, "groups", "list", "--data", h.Dir); code != 0 {
		t.Fatalf("exit %d %s", code, msg)
	}
}

// `meshd admin tokens`: create shows the value once and it works; list
// marks the caller's token; delete revokes; the last one stays.
func TestAdminCommandTokens(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	var made struct{ Id, Name, Token string }
	if err := json.Unmarshal([]byte(ok(t, h, "tokens", "create", "alice", "--json")), &made); err != nil || made.Token == "" {
		t.Fatalf("tokens create --json: %+v, %v", made, err)
	}
	alice := []string{"--control", h.URL, "--token", made.Token}
	out, code, msg := runAdmin(t, h, append(alice, "tokens", "list")...)
	if code != 0 || !strings.Contains(out, "alice (this one)") || !strings.Contains(out, "bootstrap") || strings.Contains(out, made.Token) {
		t.Fatalf("tokens list as alice: exit %d %s\n%s", code, msg, out)
	}
	ok(t, h, "tokens", "delete", "alice")
	if _, code, msg := runAdmin(t, h, append(alice, "peers", "list")...); code != 1 || !strings.Contains(msg, "admin token not accepted") {
		t.Fatalf("deleted token: exit %d %q", code, msg)
	}
	if _, code, msg := runAdmin(t, h, append(auth(h), "tokens", "delete", "bootstrap")...); code != 1 || !strings.Contains(msg, "last one") {
		t.Fatalf("deleting the last token: exit %d %q", code, msg)
	}
}

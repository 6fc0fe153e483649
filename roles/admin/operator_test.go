package admin

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/jointoken"
)

// runAdminStderr runs `meshd admin ARGS...` against h and returns stdout
// and stderr; it fails the test on a non-zero exit.
func runAdminStderr(t *testing.T, h *controltest.Harness, args ...string) (string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	app := &cli.App{Name: "meshd", Writer: &out, ErrWriter: &errOut,
		Commands:       []*cli.Command{NewCommand(Options{HTTPClient: h.HTTPClient()})},
		ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(append([]string{"meshd", "admin"}, append(auth(h), args...)...)); err != nil {
		t.Fatalf("meshd admin %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String()
}

// `account update --login-expiration` leaves setup-key peers alone and
// warns how many opted-in peers the new value expires now.
func TestAccountUpdateWarnsOfExpiredPeers(t *testing.T) {
	h := controltest.NewHarness(t, 2)
	out, warn := runAdminStderr(t, h, "account", "update", "--login-expiration", "2m")
	if warn != "" || !strings.Contains(out, "logins expired:") {
		t.Fatalf("no peer opted in, yet:\n%s\nstderr: %s", out, warn)
	}
	h.Clock.Advance(time.Hour)
	if out := ok(t, h, "peers", "get", "agent-0"); !regexp.MustCompile(`login expiration:\s+off\n`).MatchString(out) {
		t.Fatalf("a setup-key peer has login expiration on:\n%s", out)
	}
	ok(t, h, "peers", "update", "agent-0", "--login-expiration=true")
	_, warn = runAdminStderr(t, h, "account", "update", "--login-expiration", "5m")
	if !strings.Contains(warn, "1 opted-in peer(s) are expired now") || !strings.Contains(warn, "--login-expiration off") {
		t.Fatalf("no warning naming the expired peer count: %q", warn)
	}
	out, warn = runAdminStderr(t, h, "account", "update", "--login-expiration", "0")
	if warn != "" || !regexp.MustCompile(`logins expired:\s+0\n`).MatchString(out) {
		t.Fatalf("expiration off:\n%s\nstderr: %s", out, warn)
	}
}

// `setup-keys create` prints the line that joins a machine, and --json has
// the join token; the token carries control's URL and the new key.
func TestSetupKeysCreatePrintsJoinLine(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	out := ok(t, h, "setup-keys", "create", "--name", "laptops")
	m := regexp.MustCompile(`join:\s+meshd agent --join (meshd1_\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no join line:\n%s", out)
	}
	tok, err := jointoken.Decode(m[1])
	if err != nil || tok.ControlURL != h.URL || !strings.Contains(out, tok.SetupKey) {
		t.Fatalf("join token %+v, %v:\n%s", tok, err, out)
	}
	if err := h.NewAgent(controltest.AgentOptions{Hostname: "joined"}).Login(tok.SetupKey); err != nil {
		t.Fatalf("the key of the join line does not join: %v", err)
	}

	out = ok(t, h, "setup-keys", "create", "--one-off", "--json")
	var key struct {
		Key         string `json:"key"`
		JoinToken   string `json:"join_token"`
		JoinCommand string `json:"join_command"`
	}
	if err := json.Unmarshal([]byte(out), &key); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tok, err = jointoken.Decode(key.JoinToken)
	if err != nil || tok.SetupKey != key.Key || key.JoinCommand != "meshd agent --join "+key.JoinToken {
		t.Fatalf("--json join fields %+v (%+v, %v)", key, tok, err)
	}
}

// With --data DIR, --control changes only the URL: the pin stays DIR's
// (unless --tls-pin), and `tokens create` prints the real URL and pin.
func TestDataDirPinKeptWithControlFlag(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	dir := t.TempDir()
	pin := "sha256:" + strings.Repeat("ab", 32)
	jt := jointoken.Token{ControlURL: "https://old.example:33073", Pin: pin, SetupKey: "K"}
	if err := os.WriteFile(filepath.Join(dir, "join-token"), []byte(jt.Encode()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(h.Boot.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code, msg := runAdmin(t, h, "--data", dir, "--control", h.URL, "tokens", "create", "ci")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, msg)
	}
	if !strings.Contains(out, "--control "+h.URL+" ") || !strings.Contains(out, "--tls-pin "+pin) || strings.Contains(out, "PIN") {
		t.Fatalf("tokens create does not show the real URL and DIR's pin:\n%s", out)
	}
	other := "sha256:" + strings.Repeat("cd", 32)
	out, _, _ = runAdmin(t, h, "--data", dir, "--control", h.URL, "--tls-pin", other, "tokens", "create", "ci2")
	if !strings.Contains(out, "--tls-pin "+other) {
		t.Fatalf("--tls-pin did not win over DIR's pin:\n%s", out)
	}
}

// Keys without a name get distinct names; the list has an ID column; a
// one-off key's limit is 1, not "unlimited".
func TestSetupKeyNamesIDsAndOneOffLimit(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	var names []string
	for range 2 {
		var k struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		if err := json.Unmarshal([]byte(ok(t, h, "setup-keys", "create", "--one-off", "--json")), &k); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k.Name, "key-") {
			t.Fatalf("default name %q", k.Name)
		}
		names = append(names, k.Name)
		if out := ok(t, h, "setup-keys", "get", k.ID); !regexp.MustCompile(`usage limit:\s+1 \(one-off\)`).MatchString(out) {
			t.Fatalf("one-off key:\n%s", out)
		}
		if out := ok(t, h, "setup-keys", "list"); !strings.Contains(out, k.ID) {
			t.Fatalf("list has no ID %s:\n%s", k.ID, out)
		}
	}
	if names[0] == names[1] {
		t.Fatalf("two keys named %q", names[0])
	}
	if out := ok(t, h, "setup-keys", "list"); !regexp.MustCompile(`^NAME\s+ID\s+PREFIX`).MatchString(out) {
		t.Fatalf("list header:\n%s", out)
	}
}

// `server status --json` gives counters as numbers, zeros included.
func TestServerStatusJSONNumbers(t *testing.T) {
	h := controltest.NewHarness(t, 0, controltest.WithOptions(func(o *control.Options) {
		o.Status = func(st *adminv1.ServerStatus) {
			st.Signal = &adminv1.SignalStatus{Registered: 5}
			st.Relay = &adminv1.RelayStatus{BytesToPeers: 1 << 40}
		}
	}))
	out := ok(t, h, "server", "status", "--json")
	var st struct {
		Peers  *json.Number `json:"peers"`
		Signal map[string]any
		Relay  map[string]any
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	if err := dec.Decode(&st); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if st.Peers == nil || *st.Peers != "0" {
		t.Fatalf("peers missing or not 0:\n%s", out)
	}
	for m, want := range map[*map[string]any]map[string]string{
		&st.Signal: {"registered": "5", "streams": "0", "refused": "0"},
		&st.Relay:  {"bytes_to_peers": "1099511627776", "allocations": "0"},
	} {
		for k, v := range want {
			if n, isNum := (*m)[k].(json.Number); !isNum || string(n) != v {
				t.Fatalf("%s = %#v, want the number %s:\n%s", k, (*m)[k], v, out)
			}
		}
	}
}

// `server status` lists the replicas and says when this one lost its
// database.
func TestServerStatusReplicasAndStore(t *testing.T) {
	r := controltest.NewReplicas(t, 2)
	out := ok(t, r[1], "server", "status")
	if !regexp.MustCompile(`store:\s+available`).MatchString(out) || strings.Count(out, "replica:") != 2 ||
		!regexp.MustCompile(`replica:\s+\S+ `+regexp.QuoteMeta(r[1].URL)+`, .*\(this one\)`).MatchString(out) ||
		!strings.Contains(out, r[0].URL) {
		t.Fatalf("status of two replicas:\n%s", out)
	}
	r[1].Faults.Lose("connection refused")
	// The next change finds the database lost.
	if _, code, msg := runAdmin(t, r[1], append(auth(r[1]), "groups", "create", "eng")...); code == 0 ||
		!strings.Contains(msg, "store unavailable: connection refused; changes are refused until the database is back") ||
		strings.Contains(msg, "cannot reach control") { // control answered: its database is what is lost
		t.Fatalf("write while the database is lost: exit %d: %s", code, msg)
	}
	out = ok(t, r[1], "server", "status")
	if !regexp.MustCompile(`store:\s+UNAVAILABLE since .*: connection refused; this replica serves its streams from memory`).MatchString(out) {
		t.Fatalf("status while the database is lost:\n%s", out)
	}
}

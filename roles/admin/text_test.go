package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
	"meshd/api/admin/v1/adminv1connect"
)

// evil is what a peer can name itself: a title change, a bell, a carriage
// return, a right-to-left override, NUL, a tab and a C1 CSI.
const evil = "\x1b]0;pwn\x07host\rname\u202egnp.exe\x00\tx\u009b2J"

// rawAdmin serves text as the server stored it before it was cleaned (or as
// a hostile server would send it).
type rawAdmin struct {
	adminv1connect.UnimplementedAdminServiceHandler
}

func (rawAdmin) peer() *adminv1.Peer {
	return &adminv1.Peer{Id: "p1", Name: evil, DnsName: evil, OverlayIp: "100.64.0.1", Hostname: evil, Os: evil, Version: evil,
		Groups: []string{"All", evil}}
}

func (r rawAdmin) ListPeers(context.Context, *connect.Request[adminv1.ListPeersRequest]) (*connect.Response[adminv1.ListPeersResponse], error) {
	return connect.NewResponse(&adminv1.ListPeersResponse{Peers: []*adminv1.Peer{r.peer()}}), nil
}

func (r rawAdmin) GetPeer(context.Context, *connect.Request[adminv1.GetPeerRequest]) (*connect.Response[adminv1.Peer], error) {
	return connect.NewResponse(r.peer()), nil
}

func (rawAdmin) ListGroups(context.Context, *connect.Request[adminv1.ListGroupsRequest]) (*connect.Response[adminv1.ListGroupsResponse], error) {
	return connect.NewResponse(&adminv1.ListGroupsResponse{Groups: []*adminv1.Group{{Id: "g1", Name: evil, Peers: []string{evil}}}}), nil
}

func (rawAdmin) ListSetupKeys(context.Context, *connect.Request[adminv1.ListSetupKeysRequest]) (*connect.Response[adminv1.ListSetupKeysResponse], error) {
	return connect.NewResponse(&adminv1.ListSetupKeysResponse{SetupKeys: []*adminv1.SetupKey{{Id: "k1", Name: evil, Prefix: evil}}}), nil
}

func (rawAdmin) ListAdminTokens(context.Context, *connect.Request[adminv1.ListAdminTokensRequest]) (*connect.Response[adminv1.ListAdminTokensResponse], error) {
	return connect.NewResponse(&adminv1.ListAdminTokensResponse{AdminTokens: []*adminv1.AdminToken{{Id: "t1", Name: evil}}}), nil
}

func (rawAdmin) ListEvents(context.Context, *connect.Request[adminv1.ListEventsRequest]) (*connect.Response[adminv1.ListEventsResponse], error) {
	return connect.NewResponse(&adminv1.ListEventsResponse{Events: []*adminv1.Event{{Id: "1", Actor: evil, Action: "peer.added",
		TargetType: "peer", TargetName: evil, Detail: evil}}}), nil
}

func (rawAdmin) DeletePeer(context.Context, *connect.Request[adminv1.DeletePeerRequest]) (*connect.Response[adminv1.DeletePeerResponse], error) {
	return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("peer "+evil+" is busy"))
}

// rawText reports a byte or rune a terminal would act on.
func rawText(s string) (rune, bool) {
	for _, r := range s {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u202e' || r == utf8.RuneError {
			return r, true
		}
	}
	return 0, false
}

func TestAdminOutputHasNoControlCharacters(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(adminv1connect.NewAdminServiceHandler(rawAdmin{}))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	run := func(args ...string) (string, string) {
		var out, errOut bytes.Buffer
		app := &cli.App{Name: "meshd", Writer: &out, ErrWriter: &errOut,
			Commands:       []*cli.Command{NewCommand(Options{HTTPClient: srv.Client()})},
			ExitErrHandler: func(*cli.Context, error) {}}
		err := app.Run(append([]string{"meshd", "admin", "--control", srv.URL, "--token", "mat_x"}, args...))
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		return out.String(), msg
	}
	for _, args := range [][]string{{"peers", "list"}, {"peers", "get", "p1"}, {"groups", "list"}, {"setup-keys", "list"},
		{"tokens", "list"}, {"events", "list"}, {"peers", "delete", "p1"}} {
		out, msg := run(args...)
		if out == "" && msg == "" {
			t.Fatalf("%s: no output", strings.Join(args, " "))
		}
		for _, s := range []string{out, msg} {
			if r, bad := rawText(s); bad {
				t.Errorf("%s: raw %U in output:\n%q", strings.Join(args, " "), r, s)
			}
		}
		if !strings.Contains(out+msg, `\x1b]0;pwn\x07host\x0dname\u202egnp.exe\x00\x09x\u009b2J`) {
			t.Errorf("%s: the name is not shown escaped:\n%s%s", strings.Join(args, " "), out, msg)
		}
	}
	// JSON stays JSON: escaped on the wire, the same string once decoded.
	out, msg := run("peers", "get", "p1", "--json")
	var p struct{ Hostname string }
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Hostname != evil {
		t.Fatalf("peers get --json: %v %s: hostname %q\n%q", err, msg, p.Hostname, out)
	}
	if r, bad := rawText(strings.TrimSuffix(out, "\n")); bad {
		t.Fatalf("peers get --json: raw %U:\n%q", r, out)
	}
}

func TestSafe(t *testing.T) {
	for in, want := range map[string]string{
		"laptop":           "laptop",
		"café ü 日本":        "café ü 日本",
		"a\x1b[2Jb":        `a\x1b[2Jb`,
		"\u202eexe.txt":    `\u202eexe.txt`,
		"bad\xffutf8":      `bad\xffutf8`,
		"line\u2028break":  `line\u2028break`,
		"del\x7f c1\u0085": `del\x7f c1\u0085`,
	} {
		if got := safe(in); got != want {
			t.Errorf("safe(%q) = %q, want %q", in, got, want)
		}
	}
}

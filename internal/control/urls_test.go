package control_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/jointoken"
)

// Join tokens name every replica the store knows, this one first, so that
// a machine can join while the replica that printed its token is down.
func TestJoinTokensNameEveryReplica(t *testing.T) {
	others := []string{"https://b.example:443", "https://c.example:443"}
	h := controltest.NewHarness(t, 0, controltest.WithOptions(func(o *control.Options) {
		self := o.PublicURL
		o.ControlURLs = func() []string { return append(slices.Clone(others), self) } // self included: listed once
	}))
	want := append([]string{h.URL}, others...)
	b, err := os.ReadFile(filepath.Join(h.Dir, control.JoinTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	boot, err := jointoken.Decode(string(b))
	if err != nil || !slices.Equal(boot.URLs(), want) || boot.ControlURL != h.URL {
		t.Fatalf("bootstrap token %+v (%v), want URLs %v", boot, err, want)
	}
	k, err := h.Admin.CreateSetupKey(context.Background(), connect.NewRequest(&adminv1.CreateSetupKeyRequest{Name: "more"}))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jointoken.Decode(k.Msg.JoinToken)
	if err != nil || !slices.Equal(tok.URLs(), want) || tok.SetupKey != k.Msg.Key {
		t.Fatalf("setup key token %+v (%v), want URLs %v", tok, err, want)
	}
}

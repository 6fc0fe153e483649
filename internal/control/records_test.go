package control_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control/controltest"
)

// A record may not answer for a peer's name (resolvers would get both
// answers); a peer joining with a record's name takes the next free one; a
// single-label CNAME target is a name of the mesh.
func TestRecordsAndPeerNamesDoNotCollide(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	ctx := context.Background()
	as := agents(t, h, "db", "web")
	record := func(name, typ, value string) error {
		_, err := h.Admin.CreateDNSRecord(ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{Name: name, Type: typ, Value: value}))
		return err
	}
	for _, name := range []string{"db", "DB", "db.meshd.internal", "db.meshd.internal."} {
		wantCode(t, record(name, "A", "10.1.1.1"), connect.CodeFailedPrecondition, "would answer for peer db (db.meshd.internal)")
	}
	if err := record("db.example.org", "A", "10.1.1.1"); err != nil { // answered as db.example.org.meshd.internal: no clash
		t.Fatal(err)
	}

	if err := record("nas", "A", "192.168.1.10"); err != nil {
		t.Fatal(err)
	}
	nas := h.AddAgent(controltest.AgentOptions{Hostname: "nas"})
	if nas.Self.Name != "nas-2" || nas.Self.DnsName != "nas-2.meshd.internal" {
		t.Fatalf("peer joining as nas got %s (%s), want nas-2", nas.Self.Name, nas.Self.DnsName)
	}
	_, err := h.Admin.UpdatePeer(ctx, connect.NewRequest(&adminv1.UpdatePeerRequest{Id: "web", Name: ptr("nas")}))
	wantCode(t, err, connect.CodeFailedPrecondition, "taken by the dns record nas")
	_, err = h.Admin.UpdateDNSRecord(ctx, connect.NewRequest(&adminv1.UpdateDNSRecordRequest{Id: "nas", Name: ptr("web")}))
	wantCode(t, err, connect.CodeFailedPrecondition, "would answer for peer web")

	// A domain under which a record would land on a peer's name.
	if err := record("web.corp.lan", "A", "10.2.2.2"); err != nil {
		t.Fatal(err)
	}
	_, err = h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{DnsDomain: ptr("corp.lan")}))
	wantCode(t, err, connect.CodeFailedPrecondition, "would answer for peer web (web.corp.lan)")

	wantCode(t, record("loop", "CNAME", "loop.meshd.internal"), connect.CodeInvalidArgument, "points at itself")
	if err := record("alias", "CNAME", "db"); err != nil {
		t.Fatal(err)
	}
	target := func(m *controltest.Map) string {
		for _, r := range m.GetDns().GetRecords() {
			if r.Name == "alias" {
				return r.Value
			}
		}
		return ""
	}
	as[1].WaitFor(t, "alias in the mesh domain", func(m *controltest.Map) bool { return target(m) == "db.meshd.internal" })
	got := must[adminv1.DNSRecord](t)(h.Admin.GetDNSRecord(ctx, connect.NewRequest(&adminv1.GetDNSRecordRequest{Id: "alias"})))
	if got.Value != "db" {
		t.Fatalf("stored CNAME value %q, want it as given", got.Value)
	}
	must[adminv1.Account](t)(h.Admin.UpdateAccount(ctx, connect.NewRequest(&adminv1.UpdateAccountRequest{DnsDomain: ptr("mesh.example.com")})))
	as[1].WaitFor(t, "alias follows the domain", func(m *controltest.Map) bool { return target(m) == "db.mesh.example.com" })
}

package agent

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/testutil"
	"meshd/wg"
)

// echoOn serves a TCP echo on port of d's netstack until the test ends.
func echoOn(tb testing.TB, d wg.Device, port int) {
	tb.Helper()
	ln, err := d.Net().ListenTCP(&net.TCPAddr{Port: port})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}

// echoes reports whether a TCP echo through d to dst:port answers within d.
func echoes(d wg.Device, dst netip.Addr, port uint16, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(dst, port))
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("meshd")); err != nil {
		return false
	}
	buf := make([]byte, 5)
	_, err = io.ReadFull(c, buf)
	return err == nil && string(buf) == "meshd"
}

// TestMeshEnforcesPolicyPorts: with the default All→All policy everything
// passes; once an admin narrows it to TCP 7000, only that port works
// through the tunnel (both ways), and ping and other ports do not.
func TestMeshEnforcesPolicyPorts(t *testing.T) {
	w := newWorld(t)
	a, b := w.agent("fwa"), w.agent("fwb")
	da, ipa := waitUp(t, a)
	db, ipb := waitUp(t, b)
	for _, port := range []int{7000, 7001} {
		echoOn(t, da, port)
		echoOn(t, db, port)
	}
	waitPing(t, da, ipb, 15*time.Second)
	if !echoes(da, ipb, 7001, 5*time.Second) {
		t.Fatal("port 7001 closed under the All→All policy")
	}

	ctx := context.Background()
	pols, err := w.control.Admin.ListPolicies(ctx, connect.NewRequest(&adminv1.ListPoliciesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(pols.Msg.Policies) != 1 {
		t.Fatalf("policies %v, want the default one", pols.Msg.Policies)
	}
	tcp := "tcp"
	if _, err := w.control.Admin.UpdatePolicy(ctx, connect.NewRequest(&adminv1.UpdatePolicyRequest{
		Id: pols.Msg.Policies[0].Id, Protocol: &tcp, Ports: &adminv1.StringList{Values: []string{"7000"}},
	})); err != nil {
		t.Fatal(err)
	}
	// The new maps arrive: ping stops (ICMP is not allowed any more).
	testutil.WaitFor(t, 10*time.Second, "ping blocked", func() bool {
		return ping(da, ipb, 200*time.Millisecond) != nil && ping(db, ipa, 200*time.Millisecond) != nil
	})
	for _, c := range []struct {
		from     wg.Device
		to       netip.Addr
		port     uint16
		want     bool
		describe string
	}{
		{da, ipb, 7000, true, "a to b:7000"},
		{db, ipa, 7000, true, "b to a:7000"},
		{da, ipb, 7001, false, "a to b:7001"},
		{db, ipa, 7001, false, "b to a:7001"},
	} {
		timeout := 5 * time.Second
		if !c.want {
			timeout = time.Second
		}
		if got := echoes(c.from, c.to, c.port, timeout); got != c.want {
			t.Errorf("%s: echo %v, want %v", c.describe, got, c.want)
		}
	}
	if cs := db.Counters(); cs.FilteredIn+cs.FilteredOut == 0 {
		t.Errorf("b's device counted no denied packet: %+v", cs)
	}
}

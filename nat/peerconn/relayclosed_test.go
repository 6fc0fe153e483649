package peerconn

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"meshd/wg/bind"
)

// TestRelayConnAfterClose: once its session is closed, a relay conn that
// WireGuard still holds as the peer's path ends reads with net.ErrClosed
// (the device's reader stops) and drops writes, in one packet or in
// batches, instead of failing each with pion's "the agent is closed".
func TestRelayConnAfterClose(t *testing.T) {
	servers := turnServer(t)
	a, b := pair(t, Relay, servers, false)
	s := a.newSession(11)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	waitPair(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.WaitConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("keepalive")); err != nil {
		t.Errorf("write after close: %v, want the packet dropped", err)
	}
	if bc, ok := c.(bind.BatchConn); !ok {
		t.Error("relay conn lost its batch methods")
	} else if err := bc.WriteBatch([][]byte{[]byte("one"), []byte("two")}); err != nil {
		t.Errorf("batch after close: %v", err)
	}
	if _, err := c.Read(make([]byte, 1500)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after close: %v, want net.ErrClosed", err)
	}
}

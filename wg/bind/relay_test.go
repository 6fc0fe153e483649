package bind

import (
	"net"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// batchConn is a BatchConn fake: WriteBatch records its batches, Receive
// keeps fn for the test to call as the conn's reader would.
type batchConn struct {
	net.Conn // a net.Pipe end: Read blocks until the test closes it

	mu       sync.Mutex
	batches  [][][]byte
	fn       func([][]byte)
	maxMsg   int
	cancels  int
	receives int
}

var _ BatchConn = (*batchConn)(nil)

func (c *batchConn) WriteBatch(bufs [][]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b [][]byte
	for _, p := range bufs {
		b = append(b, append([]byte(nil), p...))
	}
	c.batches = append(c.batches, b)
	return nil
}

func (c *batchConn) Receive(maxMsg int, fn func([][]byte)) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fn, c.maxMsg = fn, maxMsg
	c.receives++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.fn = nil
		c.cancels++
	}
}

func (c *batchConn) receiver() func([][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fn
}

func newBatchConn(tb testing.TB) *batchConn {
	tb.Helper()
	c1, c2 := net.Pipe()
	tb.Cleanup(func() { c1.Close(); c2.Close() })
	return &batchConn{Conn: c1}
}

// A relayed path over a BatchConn sends each batch with one WriteBatch and
// takes what the conn's reader hands it into WireGuard, in order, as
// packets of the path.
func TestRelayOverBatchConn(t *testing.T) {
	b := New(Options{MaxPacket: 1500})
	defer b.Stop()
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	relayRecv := fns[len(fns)-1]
	c := newBatchConn(t)
	r, err := b.Relay(c)
	if err != nil {
		t.Fatal(err)
	}
	if c.receives != 1 || c.maxMsg != 1500 {
		t.Fatalf("Receive called %d times with max %d, want once with the bind's MaxPacket 1500", c.receives, c.maxMsg)
	}

	out := [][]byte{[]byte("one"), []byte("two"), []byte("three")}
	if err := b.Send(out, r); err != nil {
		t.Fatal(err)
	}
	if len(c.batches) != 1 || len(c.batches[0]) != 3 || string(c.batches[0][2]) != "three" {
		t.Fatalf("sent batches %q, want one batch of the three", c.batches)
	}

	// The reader's slices are only valid during the call: the bind copies.
	in := [][]byte{[]byte("alpha"), []byte("beta"), make([]byte, 1501), []byte("gamma")}
	c.receiver()(in)
	in[0][0] = 'X'
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes, eps := make([]int, len(bufs)), make([]conn.Endpoint, len(bufs))
	var got []string
	for deadline := time.Now().Add(5 * time.Second); len(got) < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("received %q, want 3 packets", got)
		}
		n, err := relayRecv(bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if eps[i] != r {
				t.Fatalf("packet %d came from %v, want the relay %v", i, eps[i], r)
			}
			got = append(got, string(bufs[i][:sizes[i]]))
		}
	}
	if got[0] != "alpha" || got[1] != "beta" || got[2] != "gamma" {
		t.Fatalf("received %q, want alpha beta gamma (the oversize one skipped)", got)
	}

	r.Stop()
	if c.cancels != 1 {
		t.Fatalf("Stop cancelled the receiver %d times, want once", c.cancels)
	}
	if err := b.Send(out, r); err == nil {
		t.Fatal("send through a stopped relay succeeded")
	}
}

// While the bind is closed (device down), nothing reads the relay queue:
// the conn's reader must not block on it, or the STUN behind the messages
// (ICE consent) would wait too.
func TestRelayDeliverDoesNotBlockWhileClosed(t *testing.T) {
	b := New(Options{MaxPacket: 1500, RelayQueue: 2})
	defer b.Stop()
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	c := newBatchConn(t)
	r, err := b.Relay(c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	fn := c.receiver()
	fn([][]byte{[]byte("a"), []byte("b")}) // fills the queue
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_, relayDrops0 := b.Drops()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn([][]byte{[]byte("c"), []byte("d"), []byte("e")})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the conn's reader blocked on a closed bind's full queue")
	}
	if _, d := b.Drops(); d-relayDrops0 != 3 {
		t.Fatalf("%d relayed packets counted as dropped, want 3", d-relayDrops0)
	}
}

// A reader blocked on a full queue while the bind is open lets go when the
// bind closes.
func TestRelayDeliverUnblocksOnClose(t *testing.T) {
	b := New(Options{MaxPacket: 1500, RelayQueue: 1})
	defer b.Stop()
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	c := newBatchConn(t)
	r, err := b.Relay(c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.receiver()([][]byte{[]byte("a"), []byte("b"), []byte("c")})
	}()
	select {
	case <-done:
		t.Fatal("three packets went into a queue of one with nothing reading it")
	case <-time.After(50 * time.Millisecond): // blocked, as it should be while open
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the conn's reader stayed blocked after Close")
	}
}

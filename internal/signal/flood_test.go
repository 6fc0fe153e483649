package signal_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	signalv1 "meshd/api/signal/v1"
	"meshd/api/signal/v1/signalv1connect"
	"meshd/internal/keys"
	"meshd/internal/signal"
	"meshd/internal/signal/signaltest"
	"meshd/internal/signalclient"
)

// h2cFrom is an HTTP/2 (h2c) client whose connections come from local, so
// that a test can play a second source address on loopback.
func h2cFrom(local string) *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	return &http.Client{Transport: &http.Transport{Protocols: p, DialContext: d.DialContext}}
}

// The attack: register throwaway keys by the thousand to fill the tables of
// a victim's senders. With tickets, none registers (each costs signal one
// signature check, or less once the source is over its rate), and the
// victim stays reachable at once, from a peer that was registered before
// and from a new one.
func TestRegistrationFloodIsRefused(t *testing.T) {
	tickets := signaltest.NewTickets(t)
	h := signaltest.Start(t, signaltest.Options{H2C: true, Quiet: true, Signal: signal.Options{TicketKey: tickets.Public}})
	exp := time.Now().Add(time.Hour)
	peer := func(o signaltest.PeerOptions) *signaltest.Peer {
		if o.Key.IsZero() {
			o.Key, _ = keys.Generate()
		}
		o.Ticket = tickets.Issue(t, o.Key.Public(), "acct-a", exp)
		return h.Peer(t, o)
	}
	in := newInbox()
	victim := peer(signaltest.PeerOptions{OnMessage: in.add})
	before := peer(signaltest.PeerOptions{})

	const flood = 20000
	hc := h2cFrom("127.0.0.1")
	defer hc.CloseIdleConnections()
	rpc := signalv1connect.NewSignalServiceClient(hc, h.URL)
	var (
		ticketRefused, limited, other atomic.Int64
		next                          atomic.Int64
		wg                            sync.WaitGroup
		lastOther                     atomic.Pointer[error]
	)
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= flood {
				var pub keys.Key // a throwaway key: random, canonical
				rand.Read(pub[:])
				pub[31] &= 0x7f
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				bs := rpc.Connect(ctx)
				// A refusal before the Hello is read makes Send fail with
				// EOF; Receive has the server's answer either way.
				err := bs.Send(&signalv1.ClientMessage{Msg: &signalv1.ClientMessage_Hello{Hello: &signalv1.Hello{PublicKey: pub[:]}}})
				if err == nil || errors.Is(err, io.EOF) {
					_, err = bs.Receive()
				}
				switch connect.CodeOf(err) {
				case connect.CodePermissionDenied:
					ticketRefused.Add(1)
				case connect.CodeResourceExhausted:
					limited.Add(1)
				default:
					other.Add(1)
					lastOther.Store(&err)
				}
				_ = bs.CloseRequest()
				_ = bs.CloseResponse()
				cancel()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)

	// At once: the peer registered before reaches the victim, and so does
	// one that registers now from another address.
	reached := time.Now()
	if err := before.Send(ctx(t), victim.PublicKey(), []byte("from before")); err != nil {
		t.Fatalf("peer registered before the flood: %v", err)
	}
	after := peer(signaltest.PeerOptions{HTTPClient: h2cFrom("127.0.0.2")})
	if err := after.Send(ctx(t), victim.PublicKey(), []byte("from after")); err != nil {
		t.Fatalf("peer registered after the flood: %v", err)
	}
	got := in.wait(t, 2)
	if string(got[0].payload) != "from before" || string(got[1].payload) != "from after" {
		t.Fatalf("victim got %q, %q", got[0].payload, got[1].payload)
	}
	st := h.Signal.Stats()
	t.Logf("flood of %d ticketless registrations in %s: %d refused for the ticket, %d over the source's rate, %d other; victim reached by both peers %s after it; stats %+v",
		flood, took.Round(time.Millisecond), ticketRefused.Load(), limited.Load(), other.Load(), time.Since(reached).Round(time.Millisecond), st)
	if other.Load() != 0 {
		t.Fatalf("%d flood registrations ended otherwise, last: %v", other.Load(), *lastOther.Load())
	}
	if st.Registered != 3 || st.TicketRefused+st.SourceLimited != flood {
		t.Fatalf("stats %+v: want 3 registered and all %d of the flood refused", st, flood)
	}
	if limited.Load() == 0 {
		t.Fatal("the source was never rate limited")
	}
}

// A valid ticket of another account registers, but reaches no one outside
// it: its envelopes to the victim are answered NOT_CONNECTED, so a member
// of one network can neither fill another's tables nor learn who is online
// there. Expired and foreign tickets are refused with the reason.
func TestTicketsScopeRegistrationAndRouting(t *testing.T) {
	tickets := signaltest.NewTickets(t)
	h := signaltest.Start(t, signaltest.Options{Signal: signal.Options{TicketKey: tickets.Public}})
	exp := time.Now().Add(time.Hour)
	peer := func(account string, in *inbox) *signaltest.Peer {
		k, _ := keys.Generate()
		o := signaltest.PeerOptions{Key: k, Ticket: tickets.Issue(t, k.Public(), account, exp)}
		if in != nil {
			o.OnMessage = in.add
		}
		return h.Peer(t, o)
	}
	in := newInbox()
	victim := peer("acct-a", in)
	friend := peer("acct-a", nil)
	outsider := peer("acct-b", nil)
	if err := outsider.Send(ctx(t), victim.PublicKey(), []byte("x")); !errors.Is(err, signalclient.ErrNotConnected) {
		t.Fatalf("another account's peer: %v, want ErrNotConnected", err)
	}
	if err := friend.Send(ctx(t), victim.PublicKey(), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := in.wait(t, 1); string(got[0].payload) != "hi" || got[0].from != friend.PublicKey() {
		t.Fatalf("victim got %q from %s", got[0].payload, got[0].from)
	}

	other := signaltest.NewTickets(t)
	for _, tt := range []struct {
		name, want string
		ticket     func(keys.Key) []byte
	}{
		{"expired", "ticket expired", func(k keys.Key) []byte { return tickets.Issue(t, k, "acct-a", time.Now().Add(-time.Hour)) }},
		{"another control", "ticket invalid", func(k keys.Key) []byte { return other.Issue(t, k, "acct-a", exp) }},
		{"another key's", "ticket invalid", func(keys.Key) []byte { return tickets.Issue(t, victim.PublicKey(), "acct-a", exp) }},
		{"none", "no ticket", func(keys.Key) []byte { return nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := keys.Generate()
			r := h.Dial(t)
			r.Ticket = tt.ticket(k.Public())
			_, err := r.Hello(k.Public())
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("hello: %v, want permission denied saying %q", err, tt.want)
			}
		})
	}

	// A peer whose ticket expired is unreachable, and its account's peers
	// are told why; other accounts learn nothing.
	stale, _ := keys.Generate()
	r := h.Dial(t)
	r.Ticket = tickets.Issue(t, stale.Public(), "acct-a", time.Now().Add(-time.Hour))
	if _, err := r.Hello(stale.Public()); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("expired ticket: %v", err)
	}
	err := friend.Send(ctx(t), stale.Public(), []byte("x"))
	if !errors.Is(err, signalclient.ErrNotConnected) || !strings.Contains(err.Error(), "ticket expired") {
		t.Fatalf("send to a peer refused for its ticket: %v, want ErrNotConnected saying the ticket expired", err)
	}
	err = outsider.Send(ctx(t), stale.Public(), []byte("x"))
	if !errors.Is(err, signalclient.ErrNotConnected) || strings.Contains(err.Error(), "ticket") {
		t.Fatalf("another account's peer: %v, want ErrNotConnected without the reason", err)
	}
}

package relay_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/pion/ice/v3"
	"github.com/pion/stun/v2"

	"meshd/internal/testutil"
	"meshd/internal/turncred"
	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

// iceURIs parses urls and attaches the credential, as the agent does with
// the relay entries of its network map.
func iceURIs(tb testing.TB, c turncred.Credential, urls ...string) []*stun.URI {
	tb.Helper()
	var out []*stun.URI
	for _, u := range urls {
		uri, err := stun.ParseURI(u)
		if err != nil {
			tb.Fatalf("parse %s: %v", u, err)
		}
		uri.Username, uri.Password = c.Username, c.Password
		out = append(out, uri)
	}
	return out
}

// relayOnlyAgent is a pion/ice agent that gathers relay candidates only.
func relayOnlyAgent(tb testing.TB, urls []*stun.URI) *ice.Agent {
	tb.Helper()
	zero := time.Duration(0)
	a, err := ice.NewAgent(&ice.AgentConfig{
		Urls:                   urls,
		NetworkTypes:           []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:         []ice.CandidateType{ice.CandidateTypeRelay},
		InsecureSkipVerify:     true, // self-signed turns: certificate; see the package doc
		RelayAcceptanceMinWait: &zero,
		LoggerFactory:          relaytest.QuietLogger{},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = a.Close() })
	return a
}

// iceRelayPair connects two relay-only ICE agents and sends packets both
// ways over the selected pair. It returns the bytes b received.
func iceRelayPair(t *testing.T, urlsA, urlsB []*stun.URI) int {
	t.Helper()
	a, b := relayOnlyAgent(t, urlsA), relayOnlyAgent(t, urlsB)
	trickle := func(from, to *ice.Agent) {
		if err := from.OnCandidate(func(c ice.Candidate) {
			if c == nil {
				return
			}
			rc, err := ice.UnmarshalCandidate(c.Marshal())
			if err == nil {
				err = to.AddRemoteCandidate(rc)
			}
			if err != nil {
				t.Errorf("candidate %s: %v", c, err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	trickle(a, b)
	trickle(b, a)
	ufragA, pwdA, _ := a.GetLocalUserCredentials()
	ufragB, pwdB, _ := b.GetLocalUserCredentials()
	if err := a.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	if err := b.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	accepted := make(chan *ice.Conn, 1)
	go func() {
		c, err := b.Accept(ctx, ufragA, pwdA)
		if err != nil {
			t.Errorf("accept: %v", err)
		}
		accepted <- c
	}()
	ca, err := a.Dial(ctx, ufragB, pwdB)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	cb := <-accepted
	if cb == nil {
		t.FailNow()
	}
	pair, err := a.GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("selected pair: %v", err)
	}
	if pair.Local.Type() != ice.CandidateTypeRelay || pair.Remote.Type() != ice.CandidateTypeRelay {
		t.Fatalf("selected pair %s, want relay to relay", pair)
	}

	const n = 100
	total := 0
	buf := make([]byte, 2000)
	for i := 0; i < n; i++ {
		msg := bytes.Repeat([]byte{byte(i)}, 1280)
		if _, err := ca.Write(msg); err != nil {
			t.Fatalf("write: %v", err)
		}
		_ = cb.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := cb.Read(buf)
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if !bytes.Equal(buf[:m], msg) {
			t.Fatalf("packet %d: got %d bytes of %d", i, m, buf[0])
		}
		total += m
		if _, err := cb.Write(buf[:m]); err != nil {
			t.Fatalf("echo: %v", err)
		}
		_ = ca.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := ca.Read(buf); err != nil {
			t.Fatalf("read echo %d: %v", i, err)
		}
	}
	return total
}

// TestICEThroughRelay: two pion/ice agents, as the meshd agent runs them,
// gather relay candidates from the meshd relay (one over UDP, one over
// TURN-over-TLS on the port shared with HTTPS) and connect through it.
func TestICEThroughRelay(t *testing.T) {
	addr, s := sharedPort(t)
	tlsPort := portOf(t, addr)
	udpURLs := relay.URLs("127.0.0.1", int(s.UDPAddr().Port()), tlsPort)
	urlsA := iceURIs(t, cred("ice-a"), udpURLs[1])              // turn:...?transport=udp
	urlsB := iceURIs(t, cred("ice-b"), udpURLs[len(udpURLs)-1]) // turns:...?transport=tcp
	if got := iceRelayPair(t, urlsA, urlsB); got != 100*1280 {
		t.Fatalf("got %d bytes", got)
	}
	st := s.Stats()
	if st.AllocationsByTransport["udp"] != 1 || st.AllocationsByTransport["tls"] != 1 {
		t.Fatalf("allocations %v, want one over UDP and one over TLS", st.AllocationsByTransport)
	}
	testutil.WaitFor(t, 10*time.Second, "the byte counters", func() bool { return s.Stats().BytesToPeers >= 2*100*1280 })
}

// TestICEThroughCoturn: the same agents through coturn with
// use-auth-secret, credentials from internal/turncred.
func TestICEThroughCoturn(t *testing.T) {
	const secret = "coturn-ice-secret"
	c := relaytest.StartCoturn(t, secret, "meshd")
	url := "turn:" + c.Addr + "?transport=udp"
	credA := relaytest.Credential([]byte(secret), "ice-a", time.Hour)
	credB := relaytest.Credential([]byte(secret), "ice-b", time.Hour)
	if got := iceRelayPair(t, iceURIs(t, credA, url), iceURIs(t, credB, "turn:"+c.Addr+"?transport=tcp")); got != 100*1280 {
		t.Fatalf("got %d bytes", got)
	}
}

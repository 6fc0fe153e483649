package path

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const s = time.Second

var (
	hostPair  = Pair{Local: Candidate{"host", "192.168.1.2:51820"}, Remote: Candidate{"host", "192.168.1.3:51820"}}
	srflxPair = Pair{Local: Candidate{"srflx", "198.51.100.2:51820"}, Remote: Candidate{"srflx", "198.51.100.3:40000"}}
	relayPair = Pair{Local: Candidate{"relay", "198.51.100.1:50000"}, Remote: Candidate{"relay", "198.51.100.1:50001"}}
)

// step is one event and the actions it must produce (as Action.String()).
type step struct {
	ev   Event
	want []string
}

func run(t *testing.T, m *Machine, steps []step) {
	t.Helper()
	for i, st := range steps {
		got := m.Step(st.ev)
		var gs []string
		for _, a := range got {
			gs = append(gs, a.String())
		}
		if strings.Join(gs, "\n") != strings.Join(st.want, "\n") {
			t.Fatalf("step %d %T%+v:\n got: %q\nwant: %q", i, st.ev, st.ev, gs, st.want)
		}
	}
}

// relayFirst is the relay-first configuration most tests use.
const relayFirst = -1

func controlling() *Machine {
	return New(Config{Controlling: true, HaveRelay: true, RelayDelay: relayFirst})
}

func TestRelayFirstThenUpgradeToDirect(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 11}, nil},
		{SessionStarted{at(0), Relay, 21}, nil},
		{SessionChanged{at(0), Direct, 11, Checking, Pair{}}, nil},
		// The relay answers first: traffic starts there at once.
		{SessionChanged{at(100 * time.Millisecond), Relay, 21, Connected, relayPair}, []string{"set relayed 21 " + relayPair.String()}},
		{Tick{at(150 * time.Millisecond), at(120 * time.Millisecond)}, nil},
		// Direct wins as soon as it connects.
		{SessionChanged{at(300 * time.Millisecond), Direct, 11, Connected, srflxPair}, []string{"set direct 11 " + srflxPair.String()}},
		// WireGuard carries its session (the handshake made over the relay)
		// on over the direct path, which the direct session confirms: the
		// relay lingers for RelayLinger, then it is closed.
		{Tick{at(s), at(120 * time.Millisecond)}, nil},
		{Tick{at(30*s + 999*time.Millisecond), at(120 * time.Millisecond)}, nil},
		{Tick{at(31 * s), at(120 * time.Millisecond)}, []string{"stop relay 21 (direct path works)"}},
		// WireGuard rekeys over the direct path.
		{Tick{at(2 * time.Minute), at(2*time.Minute - s)}, nil},
		{Tick{at(3 * time.Minute), at(2*time.Minute - s)}, nil},
	})
	if p, pair := m.Path(); p != PathDirect || pair != srflxPair {
		t.Fatalf("path = %v %v, want direct %v", p, pair, srflxPair)
	}
	if !m.Healthy(at(3 * time.Minute)) {
		t.Fatal("not healthy with a handshake a minute old")
	}
}

func TestDirectFirstKeepsRelayUntilLinger(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(50 * time.Millisecond), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		// The relay connecting later never replaces a direct path.
		{SessionChanged{at(80 * time.Millisecond), Relay, 2, Connected, relayPair}, nil},
		{Tick{at(time.Second), at(60 * time.Millisecond)}, nil},
		{Tick{at(31 * s), at(60 * time.Millisecond)}, []string{"stop relay 2 (direct path works)"}},
		// The direct path drops: the relay comes back, traffic waits for it.
		{SessionChanged{at(40 * s), Direct, 1, Disconnected, Pair{}}, []string{"start relay (no direct path)"}},
		{SessionStarted{at(40 * s), Relay, 3}, nil},
		{SessionChanged{at(40*s + 100*time.Millisecond), Relay, 3, Connected, relayPair}, []string{"set relayed 3 " + relayPair.String()}},
		// The direct session recovers: back to direct.
		{SessionChanged{at(42 * s), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
	})
}

func TestFailedDirectRetriesWithBackoffWhileRelayed(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(s), Relay, 2, Connected, relayPair}, []string{"set relayed 2 " + relayPair.String()}},
		{SessionChanged{at(9 * s), Direct, 1, Failed, Pair{}}, nil},
	})
	// Restarts at 1s, 2s, 4s, ... after each failure, capped at 30s.
	now := at(9 * s)
	id := uint64(100)
	for _, wait := range []time.Duration{1, 2, 4, 8, 16, 30, 30} {
		wait *= s
		if got := m.Next(); !got.Equal(now.Add(wait)) {
			t.Fatalf("next restart at %v, want %v", got.Sub(t0), now.Add(wait).Sub(t0))
		}
		run(t, m, []step{
			{Tick{now.Add(wait - time.Millisecond), at(s)}, nil},
			{Tick{now.Add(wait), at(s)}, []string{"start direct (no session)"}},
			{SessionStarted{now.Add(wait), Direct, id}, nil},
		})
		now = now.Add(wait + 3*s)
		run(t, m, []step{{SessionChanged{now, Direct, id, Failed, Pair{}}, nil}})
		id++
	}
	// Finally direct works: upgrade, and the backoff starts over.
	run(t, m, []step{
		{Tick{now.Add(30 * s), now}, []string{"start direct (no session)"}},
		{SessionStarted{now.Add(30 * s), Direct, 500}, nil},
		{SessionChanged{now.Add(31 * s), Direct, 500, Connected, srflxPair}, []string{"set direct 500 " + srflxPair.String()}},
		{SessionChanged{now.Add(40 * s), Direct, 500, Failed, Pair{}}, []string{"set relayed 2 " + relayPair.String()}},
	})
	if got, want := m.Next(), now.Add(41*s); !got.Equal(want) {
		t.Fatalf("after a success the backoff restarts at 1s: next %v, want %v", got.Sub(t0), want.Sub(t0))
	}
}

func TestStaleSessionEventsIgnored(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(s), Direct, 1, Failed, Pair{}}, nil},
		{Tick{at(2 * s), time.Time{}}, []string{"start direct (no session)"}},
		{SessionStarted{at(2 * s), Direct, 3}, nil},
		// A late event of session 1 changes nothing.
		{SessionChanged{at(2 * s), Direct, 1, Connected, hostPair}, nil},
		{SessionChanged{at(3 * s), Direct, 3, Connected, hostPair}, []string{"set direct 3 " + hostPair.String()}},
	})
}

func TestWatchdogNoFirstHandshake(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(s), Relay, 2, Connected, relayPair}, []string{"set relayed 2 " + relayPair.String()}},
		{SessionChanged{at(2 * s), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		{Tick{at(20*s + 999*time.Millisecond), time.Time{}}, nil},
		// ICE says the path works, WireGuard never shook hands over it.
		{Tick{at(21 * s), time.Time{}}, []string{
			"stop direct 1 (no wireguard handshake 20s after the path was set)",
			"set relayed 2 " + relayPair.String(),
		}},
		{Tick{at(22 * s), time.Time{}}, []string{"start direct (no session)"}},
	})
	if !m.Next().IsZero() && m.Next().Before(at(22*s)) {
		t.Fatalf("next %v is in the past", m.Next().Sub(t0))
	}
}

func TestWatchdogStaleHandshake(t *testing.T) {
	m := New(Config{Controlling: true, HaveRelay: false})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionChanged{at(s), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		{Tick{at(2 * s), at(2 * s)}, nil},
		{Tick{at(2*s + DefaultHandshakeStale - time.Millisecond), at(2 * s)}, nil},
		{Tick{at(2*s + DefaultHandshakeStale), at(2 * s)}, []string{"stop direct 1 (last wireguard handshake 3m15s ago)"}},
	})
	if p, _ := m.Path(); p != None {
		t.Fatalf("path %v after the watchdog fired, want none", p)
	}
	if m.Healthy(at(2*s + DefaultHandshakeStale)) {
		t.Fatal("healthy without a path")
	}
}

func TestNoRelayServersNeverStartsRelay(t *testing.T) {
	m := New(Config{Controlling: true})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionChanged{at(5 * s), Direct, 1, Failed, Pair{}}, nil},
		{Tick{at(6 * s), time.Time{}}, []string{"start direct (no session)"}},
	})
	// The map gains a relay: it starts; it loses it: it stops.
	run(t, m, nil)
	if got := m.SetHaveRelay(at(7*s), true); len(got) != 1 || got[0].String() != "start relay (no direct path)" {
		t.Fatalf("SetHaveRelay(true) = %v", got)
	}
	m.Step(SessionStarted{at(7 * s), Relay, 9})
	if got := m.SetHaveRelay(at(8*s), false); len(got) != 1 || got[0].String() != "stop relay 9 (no relay servers)" {
		t.Fatalf("SetHaveRelay(false) = %v", got)
	}
}

func TestNetworkChangeRestartsDirectAtOnce(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(s), Relay, 2, Connected, relayPair}, []string{"set relayed 2 " + relayPair.String()}},
		{SessionChanged{at(5 * s), Direct, 1, Failed, Pair{}}, nil},
		{Tick{at(6 * s), at(s)}, []string{"start direct (no session)"}},
		{SessionStarted{at(6 * s), Direct, 3}, nil},
		{SessionChanged{at(9 * s), Direct, 3, Failed, Pair{}}, nil},
		// Backoff says 11s; a new network address says now, and the relay is
		// restarted too since it carries the traffic.
		{NetworkChanged{At: at(10 * s)}, []string{
			"stop relay 2 (network changed)",
			"start direct (no session)",
			"start relay (no direct path)",
		}},
	})
}

func TestControlledAsksAndRetries(t *testing.T) {
	m := New(Config{Controlling: false, HaveRelay: true, RelayDelay: relayFirst})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		// Nobody answers the requests (the remote is offline).
		{Tick{at(4 * s), time.Time{}}, nil},
		{Tick{at(5 * s), time.Time{}}, nil},
		{Tick{at(6 * s), time.Time{}}, []string{"start direct (no session)", "start relay (no direct path)"}},
		// The controlling peer offers: the sessions run.
		{SessionStarted{at(7 * s), Direct, 40}, nil},
		{SessionStarted{at(7 * s), Relay, 41}, nil},
		{SessionChanged{at(7 * s), Direct, 40, Connected, hostPair}, []string{"set direct 40 " + hostPair.String()}},
		{SessionChanged{at(7 * s), Relay, 41, Connected, relayPair}, nil},
		// The controlled side never closes the relay itself ...
		{Tick{at(60 * s), at(8 * s)}, nil},
		// ... the controlling one does.
		{SessionChanged{at(61 * s), Relay, 41, Closed, Pair{}}, nil},
		{Tick{at(70 * s), at(8 * s)}, nil},
		// Direct fails: ask for both.
		{SessionChanged{at(80 * s), Direct, 40, Failed, Pair{}}, []string{"start relay (no direct path)"}},
		{Tick{at(81 * s), at(8 * s)}, []string{"start direct (no session)"}},
	})
}

func TestRemoteRequestRestartsRateLimited(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{Answered{at(s), Direct, 1}, nil},
		{SessionChanged{at(s), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		// The remote restarted and asks for a direct session.
		{RemoteRequest{at(10 * s), Direct, 0}, []string{"stop direct 1 (remote lost the session)", "start direct (no session)"}},
		{SessionStarted{at(10 * s), Direct, 3}, nil},
		// Asking again at once is held back for RestartMinInterval.
		{RemoteRequest{at(10*s + 100*time.Millisecond), Direct, 3}, []string{"stop direct 3 (remote asked for a new session)"}},
		{Tick{at(11 * s), time.Time{}}, []string{"start direct (no session)"}},
	})
	// A controlled machine ignores requests.
	c := New(Config{HaveRelay: true, RelayDelay: relayFirst})
	c.Step(Started{at(0)})
	if got := c.Step(RemoteRequest{at(s), Direct, 0}); got != nil {
		t.Fatalf("controlled machine acted on a request: %v", got)
	}
}

func TestRemoteCloseRestartsAfterMinInterval(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(500 * time.Millisecond), Direct, 1, Closed, Pair{}}, nil},
		{Tick{at(s), time.Time{}}, []string{"start direct (no session)"}},
	})
}

func TestNewSessionReplacesWorkingOne(t *testing.T) {
	m := New(Config{HaveRelay: false})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionChanged{at(s), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		// The controlling peer restarted and offers anew: the old path is
		// gone until the new session connects.
		{SessionStarted{at(9 * s), Direct, 7}, nil},
		{SessionChanged{at(9 * s), Direct, 7, Connected, srflxPair}, []string{"set direct 7 " + srflxPair.String()}},
	})
}

func TestNextIsZeroBeforeStart(t *testing.T) {
	m := controlling()
	if !m.Next().IsZero() {
		t.Fatal("a machine that has not started wants a tick")
	}
	if got := m.Step(Tick{at(s), time.Time{}}); got != nil {
		t.Fatalf("a machine that has not started acted: %v", got)
	}
}

func TestSendFailedBacksOff(t *testing.T) {
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		// The peer is offline: both offers bounce.
		{SendFailed{at(10 * time.Millisecond), Direct, 1}, nil},
		{SendFailed{at(10 * time.Millisecond), Relay, 2}, nil},
		{Tick{at(500 * time.Millisecond), time.Time{}}, nil},
		// A bounce for an older session changes nothing.
		{SendFailed{at(600 * time.Millisecond), Direct, 99}, nil},
		// It comes online and asks: no waiting for the backoff.
		{RemoteRequest{at(700 * time.Millisecond), Direct, 0}, []string{"start direct (no session)"}},
		{SessionStarted{at(700 * time.Millisecond), Direct, 3}, nil},
		{Tick{at(1010 * time.Millisecond), time.Time{}}, []string{"start relay (no direct path)"}},
	})
	c := New(Config{HaveRelay: false})
	run(t, c, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SendFailed{at(0), Direct, 0}, nil},
		{Tick{at(999 * time.Millisecond), time.Time{}}, nil},
		{Tick{at(s), time.Time{}}, []string{"start direct (no session)"}},
	})
}

func TestRequestCrossingAnOfferResendsIt(t *testing.T) {
	m := New(Config{Controlling: true})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		// The controlled peer started at the same time and asked before our
		// offer reached it (or the offer was lost): send it again.
		{RemoteRequest{at(10 * time.Millisecond), Direct, 0}, []string{"resend direct 1 (remote asked before answering)"}},
		{Answered{at(20 * time.Millisecond), Direct, 1}, nil},
		// Once answered, a request naming no session means the remote
		// restarted and lost it: start over at once.
		{RemoteRequest{at(100 * time.Millisecond), Direct, 0}, []string{"stop direct 1 (remote lost the session)", "start direct (no session)"}},
	})
}

func TestControlledWaitsForTheNextOfferAfterClose(t *testing.T) {
	m := New(Config{})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(100 * time.Millisecond), Direct, 1}, nil},
		// The controlling peer restarts the session: no request from us ...
		{SessionChanged{at(2 * s), Direct, 1, Closed, Pair{}}, nil},
		{Tick{at(3 * s), time.Time{}}, nil},
		// ... its offer arrives.
		{SessionStarted{at(3 * s), Direct, 2}, nil},
		// Closed again and no offer this time: ask after RequestTimeout.
		{SessionChanged{at(4 * s), Direct, 2, Closed, Pair{}}, nil},
		{Tick{at(8*s + 999*time.Millisecond), time.Time{}}, nil},
		{Tick{at(9 * s), time.Time{}}, []string{"start direct (no session)"}},
	})
}

func TestDirectHeadStartBeforeRelay(t *testing.T) {
	m := New(Config{Controlling: true, HaveRelay: true})
	ms := time.Millisecond
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{Tick{at(499 * ms), time.Time{}}, nil},
		// Direct did not make it in time: the relay starts.
		{Tick{at(500 * ms), time.Time{}}, []string{"start relay (no direct path)"}},
	})
	// Direct connects within the head start: no relay at all, even later.
	m = New(Config{Controlling: true, HaveRelay: true})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionChanged{at(60 * ms), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		{Tick{at(5 * s), at(100 * ms)}, nil},
		{Tick{at(60 * s), at(100 * ms)}, nil},
		// It drops: the relay starts at once.
		{SessionChanged{at(61 * s), Direct, 1, Disconnected, Pair{}}, []string{"start relay (no direct path)"}},
	})
	// The direct session fails early: no need to wait out the head start.
	m = New(Config{Controlling: true, HaveRelay: true, RelayDelay: 5 * s})
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionChanged{at(s), Direct, 1, Failed, Pair{}}, []string{"start relay (no direct path)"}},
	})
	if got := New(Config{Controlling: true, HaveRelay: true}); got.Next() != (time.Time{}) {
		t.Fatal("next before start")
	}
}

// directUp brings a machine to a direct path over session 1 (hostPair)
// whose WireGuard handshake happened at 1s; the relay session 2 was closed
// after the linger (controlling side) or never offered (controlled side).
func directUp(t *testing.T, controllingSide bool) *Machine {
	t.Helper()
	m := New(Config{Controlling: controllingSide, HaveRelay: true})
	steps := []step{
		{Started{at(0)}, []string{"start direct (no session)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionChanged{at(50 * time.Millisecond), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		{Tick{at(s), at(s)}, nil},
	}
	if controllingSide {
		steps = append(steps[:2:2], append([]step{{Answered{at(10 * time.Millisecond), Direct, 1}, nil}}, steps[2:]...)...)
	}
	run(t, m, steps)
	return m
}

// quietUntil ticks the machine every second from `from` to `to` with the
// given last handshake and fails on any action.
func quietUntil(t *testing.T, m *Machine, from, to time.Duration, hs time.Time) {
	t.Helper()
	for d := from; d <= to; d += s {
		if next := m.Next(); !next.IsZero() && next.Before(at(d-s)) {
			t.Fatalf("at %v: next tick %v is in the past", d, next.Sub(t0))
		}
		if got := m.Step(Tick{at(d), hs}); got != nil {
			t.Fatalf("at %v: %v", d, got)
		}
		if p, pair := m.Path(); p != PathDirect {
			t.Fatalf("at %v: path %v %v, want direct", d, p, pair)
		}
	}
}

// relayThenDirect is a controlling machine whose relay connected first and
// carried WireGuard's handshake (at 400ms), then whose direct session
// connected at 3s and became the path.
func relayThenDirect(t *testing.T) *Machine {
	t.Helper()
	ms := time.Millisecond
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(300 * ms), Relay, 2, Connected, relayPair}, []string{"set relayed 2 " + relayPair.String()}},
		{Tick{at(s), at(400 * ms)}, nil},
		{SessionChanged{at(3 * s), Direct, 1, Connected, srflxPair}, []string{"set direct 1 " + srflxPair.String()}},
	})
	return m
}

// The bug of bench/NOTES.md: an address that appeared on the host (nothing
// went away) restarted the direct session, the new session found the same
// pair, and 20 s later the watchdog failed the working path because
// WireGuard had made no new handshake (it has no reason to before its
// two-minute rekey); the relay carried the traffic for a second, every 20 s
// until the rekey. Now the path is kept while the new session looks, and
// nothing happens until WireGuard rekeys.
func TestSpuriousNetworkChangeKeepsDirectPath(t *testing.T) {
	m := directUp(t, true)
	run(t, m, []step{
		{NetworkChanged{At: at(30 * s)}, []string{"start direct (network changed; the path stays meanwhile)"}},
		{SessionStarted{at(30 * s), Direct, 5}, nil},
		// No relay while the new session checks, even after the head start.
		{Tick{at(31 * s), at(s)}, nil},
		// The new session's late event of session 1 changes nothing.
		{SessionChanged{at(31 * s), Direct, 1, Disconnected, Pair{}}, nil},
		{SessionChanged{at(31*s + 30*time.Millisecond), Direct, 5, Connected, hostPair}, []string{"set direct 5 " + hostPair.String()}},
	})
	if !m.Healthy(at(32 * s)) {
		t.Fatal("not healthy after the new session took over the path")
	}
	// The handshake of 1s carries the path until WireGuard rekeys.
	quietUntil(t, m, 32*s, 2*time.Minute+20*s, at(s))
	quietUntil(t, m, 2*time.Minute+21*s, 5*time.Minute, at(2*time.Minute+20*s))
}

// The controlled side of the same change asks for a new session naming the
// one it has; the controlling side restarts it without closing it first,
// and neither side drops the path or asks for a relay.
func TestSpuriousNetworkChangeBothSides(t *testing.T) {
	controlled := directUp(t, false)
	run(t, controlled, []step{
		{NetworkChanged{At: at(30 * s)}, []string{"start direct (network changed; the path stays meanwhile)"}},
		{Tick{at(30*s + 600*time.Millisecond), at(s)}, nil},
	})
	controllingM := directUp(t, true)
	run(t, controllingM, []step{
		{RemoteRequest{at(30 * s), Direct, 1}, []string{"start direct (remote asked for a new session; the path stays meanwhile)"}},
		{SessionStarted{at(30 * s), Direct, 6}, nil},
		{Tick{at(31 * s), at(s)}, nil},
		{SessionChanged{at(31 * s), Direct, 6, Connected, hostPair}, []string{"set direct 6 " + hostPair.String()}},
	})
	run(t, controlled, []step{
		// The offer replaces the working session: the path is held.
		{SessionStarted{at(30*s + 700*time.Millisecond), Direct, 6}, nil},
		{Tick{at(31 * s), at(s)}, nil},
		{SessionChanged{at(31 * s), Direct, 6, Connected, hostPair}, []string{"set direct 6 " + hostPair.String()}},
	})
	for name, m := range map[string]*Machine{"controlled": controlled, "controlling": controllingM} {
		t.Run(name, func(t *testing.T) { quietUntil(t, m, 32*s, 2*time.Minute, at(s)) })
	}
}

// A held path goes when the session that was to replace it fails: the relay
// takes over at once.
func TestHeldPathDropsWhenNewSessionFails(t *testing.T) {
	m := directUp(t, true)
	run(t, m, []step{
		{NetworkChanged{At: at(30 * s)}, []string{"start direct (network changed; the path stays meanwhile)"}},
		{SessionStarted{at(30 * s), Direct, 5}, nil},
		// Signal is down: the offer bounces. WireGuard still uses the path.
		{SendFailed{at(40 * s), Direct, 5}, nil},
		{Tick{at(41 * s), at(s)}, []string{"start direct (no session)"}},
		{SessionStarted{at(41 * s), Direct, 7}, nil},
	})
	if p, _ := m.Path(); p != PathDirect {
		t.Fatalf("path %v after a bounced offer, want the held direct path", p)
	}
	run(t, m, []step{
		{SessionChanged{at(49 * s), Direct, 7, Failed, Pair{}}, []string{"start relay (no direct path)"}},
	})
	if p, _ := m.Path(); p != None {
		t.Fatalf("path %v after the new session failed, want none", p)
	}
}

// A change that took the path's local address away is a real one: the path
// is dropped and the relay gets going after the direct head start.
func TestNetworkChangeLosingThePathAddress(t *testing.T) {
	m := directUp(t, true)
	run(t, m, []step{
		{NetworkChanged{At: at(30 * s), Gone: []netip.Addr{netip.MustParseAddr("192.168.1.2")}}, []string{
			"stop direct 1 (network changed)",
			"start direct (no session)",
		}},
		{SessionStarted{at(30 * s), Direct, 5}, nil},
		{Tick{at(30*s + 500*time.Millisecond), at(s)}, []string{"start relay (no direct path)"}},
		{SessionStarted{at(30*s + 500*time.Millisecond), Relay, 6}, nil},
		{SessionChanged{at(30*s + 600*time.Millisecond), Relay, 6, Connected, relayPair}, []string{"set relayed 6 " + relayPair.String()}},
		{SessionChanged{at(31 * s), Direct, 5, Connected, srflxPair}, []string{"set direct 5 " + srflxPair.String()}},
	})
	// WireGuard's session survived the roam: no new handshake is needed
	// before its rekey, the one of 1s counts, also for closing the relay.
	quietUntil(t, m, 32*s, 61*s, at(s))
	run(t, m, []step{{Tick{at(62 * s), at(s)}, []string{"stop relay 6 (direct path works)"}}})
	quietUntil(t, m, 63*s, 2*time.Minute, at(s))
}

// A path set after a death while WireGuard has a live session inherits its
// handshake; one set with an old (or no) handshake must make its own within
// HandshakeTimeout.
func TestWatchdogAfterPathLoss(t *testing.T) {
	m := directUp(t, true)
	run(t, m, []step{
		{SessionChanged{at(60 * s), Direct, 1, Disconnected, Pair{}}, []string{"start relay (no direct path)"}},
		{SessionStarted{at(60 * s), Relay, 2}, nil},
		{SessionChanged{at(61 * s), Relay, 2, Connected, relayPair}, []string{"set relayed 2 " + relayPair.String()}},
	})
	quietUntil2 := func(from, to time.Duration, hs time.Time) {
		t.Helper()
		for d := from; d <= to; d += s {
			if got := m.Step(Tick{at(d), hs}); got != nil {
				t.Fatalf("at %v: %v", d, got)
			}
		}
	}
	quietUntil2(62*s, 2*time.Minute, at(s))
	// No rekey ever came: the stale check ends the path.
	run(t, m, []step{
		{Tick{at(s + DefaultHandshakeStale), at(s)}, []string{"stop relay 2 (last wireguard handshake 3m15s ago)"}},
	})

	// The same loss with a handshake too old to inherit.
	m = directUp(t, true)
	run(t, m, []step{
		{Tick{at(2*time.Minute + 56*s), at(s)}, nil},
		{SessionChanged{at(2*time.Minute + 56*s), Direct, 1, Disconnected, Pair{}}, []string{"start relay (no direct path)"}},
		{SessionStarted{at(2*time.Minute + 56*s), Relay, 2}, nil},
		{SessionChanged{at(2*time.Minute + 57*s), Relay, 2, Connected, relayPair}, []string{"set relayed 2 " + relayPair.String()}},
		{Tick{at(3*time.Minute + 16*s), at(s)}, nil},
		{Tick{at(3*time.Minute + 17*s), at(s)}, []string{"stop relay 2 (no wireguard handshake 20s after the path was set)"}},
	})
}

func TestLostLocal(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.168.1.2"), netip.MustParseAddr("2001:db8::2")
	other4 := netip.MustParseAddr("10.9.9.1")
	for _, c := range []struct {
		local Candidate
		gone  []netip.Addr
		want  bool
	}{
		{Candidate{"host", "192.168.1.2:51820"}, nil, false},
		{Candidate{"host", "192.168.1.2:51820"}, []netip.Addr{other4, v6}, false},
		{Candidate{"host", "192.168.1.2:51820"}, []netip.Addr{v4}, true},
		{Candidate{"host", "[2001:db8::2]:51820"}, []netip.Addr{v6}, true},
		// A server-reflexive candidate's base is unknown: its family counts.
		{Candidate{"srflx", "198.51.100.2:51820"}, []netip.Addr{other4}, true},
		{Candidate{"srflx", "198.51.100.2:51820"}, []netip.Addr{v6}, false},
		{Candidate{"host", "garbage"}, []netip.Addr{v6}, true},
	} {
		if got := lostLocal(c.local, c.gone); got != c.want {
			t.Errorf("lostLocal(%v, %v) = %v, want %v", c.local, c.gone, got, c.want)
		}
	}
}

// The bug of bench/NOTES.md (51 peers, 46 relay sessions open long after
// every path was direct): the relay connected first, WireGuard shook hands
// over it, then the direct session connected. WireGuard keeps its session
// across the change of endpoint and makes no handshake before its rekey
// (two minutes after the last one), so waiting for a handshake over the
// direct path kept the relay session (a TURN allocation) that long, or for
// ever on a quiet tunnel. The direct session's connectivity checks, made
// from the WireGuard socket to the address WireGuard now sends to, prove
// the path: the relay closes RelayLinger after the switch.
func TestRelayClosedAfterSwitchWithoutNewHandshake(t *testing.T) {
	ms := time.Millisecond
	m := relayThenDirect(t)
	// No handshake after the switch: the one of 400ms is all there is.
	for d := 4 * s; d < 3*s+DefaultRelayLinger+s; d += s {
		if got := m.Step(Tick{at(d), at(400 * ms)}); got != nil {
			t.Fatalf("at %v: %v", d, got)
		}
	}
	run(t, m, []step{
		{Tick{at(3*s + DefaultRelayLinger + s), at(400 * ms)}, []string{"stop relay 2 (direct path works)"}},
	})
	if _, running, _ := m.Session(Relay); running {
		t.Fatal("relay session still running")
	}
	if p, _ := m.Path(); p != PathDirect {
		t.Fatalf("path %v, want direct", p)
	}
}

// A direct path that carries WireGuard's session from the relay is proven
// only while the direct session stays connected: when it drops during the
// linger, the relay (still up) takes the traffic back at once, and the
// linger starts over once the direct session recovers.
func TestRelayStaysWhenDirectDropsDuringLinger(t *testing.T) {
	ms := time.Millisecond
	m := relayThenDirect(t)
	run(t, m, []step{
		{Tick{at(4 * s), at(400 * ms)}, nil},
		// The checks stop being answered 20 s later.
		{SessionChanged{at(24 * s), Direct, 1, Disconnected, Pair{}}, []string{"set relayed 2 " + relayPair.String()}},
		{Tick{at(34 * s), at(400 * ms)}, nil},
		{Tick{at(40 * s), at(400 * ms)}, nil},
		// They are answered again: direct, and the relay lingers anew.
		{SessionChanged{at(41 * s), Direct, 1, Connected, srflxPair}, []string{"set direct 1 " + srflxPair.String()}},
		{Tick{at(42 * s), at(400 * ms)}, nil},
		{Tick{at(71 * s), at(400 * ms)}, nil},
		{Tick{at(72 * s), at(400 * ms)}, []string{"stop relay 2 (direct path works)"}},
	})
}

// Without a live WireGuard session (no handshake yet, over the relay or
// anywhere), the direct session's checks alone prove nothing: the relay
// stays until WireGuard shakes hands over the direct path, and the
// watchdog fails a direct path that never does (TestWatchdogNoFirstHandshake).
func TestRelayStaysUntilAHandshakeWithoutALiveSession(t *testing.T) {
	ms := time.Millisecond
	m := controlling()
	run(t, m, []step{
		{Started{at(0)}, []string{"start direct (no session)", "start relay (no direct path)"}},
		{SessionStarted{at(0), Direct, 1}, nil},
		{SessionStarted{at(0), Relay, 2}, nil},
		{SessionChanged{at(300 * ms), Relay, 2, Connected, relayPair}, []string{"set relayed 2 " + relayPair.String()}},
		{SessionChanged{at(500 * ms), Direct, 1, Connected, hostPair}, []string{"set direct 1 " + hostPair.String()}},
		{Tick{at(s), time.Time{}}, nil},
		{Tick{at(10 * s), time.Time{}}, nil},
		// The first handshake, over the direct path: the linger starts.
		{Tick{at(11 * s), at(10*s + 500*ms)}, nil},
		{Tick{at(40 * s), at(10*s + 500*ms)}, nil},
		{Tick{at(41 * s), at(10*s + 500*ms)}, []string{"stop relay 2 (direct path works)"}},
	})
}

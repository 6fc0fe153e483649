package relay_test

import (
	"context"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"meshd/internal/testutil"
	"meshd/nat/relay"
	"meshd/nat/relay/relaytest"
)

// uclientTotals matches turnutils_uclient's summary line.
var uclientTotals = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)

// TestCoturnClient runs coturn's turnutils_uclient against the meshd
// relay over UDP, TCP and TLS (on a port shared with HTTPS): in
// client-to-client mode (-y) it allocates twice, binds channels and sends
// 1280-byte messages from each allocation to the other. The uclient
// computes its TURN REST credentials itself (-W secret), so this also
// checks that our credential scheme is coturn's.
func TestCoturnClient(t *testing.T) {
	bin := relaytest.NeedBinary(t, relaytest.UClientBin)
	const n, size = 50, 1280
	for _, tc := range []struct {
		transport string
		flags     []string
	}{
		{relaytest.UDP, nil},
		{relaytest.TCP, []string{"-t"}},
		{relaytest.TLS, []string{"-t", "-S"}},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			t.Parallel() // the uclient mostly waits
			var port int
			var s *relay.Server
			if tc.transport == relaytest.TLS {
				var addr string
				addr, s = sharedPort(t)
				port = portOf(t, addr)
			} else {
				s = startRelay(t, nil)
				port = int(s.UDPAddr().Port())
			}
			args := append([]string{
				"-y",      // client to client: two allocations relaying to each other
				"-c",      // no RTCP allocation
				"-z", "5", // ms between messages
				"-n", strconv.Itoa(n), "-l", strconv.Itoa(size),
				"-W", string(testSecret), "-u", "coturn-client", "-r", relay.DefaultRealm,
				"-p", strconv.Itoa(port),
			}, tc.flags...)
			args = append(args, "127.0.0.1")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
			}
			m := uclientTotals.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no totals in uclient output:\n%s", out)
			}
			sent, _ := strconv.Atoi(string(m[1]))
			recv, _ := strconv.Atoi(string(m[2]))
			if sent != 2*n || recv != 2*n {
				t.Fatalf("uclient sent %d and received %d messages, want %d each:\n%s", sent, recv, 2*n, out)
			}
			var st relay.Stats
			testutil.WaitFor(t, 10*time.Second, "the byte counters", func() bool {
				st = s.Stats()
				return st.BytesToPeers >= 2*n*size && st.BytesFromPeers >= 2*n*size
			})
			if st.AllocationsByTransport[tc.transport] == 0 && st.AllocationsTotal < 2 {
				t.Fatalf("stats %+v: no allocations over %s", st, tc.transport)
			}
			if v := scrape(t, s.Metrics(), `meshd_relay_stun_messages_total{method="channel_bind"}`); v < 2 {
				t.Fatalf("%v channel binds, want the uclient's two", v)
			}
		})
	}
}

// TestAgainstCoturn: meshd's TURN client (pion/turn, which the agent's
// pion/ice uses) allocates on coturn configured with use-auth-secret,
// with credentials from internal/turncred, and relays both ways, over UDP
// and TCP.
func TestAgainstCoturn(t *testing.T) {
	const secret = "coturn-shared-secret"
	c := relaytest.StartCoturn(t, secret, "meshd")
	for _, transport := range []string{relaytest.UDP, relaytest.TCP} {
		t.Run(transport, func(t *testing.T) {
			a := mustAllocate(t, c.Addr, transport, relaytest.Credential([]byte(secret), "agent-a", time.Hour), nil)
			b := mustAllocate(t, c.Addr, relaytest.UDP, relaytest.Credential([]byte(secret), "agent-b", time.Hour), nil)
			if p := a.RelayAddr().Port; p < c.PortMin || p > c.PortMax {
				t.Fatalf("coturn relayed on %d, outside its range %d-%d", p, c.PortMin, c.PortMax)
			}
			const n, size = 100, 1280
			if got := relaytest.Exchange(t, a, b, n, size); got != n*size {
				t.Fatalf("got %d bytes", got)
			}
			if got := relaytest.Exchange(t, b, a, n, size); got != n*size {
				t.Fatalf("got %d bytes", got)
			}
		})
	}
	// coturn refuses what we would refuse.
	expired := relaytest.Credential([]byte(secret), "agent-c", -time.Minute)
	if _, err := relaytest.Allocate(t, c.Addr, relaytest.UDP, expired, nil); err == nil {
		t.Fatal("coturn accepted an expired credential")
	}
	forged := relaytest.Credential([]byte("not-the-secret"), "agent-c", time.Hour)
	if _, err := relaytest.Allocate(t, c.Addr, relaytest.UDP, forged, nil); err == nil {
		t.Fatal("coturn accepted a forged credential")
	}
}

func portOf(tb testing.TB, addr string) int {
	tb.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	return int(ap.Port())
}

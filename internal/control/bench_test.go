package control_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
)

// fanoutWorld joins n agents in groups of 50 (each group reaches itself)
// plus one "monitor" peer, with control's production coalescing delay.
func fanoutWorld(b *testing.B, n int) (*controltest.Harness, []*controltest.Agent) {
	b.Helper()
	h := controltest.NewHarness(b, 0, controltest.Quiet(), controltest.Patience(time.Minute), controltest.WithOptions(func(o *control.Options) {
		o.Coalesce = control.DefaultCoalesce
	}))
	ctx := context.Background()
	api := h.Admin
	if _, err := api.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})); err != nil {
		b.Fatal(err)
	}
	groups := (n + 49) / 50
	keys := make([]string, groups+1)
	for g := 0; g <= groups; g++ {
		name := fmt.Sprintf("g%d", g)
		if g == groups {
			name = "monitor"
		}
		if _, err := api.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: name})); err != nil {
			b.Fatal(err)
		}
		if _, err := api.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: name,
			Sources: []string{name}, Destinations: []string{name}, Bidirectional: true})); err != nil {
			b.Fatal(err)
		}
		k, err := api.CreateSetupKey(ctx, connect.NewRequest(&adminv1.CreateSetupKeyRequest{Name: name, AutoGroups: []string{name}}))
		if err != nil {
			b.Fatal(err)
		}
		keys[g] = k.Msg.Key
	}
	h.AddAgent(controltest.AgentOptions{Hostname: "monitor", SetupKey: keys[groups]})
	var as []*controltest.Agent
	for i := range n {
		as = append(as, h.AddAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("peer-%d", i), SetupKey: keys[i%groups]}))
	}
	for i, a := range as {
		want := min(50, n/groups) - 1
		if i%groups < n%groups {
			want++
		}
		a.WaitFor(b, "settled", func(m *controltest.Map) bool {
			if len(m.Peers) < want {
				return false
			}
			for _, p := range m.Peers {
				if !p.Online {
					return false
				}
			}
			return true
		})
	}
	return h, as
}

func seesMonitor(want bool) func(*controltest.Map) bool {
	return func(m *controltest.Map) bool { return slices.Contains(controltest.PeerNames(m), "monitor") == want }
}

// BenchmarkPolicyChangeFanout: one policy change (All may reach the monitor
// peer, on and off) until every one of 1,000 connected streams has its new
// map. ns/op is that latency, coalescing delay included.
func BenchmarkPolicyChangeFanout(b *testing.B) {
	h, as := fanoutWorld(b, 1000)
	ctx := context.Background()
	p, err := h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "probe",
		Sources: []string{"All"}, Destinations: []string{"monitor"}, Protocol: "tcp", Ports: []string{"22"},
		Enabled: ptr(false)}))
	if err != nil {
		b.Fatal(err)
	}
	enabled := false
	cpu := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		enabled = !enabled
		if _, err := h.Admin.UpdatePolicy(ctx, connect.NewRequest(&adminv1.UpdatePolicyRequest{Id: p.Msg.Id, Enabled: ptr(enabled)})); err != nil {
			b.Fatal(err)
		}
		for _, a := range as {
			a.WaitFor(b, "probe", seesMonitor(enabled))
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkMemoryPerConnectedPeer: heap and stacks per connected peer, both
// ends in one process (an upper bound for control alone: it includes the
// fake agents, their HTTP/2 client streams and the maps they hold).
func BenchmarkMemoryPerConnectedPeer(b *testing.B) {
	for b.Loop() {
		before := memInUse()
		h, as := fanoutWorld(b, 1000)
		after := memInUse()
		b.ReportMetric(float64(after-before)/float64(len(as)+1), "bytes/peer")
		runtime.KeepAlive(h)
	}
}

func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

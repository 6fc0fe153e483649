package control_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/pgtest"
)

// The benchmarks of this file run control as replicas on PostgreSQL next
// to one control on SQLite. They skip without PostgreSQL (see pgtest).
// Besides the figure, each reports CPU per operation in this process
// (control and the fake agents) and in PostgreSQL, so that a reader sees
// where the time goes on a loaded machine.

// backend is one way to run control: on SQLite, or as n replicas on one
// PostgreSQL database.
type backend struct {
	name     string
	replicas int
	pg       bool
}

var backends = []backend{{"sqlite/replicas=1", 1, false}, {"postgres/replicas=1", 1, true}, {"postgres/replicas=2", 2, true}}

// start runs control as be says; pgCPU reads PostgreSQL's CPU time (zero
// on SQLite).
func (be backend) start(b *testing.B, opts ...controltest.Option) (hs []*controltest.Harness, pgCPU func() time.Duration) {
	b.Helper()
	if !be.pg {
		return []*controltest.Harness{controltest.NewHarness(b, 0, opts...)}, func() time.Duration { return 0 }
	}
	srv := pgtest.Shared(b)
	hs = controltest.NewPGReplicas(b, srv.NewDatabase(b), be.replicas, opts...)
	return hs, func() time.Duration {
		d, err := srv.CPUTime()
		if err != nil {
			b.Fatal(err)
		}
		return d
	}
}

// BenchmarkReplicaJoins: new peers log in with a setup key (a new key
// pair each, no Sync), from 16 clients at once spread over the replicas.
// It reports joins/s and CPU per join here and in PostgreSQL.
func BenchmarkReplicaJoins(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			hs, pgCPU := be.start(b, controltest.Quiet(), controltest.Patience(time.Minute))
			var next atomic.Int64
			// Agents are made before the clock starts: key generation and
			// the client are the agent's costs, not control's.
			agents := make([]*controltest.Agent, b.N)
			for i := range agents {
				agents[i] = hs[i%len(hs)].NewAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("j-%d", i)})
			}
			cpu, pg0 := cpuTime(), pgCPU()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= len(agents) {
							return
						}
						if err := agents[i].Login(""); err != nil {
							b.Errorf("join %d: %v", i, err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "joins/s")
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N), "go-cpu-ms/join")
			b.ReportMetric(float64((pgCPU()-pg0).Microseconds())/1000/float64(b.N), "pg-cpu-ms/join")
		})
	}
}

// fanoutOn joins n agents in groups of 50 as fanoutWorld does, agent i
// through replica i%len(hs), plus the monitor peer, and waits until each
// sees its group online.
func fanoutOn(b *testing.B, hs []*controltest.Harness, n int) []*controltest.Agent {
	b.Helper()
	ctx := context.Background()
	api := hs[0].Admin
	must[adminv1.DeletePolicyResponse](b)(api.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	groups := (n + 49) / 50
	keys := make([]string, groups+1)
	for g := 0; g <= groups; g++ {
		name := fmt.Sprintf("g%d", g)
		if g == groups {
			name = "monitor"
		}
		must[adminv1.Group](b)(api.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: name})))
		must[adminv1.Policy](b)(api.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: name,
			Sources: []string{name}, Destinations: []string{name}, Bidirectional: true})))
		k := must[adminv1.SetupKey](b)(api.CreateSetupKey(ctx, connect.NewRequest(&adminv1.CreateSetupKeyRequest{Name: name, AutoGroups: []string{name}})))
		keys[g] = k.Key
	}
	hs[0].AddAgent(controltest.AgentOptions{Hostname: "monitor", SetupKey: keys[groups]})
	as := make([]*controltest.Agent, n)
	for i := range as {
		as[i] = hs[i%len(hs)].AddAgent(controltest.AgentOptions{Hostname: fmt.Sprintf("peer-%d", i), SetupKey: keys[i%groups]})
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
	return as
}

// BenchmarkReplicaPolicyFanout: as BenchmarkPolicyChangeFanout, one policy
// change until every one of 1,000 streams has its new map, with the
// streams split over the replicas and the change made through the first.
// ns/op is that latency, coalescing delay included (on every replica the
// change reaches).
func BenchmarkReplicaPolicyFanout(b *testing.B) {
	for _, be := range []backend{backends[0], backends[2]} {
		b.Run(be.name, func(b *testing.B) {
			hs, pgCPU := be.start(b, controltest.Quiet(), controltest.Patience(2*time.Minute),
				controltest.WithOptions(func(o *control.Options) { o.Coalesce = control.DefaultCoalesce }))
			as := fanoutOn(b, hs, 1000)
			ctx := context.Background()
			p := must[adminv1.Policy](b)(hs[0].Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: "probe",
				Sources: []string{"All"}, Destinations: []string{"monitor"}, Protocol: "tcp", Ports: []string{"22"},
				Enabled: ptr(false)})))
			// The probe policy is known to every replica before the clock starts.
			for _, a := range as[:len(hs)] {
				a.WaitFor(b, "no probe", seesMonitor(false))
			}
			enabled := false
			cpu, pg0 := cpuTime(), pgCPU()
			var write time.Duration
			b.ResetTimer()
			for b.Loop() {
				enabled = !enabled
				t0 := time.Now()
				must[adminv1.Policy](b)(hs[0].Admin.UpdatePolicy(ctx, connect.NewRequest(&adminv1.UpdatePolicyRequest{Id: p.Id, Enabled: ptr(enabled)})))
				write += time.Since(t0)
				for _, a := range as {
					a.WaitFor(b, "probe", seesMonitor(enabled))
				}
			}
			b.ReportMetric(float64(write.Microseconds())/1000/float64(b.N), "write-ms/op")
			b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64((pgCPU()-pg0).Microseconds())/1000/float64(b.N), "pg-cpu-ms/op")
		})
	}
}

// BenchmarkReplicaMemoryPerPeer: BenchmarkMemoryPerConnectedPeer's method
// (1,000 agents in a child process, heap and stacks after GC) on one
// control on SQLite and on one replica on PostgreSQL.
func BenchmarkReplicaMemoryPerPeer(b *testing.B) {
	const n = 1000
	for _, be := range backends[:2] {
		b.Run(be.name, func(b *testing.B) {
			for b.Loop() {
				hs, _ := be.start(b, controltest.Quiet(), controltest.Patience(2*time.Minute))
				memoryPerPeer(b, hs[0], n)
			}
		})
	}
}

package control_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/control"
	"meshd/internal/control/controltest"
	"meshd/internal/tlsconf"
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

// BenchmarkMemoryPerConnectedPeer: what control holds per connected peer
// (heap and goroutine stacks, after GC). 1,000 agents run in a child
// process, each on its own TLS connection as real agents are, in groups of
// 50 as in fanoutWorld, so only control's side is measured here.
func BenchmarkMemoryPerConnectedPeer(b *testing.B) {
	for b.Loop() {
		memoryPerPeer(b, controltest.NewHarness(b, 0, controltest.Quiet(), controltest.Patience(2*time.Minute)), 1000)
	}
}

// memoryPerPeer connects n agents to h (groups of 50, one policy each) and
// reports control's memory per connected peer.
func memoryPerPeer(b *testing.B, h *controltest.Harness, n int) {
	b.Helper()
	ctx := context.Background()
	must[adminv1.DeletePolicyResponse](b)(h.Admin.DeletePolicy(ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: "Default"})))
	var keys []string
	for g := range n / 50 {
		name := fmt.Sprintf("g%d", g)
		must[adminv1.Group](b)(h.Admin.CreateGroup(ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: name})))
		must[adminv1.Policy](b)(h.Admin.CreatePolicy(ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: name,
			Sources: []string{name}, Destinations: []string{name}, Bidirectional: true})))
		k := must[adminv1.SetupKey](b)(h.Admin.CreateSetupKey(ctx, connect.NewRequest(&adminv1.CreateSetupKeyRequest{
			Name: name, AutoGroups: []string{name}})))
		keys = append(keys, k.Key)
	}
	before := memInUse()
	p := startAgents(b, h, n, keys)
	p.waitReady(b)
	deadline := time.Now().Add(2 * time.Minute)
	for online := 0; online < n; {
		peers := must[adminv1.ListPeersResponse](b)(h.Admin.ListPeers(ctx, connect.NewRequest(&adminv1.ListPeersRequest{})))
		online = 0
		for _, p := range peers.Peers {
			if p.Online {
				online++
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d peers online", online, n)
		}
		time.Sleep(50 * time.Millisecond) // poll
	}
	after := memInUse()
	b.ReportMetric(float64(after-before)/float64(n), "bytes/peer")
	p.stop()
}

// agentProc is a child process running fake agents (see runAgents).
type agentProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startAgents(b *testing.B, h *controltest.Harness, n int, keys []string) *agentProc {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", agentsEnv, n), "MESHD_BENCH_URL="+h.URL,
		"MESHD_BENCH_PIN="+tlsconf.Pin(h.Server.Certificate().Raw), "MESHD_BENCH_KEYS="+strings.Join(keys, ","))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &agentProc{cmd: cmd, stdin: stdin, lines: make(chan string, 1)}
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		p.lines <- line
	}()
	b.Cleanup(p.stop)
	return p
}

func (p *agentProc) waitReady(b *testing.B) {
	b.Helper()
	select {
	case line := <-p.lines:
		if strings.TrimSpace(line) != "ready" {
			b.Fatalf("agents process: %q", line)
		}
	case <-time.After(3 * time.Minute):
		b.Fatal("agents process not ready")
	}
}

func (p *agentProc) stop() {
	if p.stdin != nil {
		p.stdin.Close()
		p.cmd.Wait()
		p.stdin = nil
	}
}

func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

package netcheck

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v2"
	"go.uber.org/zap"
)

// retransmit is how often a server without enough answers is asked again.
const retransmit = 200 * time.Millisecond

// stunAll asks every probe's server from one socket per family, so that
// the mapped addresses of one family belong to one socket (what the
// symmetric-NAT comparison needs), and fills in Mapped, LatencyMs and Error.
func stunAll(ctx context.Context, probes []Probe, log *zap.Logger) {
	// Split before any goroutine writes to probes.
	byFam := map[string][]int{}
	for i, p := range probes {
		if p.Error == "" {
			byFam[p.Family] = append(byFam[p.Family], i)
		}
	}
	var wg sync.WaitGroup
	for fam, idx := range byFam {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stunFamily(ctx, fam, probes, idx, log)
		}()
	}
	wg.Wait()
}

type sent struct {
	probe int
	at    time.Time
}

func stunFamily(ctx context.Context, fam string, probes []Probe, idx []int, log *zap.Logger) {
	network, laddr := "udp4", "0.0.0.0:0"
	if fam == "ipv6" {
		network, laddr = "udp6", "[::]:0"
	}
	fail := func(msg string) {
		for _, i := range idx {
			probes[i].Error = msg
		}
	}
	var lc net.ListenConfig
	c, err := lc.ListenPacket(ctx, network, laddr)
	if err != nil {
		fail("no " + fam + " socket: " + err.Error())
		return
	}
	defer c.Close()
	var mu sync.Mutex
	pending := map[[stun.TransactionIDSize]byte]sent{}
	answers := make([]int, len(probes))
	rtts := make([]time.Duration, len(probes))
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			now := time.Now()
			m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if m.Decode() != nil || m.Type != stun.BindingSuccess {
				continue
			}
			var xa stun.XORMappedAddress
			if err := xa.GetFrom(m); err != nil {
				var ma stun.MappedAddress
				if ma.GetFrom(m) != nil {
					continue
				}
				xa.IP, xa.Port = ma.IP, ma.Port
			}
			mu.Lock()
			s, ok := pending[m.TransactionID]
			if ok {
				delete(pending, m.TransactionID)
				rtt := now.Sub(s.at)
				if answers[s.probe] == 0 || rtt < rtts[s.probe] {
					rtts[s.probe] = rtt
				}
				answers[s.probe]++
				if a, ok := netip.AddrFromSlice(xa.IP); ok {
					probes[s.probe].Mapped = netip.AddrPortFrom(a.Unmap(), uint16(xa.Port)).String()
				}
			}
			mu.Unlock()
		}
	}()
	t := time.NewTicker(retransmit)
	defer t.Stop()
	for {
		mu.Lock()
		waiting := 0
		for _, i := range idx {
			if answers[i] >= samples {
				continue
			}
			waiting++
			m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
			if err != nil {
				continue
			}
			pending[m.TransactionID] = sent{probe: i, at: time.Now()}
			dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(probes[i].Address))
			if _, err := c.WriteTo(m.Raw, dst); err != nil {
				log.Debug("stun send", zap.String("to", probes[i].Address), zap.Error(err))
				probes[i].Error = err.Error()
			}
		}
		mu.Unlock()
		if waiting == 0 {
			break
		}
		select {
		case <-ctx.Done():
		case <-t.C:
			continue
		}
		break
	}
	c.Close()
	<-done
	for _, i := range idx {
		if answers[i] > 0 {
			probes[i].LatencyMs = float64(rtts[i].Microseconds()) / 1000
			probes[i].Error = ""
		} else if probes[i].Error == "" {
			probes[i].Error = "no answer"
		}
	}
}

package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"

	"meshd/internal/proxy"
	"meshd/wg"
)

// Mesh returns what internal/proxy's SOCKS5 and HTTP proxies dial
// through: the current tunnel's netstack, with destinations checked
// against the current map (proxy.View). It follows the tunnel through
// `meshd down` and up and restarts; while there is none it refuses with
// proxy.ErrDown.
func (e *Engine) Mesh() proxy.Mesh { return engineMesh{e} }

type engineMesh struct{ e *Engine }

func (m engineMesh) Dial(ctx context.Context, host string, port uint16) (net.Conn, error) {
	return m.dial(ctx, host, port, false)
}

func (m engineMesh) DialUDP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	return m.dial(ctx, host, port, true)
}

func (m engineMesh) dial(ctx context.Context, host string, port uint16, udp bool) (net.Conn, error) {
	m.e.mu.Lock()
	t := m.e.tun
	m.e.mu.Unlock()
	if t == nil {
		return nil, proxy.ErrDown
	}
	t.mu.RLock()
	dev := t.dev
	t.mu.RUnlock()
	if dev == nil {
		return nil, proxy.ErrDown
	}
	tnet := dev.Net()
	if tnet == nil {
		return nil, fmt.Errorf("%w: the proxies need --wg-mode netstack (with a TUN, programs reach the mesh directly)", proxy.ErrDown)
	}
	if udp {
		a, err := t.view.Load().ResolveUDP(host, port)
		if err != nil {
			return nil, err
		}
		return tnet.DialUDPAddrPort(netip.AddrPort{}, netip.AddrPortFrom(a, port))
	}
	a, err := t.view.Load().Resolve(host, port)
	if err != nil {
		return nil, err
	}
	return tnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(a, port))
}

// forwards serve Options.Forwards on one device's overlay address (netstack
// mode). Peers' connections reach them only when the device's packet
// filter let them in: the map's firewall rules hold as for any service.
type forwards struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startForwards listens on dev's netstack for every forward. A port that
// cannot be had is logged and skipped; the others run.
func startForwards(log *zap.Logger, dev wg.Device, addr netip.Addr, fs []proxy.Forward) *forwards {
	tnet := dev.Net()
	if tnet == nil || len(fs) == 0 {
		return nil
	}
	log = log.Named("forward")
	ctx, cancel := context.WithCancel(context.Background())
	f := &forwards{cancel: cancel}
	for _, fw := range fs {
		ln, err := tnet.ListenTCPAddrPort(netip.AddrPortFrom(addr, fw.Port))
		if err != nil {
			log.Error("cannot listen on the overlay address; this forward is off (pick another port)",
				zap.Stringer("forward", fw), zap.Error(err))
			continue
		}
		log.Info("forwarding", zap.String("from", netip.AddrPortFrom(addr, fw.Port).String()), zap.String("to", fw.Local))
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			if err := proxy.ServeForward(ctx, ln, fw.Local, log); err != nil {
				log.Error("forward stopped", zap.Stringer("forward", fw), zap.Error(err))
			}
		}()
	}
	return f
}

// close stops the forwards and waits for their connections to end.
func (f *forwards) close() {
	if f == nil {
		return
	}
	f.cancel()
	f.wg.Wait()
}

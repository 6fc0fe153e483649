package wg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"

	"meshd/internal/fwmark"
)

// newUserspace runs wireguard-go on a real TUN (with its offloads: virtio
// net header, TSO/GRO) configured by netlink, and serves UAPI on
// /var/run/wireguard/<name>.sock so that `wg show <name>` works.
func newUserspace(_ context.Context, cfg Config) (Device, error) {
	tdev, err := tun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM) {
			return nil, fmt.Errorf("wg: create TUN %s: %w (needs root or CAP_NET_ADMIN; or run with --wg-mode netstack)", cfg.Name, err)
		}
		return nil, fmt.Errorf("wg: create TUN %s: %w", cfg.Name, err)
	}
	name, err := tdev.Name()
	if err != nil {
		tdev.Close()
		return nil, fmt.Errorf("wg: TUN name: %w", err)
	}
	cfg.Name = name
	d, err := startGoDevice(cfg, tdev)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (Device, error) {
		d.Close()
		return nil, err
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fail(fmt.Errorf("wg: find link %s: %w", name, err))
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: prefixNet(cfg.Address)}); err != nil {
		return fail(fmt.Errorf("wg: add address %s to %s: %w", cfg.Address, name, err))
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fail(fmt.Errorf("wg: set %s up: %w", name, err))
	}
	d.routes = newRouteSet(newLinkRoutes(link.Attrs().Index, name, cfg.Log), cfg.Address)
	// The agent's own traffic (control, signal, relays, the WireGuard
	// socket) carries the mark and bypasses the mesh's routing table.
	if err := d.dev.IpcSet(fmt.Sprintf("fwmark=%d\n", fwmark.Mark)); err != nil {
		cfg.Log.Warn("cannot mark the WireGuard socket", zap.Error(err))
	}
	stop, err := serveUAPI(d, cfg.Log)
	if err != nil {
		return fail(err)
	}
	d.onStop = append(d.onStop, stop)
	return d, nil
}

// serveUAPI answers `wg` on the interface's UAPI socket until stop.
func serveUAPI(d *goDevice, log *zap.Logger) (stop func(), err error) {
	f, err := ipc.UAPIOpen(d.name)
	if err != nil {
		return nil, fmt.Errorf("wg: UAPI socket for %s: %w (another WireGuard interface of that name runs on this machine, perhaps in another network namespace: choose another --iface)", d.name, err)
	}
	ln, err := ipc.UAPIListen(d.name, f)
	f.Close() // the listener holds its own copy
	if err != nil {
		return nil, fmt.Errorf("wg: UAPI listen for %s: %w", d.name, err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		conns   = make(map[net.Conn]struct{})
		stopped bool
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if stopped {
				c.Close()
			}
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.dev.IpcHandle(c) // closes c
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	return func() {
		if err := ln.Close(); err != nil {
			log.Debug("close UAPI listener", zap.Error(err))
		}
		mu.Lock()
		stopped = true
		for c := range conns {
			c.Close() // a client that keeps its connection open must not hold Close up
		}
		mu.Unlock()
		wg.Wait()
	}, nil
}

// linkRoutes adds and removes routes through one link: in fwmark.Table
// behind the policy rule (policy_linux.go) when the rule could be
// installed, else in the main table as before (and then nothing keeps the
// agent's own traffic out of a routed network: status says so).
type linkRoutes struct {
	index int
	name  string
	log   *zap.Logger
	table int // 0: main
	err   error
}

func newLinkRoutes(index int, name string, log *zap.Logger) *linkRoutes {
	r := &linkRoutes{index: index, name: name, log: log, table: fwmark.Table}
	if err := installPolicy(log); err != nil {
		log.Warn("no policy routing: routes go into the main table, and a routed network that contains the server or a peer's address would cut this agent off", zap.Error(err))
		r.table, r.err = 0, err
	}
	return r
}

func (r *linkRoutes) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: r.index, Dst: prefixNet(p), Scope: netlink.SCOPE_LINK, Table: r.table}
}

// info describes where the routes go.
func (r *linkRoutes) info() RouteInfo {
	ri := RouteInfo{Table: r.table, Bypass: r.table != 0}
	if r.err != nil {
		ri.Reason = r.err.Error()
	}
	return ri
}

// release removes the policy rule once no routes use it.
func (r *linkRoutes) release() {
	if r.table != 0 {
		removePolicy(r.log)
	}
}

func (r *linkRoutes) Add(p netip.Prefix) error {
	if p.Bits() == 0 {
		r.log.Warn("not routing a default route through the mesh (exit nodes need policy routing)", zap.Stringer("prefix", p))
		return errRouteExists
	}
	if r.table != 0 && mainRouteExists(p) {
		r.log.Warn("the main table routes the prefix already; leaving it", zap.Stringer("prefix", p))
		return errRouteExists
	}
	err := netlink.RouteAdd(r.route(p))
	if errors.Is(err, syscall.EEXIST) {
		r.log.Warn("a route to the prefix exists already; leaving it", zap.Stringer("prefix", p))
		return errRouteExists
	}
	if err != nil {
		return fmt.Errorf("wg: route %s dev %s table %d: %w", p, r.name, r.table, err)
	}
	return nil
}

func (r *linkRoutes) Del(p netip.Prefix) error {
	err := netlink.RouteDel(r.route(p))
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("wg: delete route %s dev %s: %w", p, r.name, err)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

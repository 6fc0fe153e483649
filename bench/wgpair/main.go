// Command wgpair brings up one meshd WireGuard device (package wg, userspace
// mode on a real TUN, with the one-socket bind) with static peers, for the
// data-plane throughput benchmark bench/tunnel.sh. It is not part of meshd:
// the full agent is benchmarked separately. It runs until SIGINT/SIGTERM.
//
//	wgpair -iface wgm0 -key PRIV -addr 100.66.0.1/24 -port 51820 \
//	       -peer PUB,100.66.0.2/32,10.88.0.2:51820 [-relay-port 3478] [-cpuprofile FILE] \
//	       [-allow-tcp 5201]
//
// With -allow-tcp the device enforces firewall rules as the agent does
// (wg.Config.Filter with an internal/filter Filter): each peer may reach
// this side, and this side each peer, on those TCP ports only; everything
// else is dropped. It measures what the filter costs on the data path.
// With -relay-port the peers are relayed: each peer's packets go through a
// UDP socket connected from this port to the same port at the peer's
// endpoint address (SetRelayed over a net.Conn, as a TURN path would be)
// instead of the direct path.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
	"meshd/internal/keys"
	"meshd/wg"
)

type peerFlags []string

func (p *peerFlags) String() string     { return strings.Join(*p, " ") }
func (p *peerFlags) Set(s string) error { *p = append(*p, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wgpair:", err)
		os.Exit(1)
	}
}

func run() error {
	var peers peerFlags
	iface := flag.String("iface", "wgm0", "interface name")
	key := flag.String("key", "", "base64 private key")
	addr := flag.String("addr", "", "overlay address with prefix length")
	port := flag.Uint("port", 51820, "WireGuard UDP port")
	mtu := flag.Int("mtu", wg.DefaultMTU, "interface MTU")
	mode := flag.String("mode", string(wg.ModeUserspace), "device mode")
	relayPort := flag.Uint("relay-port", 0, "relay every peer over a UDP conn between this port on both sides")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	allowTCP := flag.String("allow-tcp", "", "enforce firewall rules: only these TCP `PORTS` (comma-separated) to and from each peer")
	flag.Var(&peers, "peer", "PUBKEY,ALLOWED[,ALLOWED...],ENDPOINT (repeatable)")
	flag.Parse()

	priv, err := keys.ParsePrivate(*key)
	if err != nil {
		return err
	}
	prefix, err := netip.ParsePrefix(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	log, _ := zap.NewProduction(zap.IncreaseLevel(zap.WarnLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := wg.Config{
		Mode: wg.Mode(*mode), Name: *iface, PrivateKey: priv, ListenPort: uint16(*port),
		Address: prefix, MTU: *mtu, Log: log,
	}
	if *allowTCP != "" {
		f, err := tcpFilter(peers, *allowTCP)
		if err != nil {
			return err
		}
		cfg.Filter = f
	}
	dev, err := wg.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer dev.Close()
	for _, p := range peers {
		parts := strings.Split(p, ",")
		if len(parts) < 3 {
			return fmt.Errorf("-peer %q: want PUBKEY,ALLOWED...,ENDPOINT", p)
		}
		pub, err := keys.Parse(parts[0])
		if err != nil {
			return err
		}
		pc := wg.Peer{PublicKey: pub}
		for _, a := range parts[1 : len(parts)-1] {
			pfx, err := netip.ParsePrefix(a)
			if err != nil {
				return fmt.Errorf("-peer allowed IP %q: %w", a, err)
			}
			pc.AllowedIPs = append(pc.AllowedIPs, pfx)
		}
		ep, err := netip.ParseAddrPort(parts[len(parts)-1])
		if err != nil {
			return fmt.Errorf("-peer endpoint: %w", err)
		}
		if err := dev.SetPeer(pc); err != nil {
			return err
		}
		if *relayPort == 0 {
			if err := dev.SetDirect(pub, ep); err != nil {
				return err
			}
			continue
		}
		c, err := net.DialUDP("udp", &net.UDPAddr{Port: int(*relayPort)},
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(ep.Addr(), uint16(*relayPort))))
		if err != nil {
			return fmt.Errorf("relay conn: %w", err)
		}
		defer c.Close()
		if err := dev.SetRelayed(pub, c); err != nil {
			return err
		}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("ready %s port %d\n", dev.Name(), dev.ListenPort())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// tcpFilter compiles IN and OUT rules for the given TCP ports with the
// first allowed IP of every -peer, the rules a bidirectional policy gives.
func tcpFilter(peers []string, ports string) (*filter.Filter, error) {
	var pr []*controlv1.PortRange
	for _, p := range strings.Split(ports, ",") {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("-allow-tcp %q: %w", p, err)
		}
		pr = append(pr, &controlv1.PortRange{Start: uint32(n)})
	}
	var rules []*controlv1.FirewallRule
	for _, p := range peers {
		parts := strings.Split(p, ",")
		if len(parts) < 3 {
			return nil, fmt.Errorf("-peer %q: want PUBKEY,ALLOWED...,ENDPOINT", p)
		}
		pfx, err := netip.ParsePrefix(parts[1])
		if err != nil {
			return nil, fmt.Errorf("-peer allowed IP %q: %w", parts[1], err)
		}
		for _, d := range []controlv1.Direction{controlv1.Direction_DIRECTION_IN, controlv1.Direction_DIRECTION_OUT} {
			rules = append(rules, &controlv1.FirewallRule{PeerIp: pfx.Addr().String(), Direction: d,
				Protocol: controlv1.Protocol_PROTOCOL_TCP, Ports: pr})
		}
	}
	r, err := filter.Compile(rules)
	if err != nil {
		return nil, err
	}
	return filter.New(r), nil
}

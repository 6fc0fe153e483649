// Command wgpair brings up one meshd WireGuard device (package wg, userspace
// mode on a real TUN, with the one-socket bind) with static peers, for the
// data-plane throughput benchmark bench/tunnel.sh. It is not part of meshd:
// the full agent is benchmarked separately. It runs until SIGINT/SIGTERM.
//
//	wgpair -iface wgm0 -key PRIV -addr 100.66.0.1/24 -port 51820 \
//	       -peer PUB,100.66.0.2/32,10.88.0.2:51820 [-relay-port 3478] [-cpuprofile FILE]
//
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
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

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
	dev, err := wg.New(ctx, wg.Config{
		Mode: wg.Mode(*mode), Name: *iface, PrivateKey: priv, ListenPort: uint16(*port),
		Address: prefix, MTU: *mtu, Log: log,
	})
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

package wg

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	controlv1 "meshd/api/control/v1"
	"meshd/internal/filter"
	"meshd/internal/keys"
)

// The root tests run devices in network namespaces: they start this test
// binary again under `ip netns exec`, with MESHD_WG_HELPER holding a
// helperConfig. The helper brings a userspace device up, prints "ready",
// waits for its stdin to close, closes the device and prints "closed".

const helperEnv = "MESHD_WG_HELPER"

type helperPeer struct {
	Key      string   // base64 public key
	Allowed  []string // prefixes
	Endpoint string   // ip:port, optional
	// Relay, "LOCAL>REMOTE" (two ip:port), relays the peer over a connected
	// UDP socket instead of the direct path.
	Relay string
}

type helperConfig struct {
	Mode  Mode // default ModeUserspace
	Name  string
	Key   string // base64 private key
	Addr  string // overlay address with prefix length
	Port  uint16
	Peers []helperPeer
	Echo  string // TCP address to echo on, optional
	// AllowTCP, when set, enforces firewall rules: each peer (its first
	// allowed IP) may reach this device, and this device each peer, on
	// these TCP ports only.
	AllowTCP []uint32
}

// helperMain runs the helper and exits when the environment asks for it;
// otherwise it returns false and the tests run.
func helperMain() bool {
	js := os.Getenv(helperEnv)
	if js == "" {
		return false
	}
	if err := runHelper(js); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

func runHelper(js string) error {
	var hc helperConfig
	if err := json.Unmarshal([]byte(js), &hc); err != nil {
		return err
	}
	priv, err := keys.ParsePrivate(hc.Key)
	if err != nil {
		return err
	}
	addr, err := netip.ParsePrefix(hc.Addr)
	if err != nil {
		return err
	}
	log, _ := zap.NewDevelopment(zap.IncreaseLevel(zap.WarnLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if hc.Mode == "" {
		hc.Mode = ModeUserspace
	}
	cfg := Config{Mode: hc.Mode, Name: hc.Name, PrivateKey: priv, ListenPort: hc.Port, Address: addr, Log: log}
	if len(hc.AllowTCP) > 0 {
		var rules []*controlv1.FirewallRule
		var ports []*controlv1.PortRange
		for _, p := range hc.AllowTCP {
			ports = append(ports, &controlv1.PortRange{Start: p})
		}
		for _, p := range hc.Peers {
			ip := netip.MustParsePrefix(p.Allowed[0]).Addr()
			for _, d := range []controlv1.Direction{controlv1.Direction_DIRECTION_IN, controlv1.Direction_DIRECTION_OUT} {
				rules = append(rules, &controlv1.FirewallRule{PeerIp: ip.String(), Direction: d, Protocol: controlv1.Protocol_PROTOCOL_TCP, Ports: ports})
			}
		}
		r, err := filter.Compile(rules)
		if err != nil {
			return err
		}
		cfg.Filter = filter.New(r)
	}
	dev, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	defer dev.Close()
	for _, p := range hc.Peers {
		k, err := keys.Parse(p.Key)
		if err != nil {
			return err
		}
		peer := Peer{PublicKey: k}
		for _, a := range p.Allowed {
			peer.AllowedIPs = append(peer.AllowedIPs, netip.MustParsePrefix(a))
		}
		if err := dev.SetPeer(peer); err != nil {
			return err
		}
		if p.Endpoint != "" {
			if err := dev.SetDirect(k, netip.MustParseAddrPort(p.Endpoint)); err != nil {
				return err
			}
		}
		if p.Relay != "" {
			local, remote, _ := strings.Cut(p.Relay, ">")
			c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local)),
				net.UDPAddrFromAddrPort(netip.MustParseAddrPort(remote)))
			if err != nil {
				return err
			}
			defer c.Close()
			if err := dev.SetRelayed(k, c); err != nil {
				return err
			}
		}
	}
	if hc.Echo != "" {
		ln, err := net.Listen("tcp", hc.Echo)
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); io.Copy(c, c) }()
			}
		}()
	}
	fmt.Printf("ready %s %d\n", dev.Name(), dev.ListenPort())
	io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	if err := dev.Close(); err != nil {
		return err
	}
	fmt.Println("closed")
	return nil
}

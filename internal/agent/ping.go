package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/agent/path"
	"meshd/nat/peerconn"
	"meshd/wg"
)

// DefaultPingTimeout is how long Ping waits for an answer unless told.
const DefaultPingTimeout = 2 * time.Second

// pingError keeps a message for people while errors.Is still tells the
// kind (fs.ErrNotExist: no such peer; os.ErrDeadlineExceeded: no answer),
// which the daemon turns into a status code.
type pingError struct {
	msg  string
	kind error
}

func (e *pingError) Error() string        { return e.msg }
func (e *pingError) Is(target error) bool { return target == e.kind }

// Ping sends one ICMP echo request through the tunnel to the peer that
// target names (name, DNS name, overlay IP or public key) and reports the
// round trip and the path the peer was on when the answer came. It tests
// the whole data path (WireGuard, the chosen candidate pair or relay, the
// peer's filter), which a control-plane ping would not.
func (e *Engine) Ping(ctx context.Context, target string, timeout time.Duration) (*daemonv1.PingResponse, error) {
	if timeout <= 0 {
		timeout = DefaultPingTimeout
	}
	e.mu.Lock()
	t := e.tun
	e.mu.Unlock()
	if t == nil {
		return nil, errors.New("the tunnel is down; run `meshd up`")
	}
	t.mu.RLock()
	dev, self := t.dev, t.self
	workers := make([]*peerWorker, 0, len(t.peers))
	for _, w := range t.peers {
		workers = append(workers, w)
	}
	t.mu.RUnlock()
	if dev == nil || self == nil {
		return nil, errors.New("the tunnel is not up yet; see `meshd status`")
	}
	w, err := findPeer(workers, target)
	if err != nil {
		return nil, err
	}
	meta := w.snapshot().meta
	dst, err := netip.ParseAddr(strings.Split(meta.GetOverlayIp(), "/")[0])
	if err != nil {
		return nil, fmt.Errorf("agent: ping: peer %s has no overlay address", meta.GetName())
	}
	rtt, err := echo(ctx, dev, dst, timeout)
	snap := w.snapshot()
	resp := &daemonv1.PingResponse{
		Name: meta.GetName(), DnsName: meta.GetDnsName(), OverlayIp: meta.GetOverlayIp(), PublicKey: w.key.String(),
	}
	switch snap.path {
	case path.PathDirect:
		resp.Path = PathDirect
	case path.PathRelayed:
		resp.Path = PathRelayed
	}
	if snap.path != path.None {
		resp.LocalCandidate = &daemonv1.Candidate{Type: snap.pair.Local.Type, Address: snap.pair.Local.Address}
		resp.RemoteCandidate = &daemonv1.Candidate{Type: snap.pair.Remote.Type, Address: snap.pair.Remote.Address}
		if snap.path == path.PathRelayed {
			resp.Relay = relayOf(snap.pair)
		}
	}
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
			via := "no path yet"
			if resp.Path != "" {
				via = "path " + resp.Path
			}
			return nil, &pingError{msg: fmt.Sprintf("no answer from %s (%s) within %v (%s)", meta.GetName(), dst, timeout, via), kind: os.ErrDeadlineExceeded}
		}
		return nil, fmt.Errorf("agent: ping %s: %w", dst, err)
	}
	resp.LatencyMs = float64(rtt.Microseconds()) / 1000
	return resp, nil
}

// relayOf is the relay's address of a relayed pair: the relayed candidate
// on either side (ours when we allocated, the peer's otherwise).
func relayOf(p path.Pair) string {
	if p.Local.Type == "relay" {
		return p.Local.Address
	}
	if p.Remote.Type == "relay" {
		return p.Remote.Address
	}
	return ""
}

// findPeer picks the worker target names; an unknown name is an error
// that lists the closest names.
func findPeer(workers []*peerWorker, target string) (*peerWorker, error) {
	q := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(target), "."))
	if q == "" {
		return nil, errors.New("name a peer: its name, DNS name, overlay IP or public key")
	}
	var names []string
	for _, w := range workers {
		m := w.snapshot().meta
		name := strings.ToLower(m.GetName())
		dns := strings.ToLower(strings.TrimSuffix(m.GetDnsName(), "."))
		ip := strings.Split(m.GetOverlayIp(), "/")[0]
		if q == name || q == dns || q == ip || target == w.key.String() ||
			(dns != "" && strings.HasPrefix(dns, q+".")) {
			return w, nil
		}
		names = append(names, m.GetName())
	}
	slices.Sort(names)
	var close []string
	for _, n := range names {
		ln := strings.ToLower(n)
		if strings.Contains(ln, q) || strings.Contains(q, ln) || editDistance(ln, q) <= 2 {
			close = append(close, n)
		}
	}
	msg := fmt.Sprintf("no peer %q in this network", target)
	switch {
	case len(close) > 0:
		msg += "; did you mean " + strings.Join(close, ", ") + "?"
	case len(names) == 0:
		msg += " (this machine sees no peers: check the policies with `meshd admin`)"
	default:
		if len(names) > 10 {
			names = append(names[:10], "...")
		}
		msg += "; peers: " + strings.Join(names, ", ")
	}
	return nil, &pingError{msg: msg, kind: fs.ErrNotExist}
}

// editDistance is the Levenshtein distance of a and b (short names only).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// echo sends one echo request to dst through dev's tunnel and
// waits for the answer. In netstack mode it uses the netstack; otherwise
// an ICMP socket of the host, whose route to dst is the mesh interface.
func echo(ctx context.Context, dev wg.Device, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var idb [2]byte
	rand.Read(idb[:])
	id, seq := int(binary.BigEndian.Uint16(idb[:])), 1
	body := &icmp.Echo{ID: id, Seq: seq, Data: []byte("meshd ping")}
	req, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: body}).Marshal(nil)
	if err != nil {
		return 0, err
	}
	if !dst.Is4() {
		return 0, errors.New("agent: ping: only IPv4 overlay addresses are supported")
	}
	if n := dev.Net(); n != nil {
		c, err := n.DialPingAddr(netip.Addr{}, dst)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
		defer stop()
		c.SetReadDeadline(deadline)
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			return 0, err
		}
		buf := make([]byte, 1500)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return 0, err
			}
			if m, err := icmp.ParseMessage(1, buf[:n]); err == nil && m.Type == ipv4.ICMPTypeEchoReply {
				return time.Since(start), nil
			}
		}
	}
	// A raw socket (root, as the TUN modes are), else the unprivileged
	// ping socket, which rewrites the id: then only seq and source match.
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	raw := err == nil
	if err != nil {
		if c, err = icmp.ListenPacket("udp4", "0.0.0.0"); err != nil {
			return 0, fmt.Errorf("agent: ping: open an ICMP socket: %w", err)
		}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	c.SetReadDeadline(deadline)
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if !raw {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	start := time.Now()
	if _, err := c.WriteTo(req, to); err != nil {
		return 0, err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return 0, err
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.Seq != seq || (raw && e.ID != id) || addrOf(from) != dst {
			continue
		}
		return time.Since(start), nil
	}
}

func addrOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.IPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	v, _ := netip.AddrFromSlice(ip)
	return v.Unmap()
}

// stunURLs are the STUN servers of the map as stun: URLs, without
// credentials, for `meshd netcheck`.
func stunURLs(s peerconn.Servers) []string {
	out := make([]string, 0, len(s.STUN))
	for _, u := range s.STUN {
		out = append(out, "stun:"+net.JoinHostPort(u.Host, fmt.Sprint(u.Port)))
	}
	return out
}

package relaytest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"meshd/internal/turncred"
)

// Pair is a client A relaying to a peer: either another allocation B, as
// two relayed WireGuard peers (A's ChannelData goes to A's relayed
// address, from there to B's relayed address, and to B as ChannelData),
// or a plain UDP socket Peer, as a peer reached directly (A's relayed
// address sends it the bare payload).
type Pair struct {
	A, B *RawClient
	Peer *net.UDPConn
}

// NewPeerPair allocates for A with a credential for id+"-a" and binds
// channel FirstChannel to a plain UDP socket on loopback.
func NewPeerPair(server netip.AddrPort, secret []byte, id string) (*Pair, error) {
	a, err := DialRaw(server, turncred.Issue(secret, id+"-a", time.Now(), time.Hour))
	if err != nil {
		return nil, err
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		a.Close()
		return nil, err
	}
	_ = peer.SetReadBuffer(4 << 20)
	if err := a.ChannelBind(FirstChannel, peer.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		a.Close()
		peer.Close()
		return nil, err
	}
	return &Pair{A: a, Peer: peer}, nil
}

// NewPair allocates twice on server with credentials for id+"-a" and
// id+"-b" and binds channel FirstChannel both ways.
func NewPair(server netip.AddrPort, secret []byte, id string) (*Pair, error) {
	now := time.Now()
	a, err := DialRaw(server, turncred.Issue(secret, id+"-a", now, time.Hour))
	if err != nil {
		return nil, err
	}
	b, err := DialRaw(server, turncred.Issue(secret, id+"-b", now, time.Hour))
	if err != nil {
		a.Close()
		return nil, err
	}
	p := &Pair{A: a, B: b}
	if err := a.ChannelBind(FirstChannel, b.Relayed); err != nil {
		p.Close()
		return nil, err
	}
	if err := b.ChannelBind(FirstChannel, a.Relayed); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// Close deallocates and closes both sides.
func (p *Pair) Close() {
	p.A.Close()
	if p.B != nil {
		p.B.Close()
	}
	if p.Peer != nil {
		p.Peer.Close()
	}
}

// receiver is the socket the pair's packets arrive on, and whether they
// arrive bare (not as ChannelData).
func (p *Pair) receiver() (*net.UDPConn, bool) {
	if p.Peer != nil {
		return p.Peer, true
	}
	return p.B.Conn, false
}

// LoadResult is what Load measured.
type LoadResult struct {
	Pairs, Size    int
	Sent, Received uint64 // packets
	Elapsed        time.Duration
}

// Bytes is the payload received.
func (r LoadResult) Bytes() uint64 { return r.Received * uint64(r.Size) }

// Mbps is the payload throughput received, in megabits per second (all
// pairs together).
func (r LoadResult) Mbps() float64 {
	return float64(r.Bytes()) * 8 / r.Elapsed.Seconds() / 1e6
}

// Loss is the fraction of sent packets that did not arrive.
func (r LoadResult) Loss() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 1 - float64(r.Received)/float64(r.Sent)
}

func (r LoadResult) String() string {
	return fmt.Sprintf("%d pair(s), %d-byte packets: %d sent, %d received (%.2f%% lost) in %s: %.0f Mb/s (%.0f Mb/s per pair)",
		r.Pairs, r.Size, r.Sent, r.Received, 100*r.Loss(), r.Elapsed.Round(time.Millisecond), r.Mbps(), r.Mbps()/float64(r.Pairs))
}

// Load tunables: packets per sendmmsg/recvmmsg, and packets in flight
// over all pairs (a window, so that the senders measure the relay rather
// than overrun it: ~1.3 MB at 1280 bytes, well inside the socket
// buffers); after loadStall without progress, what is in flight counts as
// lost.
const (
	loadBatch       = 32
	loadWindowTotal = 1024
	loadMinWindow   = 64
	loadStall       = 200 * time.Millisecond
)

// Load sends packets payloads of size bytes from each pair's A to its B
// (sendmmsg/recvmmsg batches, a window of packets in flight) and
// returns when every B has them, or the senders are done and the
// receivers idle, or after timeout.
func Load(pairs []*Pair, size, packets int, timeout time.Duration) (LoadResult, error) {
	res := LoadResult{Pairs: len(pairs), Size: size}
	var (
		wg        sync.WaitGroup
		sent      atomic.Uint64
		received  atomic.Uint64
		lastRecv  atomic.Int64
		errOnce   sync.Once
		firstErr  error
		deadline  = time.Now().Add(timeout)
		start     = time.Now()
		setErr    = func(err error) { errOnce.Do(func() { firstErr = err }) }
		senderEnd = make(chan struct{})
	)
	var sendersWG sync.WaitGroup
	for _, p := range pairs {
		var got atomic.Int64
		progress := make(chan struct{}, 1)
		wg.Add(2)
		sendersWG.Add(1)
		go func() {
			defer wg.Done()
			defer sendersWG.Done()
			n, err := send(p.A.Conn, size, packets, max(loadMinWindow, loadWindowTotal/len(pairs)), &got, progress, deadline)
			sent.Add(uint64(n))
			if err != nil {
				setErr(err)
			}
		}()
		go func() {
			defer wg.Done()
			conn, bare := p.receiver()
			n, err := receive(conn, bare, size, packets, &got, progress, senderEnd, deadline, &lastRecv)
			received.Add(uint64(n))
			if err != nil {
				setErr(err)
			}
		}()
	}
	go func() { sendersWG.Wait(); close(senderEnd) }()
	wg.Wait()
	res.Sent, res.Received = sent.Load(), received.Load()
	end := time.Unix(0, lastRecv.Load())
	if lastRecv.Load() == 0 {
		end = time.Now()
	}
	res.Elapsed = end.Sub(start)
	return res, firstErr
}

func send(conn *net.UDPConn, size, packets, window int, got *atomic.Int64, progress <-chan struct{}, deadline time.Time) (int, error) {
	pc := ipv4.NewPacketConn(conn)
	frame := make([]byte, ChannelDataHeader+size)
	PutChannelData(frame, FirstChannel, size)
	for i := range frame[ChannelDataHeader:] {
		frame[ChannelDataHeader+i] = byte(i)
	}
	msgs := make([]ipv4.Message, loadBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{frame}
	}
	sent, lost := 0, 0
	for sent < packets && time.Now().Before(deadline) {
		inflight := sent - lost - int(got.Load())
		if inflight >= window {
			select {
			case <-progress:
			case <-time.After(loadStall):
				// Nothing arrived for a while: what is in flight is lost.
				lost = sent - int(got.Load())
			}
			continue
		}
		k := min(loadBatch, window-inflight, packets-sent)
		n, err := pc.WriteBatch(msgs[:k], 0)
		if err != nil {
			return sent, fmt.Errorf("send: %w", err)
		}
		sent += n
	}
	return sent, nil
}

func receive(conn *net.UDPConn, bare bool, size, packets int, got *atomic.Int64, progress chan<- struct{}, sendersDone <-chan struct{}, deadline time.Time, last *atomic.Int64) (int, error) {
	pc := ipv4.NewPacketConn(conn)
	msgs := make([]ipv4.Message, loadBatch*2)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	n := 0
	for n < packets {
		rd := time.Now().Add(loadStall)
		if rd.After(deadline) {
			rd = deadline
		}
		_ = conn.SetReadDeadline(rd)
		k, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				select {
				case <-sendersDone:
					return n, nil // the rest is lost
				default:
				}
				if time.Now().After(deadline) {
					return n, nil
				}
				continue
			}
			return n, fmt.Errorf("receive: %w", err)
		}
		c := 0
		for _, m := range msgs[:k] {
			b := m.Buffers[0][:m.N]
			if bare && m.N == size || !bare && m.N == ChannelDataHeader+size && binary.BigEndian.Uint16(b) == FirstChannel {
				c++
			}
		}
		n += c
		got.Add(int64(c))
		last.Store(time.Now().UnixNano())
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	return n, nil
}

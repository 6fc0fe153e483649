//go:build linux

package peerconn

import (
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/pion/transport/v3"
	"github.com/pion/transport/v3/stdnet"
	"github.com/pion/transport/v3/vnet"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

// sockBuffers reads a socket's buffer sizes back from the kernel (which
// reports twice what was set: the other half is its bookkeeping).
func sockBuffers(tb testing.TB, c any) (rcv, snd int) {
	tb.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		tb.Fatalf("%T is not a system socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		tb.Fatal(err)
	}
	var rerr, serr error
	if err := rc.Control(func(fd uintptr) {
		rcv, rerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}); err != nil {
		tb.Fatal(err)
	}
	if rerr != nil || serr != nil {
		tb.Fatalf("getsockopt: %v, %v", rerr, serr)
	}
	return rcv, snd
}

// wantBuffer is the least a socket asked for size must report: size itself
// as root (SO_RCVBUFFORCE), else what net.core.[rw]mem_max allows.
func wantBuffer(tb testing.TB, sysctl string, size int) int {
	tb.Helper()
	if os.Geteuid() == 0 {
		return size
	}
	b, err := os.ReadFile("/proc/sys/net/core/" + sysctl)
	if err != nil {
		tb.Skipf("cannot read %s: %v", sysctl, err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatal(err)
	}
	return min(size, max)
}

func checkBuffers(tb testing.TB, what string, c any, size int) {
	tb.Helper()
	rcv, snd := sockBuffers(tb, c)
	if w := wantBuffer(tb, "rmem_max", size); rcv < w {
		tb.Errorf("%s: SO_RCVBUF %d, want at least %d", what, rcv, w)
	}
	if w := wantBuffer(tb, "wmem_max", size); snd < w {
		tb.Errorf("%s: SO_SNDBUF %d, want at least %d", what, snd, w)
	}
	tb.Logf("%s: SO_RCVBUF %d, SO_SNDBUF %d", what, rcv, snd)
}

func TestBufferedNetUDPSockets(t *testing.T) {
	const size = 5 << 20 // not any system default
	n, err := BufferedNet(nil, size)
	if err != nil {
		t.Fatal(err)
	}
	// Without the wrapper a socket has the system default, else this test
	// would prove nothing.
	plain, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if rcv, _ := sockBuffers(t, plain); rcv >= size {
		t.Skipf("the system default receive buffer (%d) is already %d or more", rcv, size)
	}

	pc, err := n.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	checkBuffers(t, "ListenPacket", pc, size)

	uc, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	checkBuffers(t, "ListenUDP", uc, size)

	to := pc.LocalAddr().(*net.UDPAddr)
	dc, err := n.DialUDP("udp4", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	checkBuffers(t, "DialUDP", dc, size)

	c, err := n.Dial("udp4", to.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkBuffers(t, "Dial", c, size)

	c2, err := n.CreateDialer(&net.Dialer{}).Dial("udp4", to.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	checkBuffers(t, "CreateDialer.Dial", c2, size)

	// The sockets still work.
	if _, err := dc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "x" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

// TCP keeps the kernel's autotuning: its buffers are not set.
func TestBufferedNetLeavesTCPAlone(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n, err := BufferedNet(nil, 5<<20)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	c, err := n.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pr, ps := sockBuffers(t, plain)
	r, s := sockBuffers(t, c)
	if r != pr || s != ps {
		t.Fatalf("TCP buffers %d/%d, a plain connection has %d/%d", r, s, pr, ps)
	}
}

// A network without system sockets (pion's vnet) works as before.
func TestBufferedNetOverVirtualNet(t *testing.T) {
	router, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "10.0.0.0/24", LoggerFactory: LoggerFactory(zaptest.NewLogger(t))})
	if err != nil {
		t.Fatal(err)
	}
	vn, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{"10.0.0.2"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := router.AddNet(vn); err != nil {
		t.Fatal(err)
	}
	if err := router.Start(); err != nil {
		t.Fatal(err)
	}
	defer router.Stop()
	n, err := BufferedNet(vn, 5<<20)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := n.ListenPacket("udp4", "10.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, ok := pc.(syscall.Conn); ok {
		t.Fatalf("vnet gave a system socket %T", pc)
	}
}

// recordingNet notes the UDP sockets pion listens on.
type recordingNet struct {
	transport.Net
	mu    sync.Mutex
	conns []net.PacketConn
}

func (n *recordingNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		n.mu.Lock()
		n.conns = append(n.conns, c)
		n.mu.Unlock()
	}
	return c, err
}

func (n *recordingNet) sockets() []net.PacketConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]net.PacketConn(nil), n.conns...)
}

// The socket a relay session opens to a TURN server over UDP gets
// SocketBuffer.
func TestRelaySessionTURNSocketBuffers(t *testing.T) {
	servers := turnServer(t)
	sn, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	rn := &recordingNet{Net: sn}
	a, b := pair(t, Relay, servers, false)
	a.net = rn
	s := a.newSession(11)
	b.receive(offer(s))
	if err := s.Gather(); err != nil {
		t.Fatal(err)
	}
	waitPair(t, a)
	conns := rn.sockets()
	if len(conns) == 0 {
		t.Fatal("the relay session opened no UDP socket through its Net")
	}
	for _, c := range conns {
		checkBuffers(t, "TURN socket "+c.LocalAddr().String(), c, SocketBuffer)
	}
}

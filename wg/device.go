// Package wg is the WireGuard data plane of an agent: the interface (a TUN
// with userspace wireguard-go, kernel WireGuard through wgctrl, or a netstack
// that needs no root), its peers, and how packets to each peer travel —
// straight from the WireGuard UDP socket (direct) or through a relayed
// connection. The agent's engine drives it through Device and never needs to
// know which mode runs underneath.
//
// The engine's flow for one peer, roughly:
//
//	dev, _ := wg.New(ctx, wg.Config{Mode: wg.ModeAuto, Name: "meshd0", ...})
//	mux := ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{UDPConn: dev.STUNConn()})
//	// per peer: ice.NewAgent(&ice.AgentConfig{UDPMux: mux, UDPMuxSrflx: mux, ...})
//	dev.SetPeer(wg.Peer{PublicKey: k, AllowedIPs: ...})
//	dev.SetRelayed(k, turnConn)             // first packets need not wait for ICE
//	dev.SetDirect(k, selectedRemoteAddrPort) // once ICE selects a host/srflx pair
//
// Config.Filter (the engine passes its internal/filter Filter) judges every
// packet on the TUN side of wireguard-go: the map's firewall rules hold in
// userspace and netstack modes. In kernel mode the same compiled rules are
// an nftables table on the interface (FirewallDevice, internal/filter/nftfilter).
//
// Fakes for the engine's tests are in package wgtest; the one-socket bind
// is package wg/bind.
package wg

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"meshd/internal/filter"
	"meshd/internal/keys"
)

// Mode selects how the interface is made.
type Mode string

const (
	// ModeAuto is ModeUserspace (see Resolve): kernel WireGuard is
	// experimental and never picked on its own.
	ModeAuto Mode = "auto"
	// ModeUserspace runs wireguard-go on a TUN device (needs root or CAP_NET_ADMIN).
	ModeUserspace Mode = "userspace"
	// ModeKernel uses the kernel module through wgctrl and netlink. It is
	// experimental: opt in with it by name.
	ModeKernel Mode = "kernel"
	// ModeNetstack runs wireguard-go on a gVisor netstack: no root, no TUN;
	// programs reach the mesh only through Device.Net.
	ModeNetstack Mode = "netstack"
)

// DefaultMTU is the interface MTU unless configured otherwise.
const DefaultMTU = 1280

// ErrUnsupported is returned for a mode this platform or machine lacks.
var ErrUnsupported = errors.New("wg: mode not supported here")

// ErrUnknownPeer is returned by SetDirect, SetRelayed and RemovePeer for a
// peer that SetPeer has not added (or that was removed).
var ErrUnknownPeer = errors.New("wg: unknown peer")

// ErrClosed is returned by every method of a Device after Close.
var ErrClosed = errors.New("wg: device closed")

// ErrNoFirewall is returned when kernel WireGuard cannot enforce the
// firewall rules (no nftables, or a Config.Filter it cannot describe).
var ErrNoFirewall = errors.New("wg: kernel WireGuard cannot enforce the firewall rules")

// Config makes a Device.
type Config struct {
	Mode Mode
	// Name of the interface (e.g. "meshd0"); also names the UAPI socket
	// (/var/run/wireguard/<name>.sock) so that `wg show <name>` works.
	Name       string
	PrivateKey keys.Private
	// ListenPort is the WireGuard UDP port; 0 picks one.
	ListenPort uint16
	// Address is the overlay address with the overlay network's prefix
	// length, e.g. 100.64.0.7/16.
	Address netip.Prefix
	MTU     int
	Log     *zap.Logger
	// Filter, when set, judges every packet that leaves or enters the
	// tunnel (userspace and netstack modes): the engine passes the
	// firewall rules of its network map here. Kernel WireGuard cannot
	// call it (packets never pass through this process); it enforces the
	// same rules as an nftables table on the interface instead
	// (internal/filter/nftfilter), starting from the Filter's current
	// rules when it is an internal/filter Filter (one with Rules) and
	// following FirewallDevice.SetFirewall after; ModeKernel fails when
	// that table cannot be installed.
	Filter PacketFilter
}

// Peer is the configuration of one remote peer.
type Peer struct {
	PublicKey  keys.Key
	AllowedIPs []netip.Prefix
	// PersistentKeepalive; zero turns it off. In userspace and netstack
	// modes it takes effect once the peer has a path (SetDirect or
	// SetRelayed): before, it would only make handshakes that cannot go
	// out.
	PersistentKeepalive time.Duration
}

// PeerStats is what the device knows about one peer.
type PeerStats struct {
	PublicKey keys.Key
	// Endpoint is the peer's endpoint as WireGuard reports it (and `wg show`
	// prints it); "" when none. A relayed path shows as [100::N]:0, an
	// address in the discard-only prefix 100::/64 that names the path.
	Endpoint string
	// Relayed reports whether WireGuard currently sends to the peer through
	// a relayed path (SetRelayed) rather than from the UDP socket.
	Relayed       bool
	LastHandshake time.Time
	RxBytes       int64
	TxBytes       int64
	// PresharedKey is the installed pre-shared key (nil: none), as
	// `wg show IFACE preshared-keys` prints it.
	PresharedKey *[32]byte
}

// Counters count what a device moved and dropped since it started.
type Counters struct {
	// RxBytes and TxBytes: WireGuard messages (data, keepalives,
	// handshakes; not STUN) received and sent, over the UDP socket and
	// relayed paths together, in every mode (kernel mode's pass through
	// the bind by its proxy). Cheap to read: the agent's memory trimmer
	// polls them to tell a quiet tunnel.
	RxBytes, TxBytes uint64
	// STUNDropped: STUN messages that arrived on the WireGuard socket while
	// ICE did not read STUNConn (absent or too slow).
	STUNDropped uint64
	// RelayDropped: packets read from a relayed conn after its path was
	// replaced or the device stopped, before WireGuard took them.
	RelayDropped uint64
	// FilteredIn and FilteredOut: packets Config.Filter denied, coming out
	// of the tunnel and going into it (in kernel mode: packets the
	// nftables rules dropped).
	FilteredIn, FilteredOut uint64
}

// Device is a running WireGuard interface. Methods are safe for concurrent
// use. Changing one peer never disturbs the tunnels of the others.
//
// The first path a peer gets (SetDirect or SetRelayed after SetPeer) starts
// the handshake at once in userspace and netstack modes, even when traffic
// sent before the peer had a path made wireguard-go try one already (it
// would otherwise hold the next attempt back for 5 s), and packets queued
// meanwhile are kept. Only one side starts it, so that two initiations do
// not cross and cancel each other: the peer with the larger public key
// (compared as bytes, the rule ICE's controlling side follows in the
// agent); the other one starts it itself if no handshake completed within
// a second of its own first path.
type Device interface {
	// Name returns the interface name.
	Name() string
	// ListenPort returns the WireGuard UDP port actually bound.
	ListenPort() uint16
	// STUNConn is the socket ICE's UDP mux must use for host and
	// server-reflexive candidates. In userspace and netstack modes it is the
	// WireGuard socket itself: STUN packets that arrive on it are handed
	// here, and writes go out of it, so the NAT mapping ICE discovers is the
	// one WireGuard uses. Reads never hold WireGuard up: STUN that the
	// reader does not take in time is dropped. Its LocalAddr is the
	// unspecified address with the WireGuard port, so pion's UDP mux offers
	// every local address — filter out the mesh interface's own address.
	// Closing it (the mux closes its conn) detaches it and leaves the
	// WireGuard socket open; the next call returns a fresh conn. In kernel
	// mode it is a separate UDP socket whose non-STUN traffic the device
	// forwards to the kernel for peers on a direct path.
	STUNConn() net.PacketConn
	// SetPeer adds the peer or updates its allowed IPs and keepalive (and the
	// routes for its allowed IPs). It does not change how packets travel.
	SetPeer(Peer) error
	// RemovePeer removes the peer, its path and its routes.
	RemovePeer(keys.Key) error
	// SetDirect sends the peer's packets straight from the WireGuard socket
	// to remote, replacing any relayed path for sending. The relayed conn,
	// if any, is still read (packets the remote sends through it until it
	// switches too are delivered) until SetRelayed replaces it, the peer is
	// removed, or the conn fails; its owner may close it at any time.
	// Returns ErrUnknownPeer for a peer SetPeer has not added.
	//
	// WireGuard roams: an authenticated packet that arrives straight from
	// the remote moves the peer's sends to that address, as in any
	// WireGuard. Packets that arrive through a relayed conn never move a
	// peer that is on a direct path back to the relay.
	SetDirect(peer keys.Key, remote netip.AddrPort) error
	// SetRelayed sends the peer's packets through c (for example an ICE
	// connection over a TURN allocation) and feeds what c receives into
	// WireGuard, replacing any earlier path. c must keep message boundaries
	// (one Write is one packet, one Read returns one). Calling it again with
	// the same c (after SetDirect) moves the peer back to c. The device reads
	// c until c fails, another conn replaces it, or the peer is removed, and
	// then stops reading by setting a read deadline in the past (conns whose
	// deadlines are stubs, like ice.Conn, are read once more, or until their
	// owner closes them). It never closes c. Returns ErrUnknownPeer for a
	// peer SetPeer has not added.
	SetRelayed(peer keys.Key, c net.Conn) error
	// Stats returns the state of every peer.
	Stats() ([]PeerStats, error)
	// Counters returns the device's traffic and drop counters.
	Counters() Counters
	// Net returns the netstack in ModeNetstack, nil otherwise.
	Net() *netstack.Net
	// Close removes the interface and its routes and releases the socket.
	Close() error
}

// FirewallDevice is a Device that enforces the map's firewall rules itself
// rather than through Config.Filter: kernel mode, whose packets never reach
// this process, renders them as nftables rules on the interface
// (internal/filter/nftfilter). The engine calls SetFirewall with the rules
// of every map, the same compiled rules it gives its Filter, so that both
// enforce one policy.
type FirewallDevice interface {
	Device
	// SetFirewall replaces the rules the device enforces (nil: accept
	// everything), atomically; flows already open stay open. It returns
	// ErrClosed after Close and an error wrapping ErrNoFirewall when the
	// rules could not be installed (the previous ones then stay).
	SetFirewall(*filter.Rules) error
}

// describedFilter is a PacketFilter that can say which compiled rules it
// applies (internal/filter's Filter): kernel mode installs those.
type describedFilter interface {
	Rules() *filter.Rules
}

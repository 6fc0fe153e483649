// Package relay is meshd's STUN and TURN server: the fallback path between
// two peers that cannot reach each other directly, and the address-discovery
// server every agent asks for its public address. It is built on
// github.com/pion/turn/v3; this package adds what pion leaves to its users:
// TURN REST credentials shared with control (internal/turncred), relay
// addresses on a configured public IP and port range, per-user allocation
// quotas, an upper bound on an allocation's life, a peer-address policy
// (policy.go: no relaying into the relay's host or private networks),
// TURN over TCP and TLS (with an ALPN splitter so TURN and HTTPS share port
// 443), Prometheus metrics and a Stats snapshot for status output.
//
// Only roles/relay (meshd relay), roles/all and bench/relay import it.
//
// # What the server serves
//
// One Server listens on:
//
//	stun:HOST:3478                   STUN binding (UDP; also answered on TCP)
//	turn:HOST:3478?transport=udp     TURN over UDP
//	turn:HOST:3478?transport=tcp     TURN over TCP, same port number
//	turns:HOST:443?transport=tcp     TURN over TLS (the HTTPS port in meshd all,
//	                                 or --turn-tls-listen for meshd relay)
//
// Relayed addresses are always UDP over IPv4 (pion allocates "udp4"); the
// transport in the URL is only the client-to-relay leg. DTLS (turns: over
// UDP) and TCP allocations (RFC 6062) are not served.
//
// # Notes for TURN clients (the agent)
//
// The agent gathers relay candidates with pion/ice/v3 given these URLs and
// the credentials from the network map (username "<expiry>:<id>", password
// base64(HMAC-SHA1(secret, username)); see turncred). pion/ice needs:
//
//   - turns: URLs with ?transport=tcp. Without it pion/ice dials DTLS, which
//     this server does not speak.
//   - AgentConfig.InsecureSkipVerify = true when the server's certificate is
//     the self-signed one whose pin travels in the join command: pion/ice
//     builds its own tls.Config (ServerName = URL host, no pin hook). That is
//     acceptable here: what crosses the relay is WireGuard ciphertext, and
//     the TURN exchange is authenticated by the HMAC credential, not by the
//     certificate. An agent that wants the pin checked can instead set
//     AgentConfig.ProxyDialer to a dialer that wraps the TCP connection in
//     tlsconf.ClientConfig(pin) for the turns address (pion/ice then uses
//     the dialed connection as is and does no TLS of its own).
//   - pion/ice's TLS client offers no ALPN; coturn's clients offer
//     "http/1.1", "stun.turn" and "stun.nat-discovery". SplitTLS prefers
//     "stun.turn" and sends connections with no ALPN to TURN, so both reach
//     the relay on the shared HTTPS port.
//   - Both ends of a relayed pair may hold allocations on the same relay:
//     the server passes packets between its own relay addresses in process
//     (no hairpin through the network, also behind 1:1 NAT).
//
// Data goes over channels (ChannelBind), which pion's client sets up by
// itself after the first send; Send indications work too but cost 36 bytes
// more per packet.
//
// # The data path
//
// pion serves each UDP socket with one goroutine (read, handle, write one
// datagram at a time) and each allocation with another (read a peer's
// datagram, write ChannelData to the client). Under those loops, without
// patching pion, this package:
//
//   - runs Options.Workers UDP sockets on the port (SO_REUSEPORT), each
//     with its own pion loop, and reads each with recvmmsg (readBatch);
//   - passes packets between two of its own relay addresses in process
//     (relayConn.deliver): a pair of relayed peers costs one system call
//     less on each side of the relay;
//   - gathers the ChannelData an allocation sends its client while packets
//     are queued and sends runs of equal size as one UDP GSO write
//     (outBatch), flushed before the allocation's goroutine waits; the
//     same for what a read loop sends peers from relay sockets, flushed
//     before its next recvmmsg;
//   - hands pion one cached *net.UDPAddr per address and reads and writes
//     with netip.AddrPort, and asks for 4 MB socket buffers.
//
// What is left per packet is pion's: its handler allocates (ChannelData
// encoding, debug-log arguments, an address string per datagram) and both
// loops take one datagram per call. bench/relay measures it (relay CPU
// per GB about 2 to 3 times lower than without these, and than coturn's).
package relay

// Package relay is meshd's STUN and TURN server: the fallback path between
// two peers that cannot reach each other directly, and the address-discovery
// server every agent asks for its public address. It is built on
// github.com/pion/turn/v3; this package adds what pion leaves to its users:
// TURN REST credentials shared with control (internal/turncred), relay
// addresses on a configured public IP and port range, per-user allocation
// quotas, an upper bound on an allocation's life, a peer-address policy,
// TURN over TCP and TLS (with an ALPN splitter so TURN and HTTPS share port
// 443), Prometheus metrics and a Stats snapshot for status output.
//
// roles/relay (meshd relay) and roles/all import it; control imports only
// URLs, to write the relay's addresses into network maps.
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
package relay

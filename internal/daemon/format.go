package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/cliutil"
)

// StatusJSON is what `meshd status --json` prints. Scripts rely on these
// names; add fields, never rename or remove one.
type StatusJSON struct {
	State   string     `json:"state"`
	Message string     `json:"message,omitempty"`
	Self    SelfJSON   `json:"self"`
	Peers   []PeerJSON `json:"peers"`
	// Routes are the map's routes: served here or used through a peer.
	Routes []RouteJSON `json:"routes"`
	// DNS is the mesh resolver; null while the tunnel is down.
	DNS *DNSJSON `json:"dns"`
}

// RouteJSON is one route of the map.
type RouteJSON struct {
	Network      string `json:"network"`
	Via          string `json:"via"` // the routing peer's name; "" when this machine routes it
	ViaPublicKey string `json:"via_public_key"`
	Masquerade   bool   `json:"masquerade"`
	Metric       int32  `json:"metric"`
	State        string `json:"state"` // serving, active, unsupported, error
	Message      string `json:"message,omitempty"`
}

// DNSJSON is the mesh resolver.
type DNSJSON struct {
	Addresses []string `json:"addresses"`
	Domain    string   `json:"domain"`
	Mode      string   `json:"mode"` // systemd-resolved, manual, off, error
	Message   string   `json:"message,omitempty"`
}

// SelfJSON is this machine.
type SelfJSON struct {
	Name       string     `json:"name"`
	DNSName    string     `json:"dns_name"`
	OverlayIP  string     `json:"overlay_ip"`
	PublicKey  string     `json:"public_key"`
	Control    ServerJSON `json:"control"`
	Signal     ServerJSON `json:"signal"`
	Interface  string     `json:"interface"`
	ListenPort uint32     `json:"listen_port"`
	// Login is set while a single sign-on login waits for the person.
	Login *LoginJSON `json:"login,omitempty"`
}

// LoginJSON is where the person approves a single sign-on login.
type LoginJSON struct {
	URL  string `json:"url"`
	Code string `json:"code"`
}

// ServerJSON is the connection to control or signal.
type ServerJSON struct {
	URL   string `json:"url"`
	State string `json:"state"` // connected, connecting, disconnected
	Error string `json:"error,omitempty"`
}

// PeerJSON is one remote peer.
type PeerJSON struct {
	Name            string         `json:"name"`
	DNSName         string         `json:"dns_name"`
	OverlayIP       string         `json:"overlay_ip"`
	PublicKey       string         `json:"public_key"`
	State           string         `json:"state"` // connected, connecting, idle
	Path            string         `json:"path"`  // direct, relayed, "" when not connected
	LocalCandidate  *CandidateJSON `json:"local_candidate"`
	RemoteCandidate *CandidateJSON `json:"remote_candidate"`
	LatencyMS       float64        `json:"latency_ms"`
	// LastHandshake is RFC 3339 (UTC), "" when there was none.
	LastHandshake string `json:"last_handshake"`
	RxBytes       int64  `json:"rx_bytes"`
	TxBytes       int64  `json:"tx_bytes"`
	// Reason says why the peer is not direct (unreachable at signal,
	// relayed or still connecting), when known.
	Reason string `json:"reason,omitempty"`
	// PostQuantum: a post-quantum pre-shared key protects the tunnel;
	// PostQuantumRotated is when it last rotated (RFC 3339, UTC; "" when
	// never).
	PostQuantum        bool   `json:"post_quantum"`
	PostQuantumRotated string `json:"post_quantum_rotated,omitempty"`
}

// CandidateJSON is one end of the path; null when there is no path.
type CandidateJSON struct {
	Type    string `json:"type"` // host, srflx, prflx, relay
	Address string `json:"address"`
}

// ToJSON converts a status response.
func ToJSON(r *daemonv1.StatusResponse) StatusJSON {
	s := StatusJSON{State: r.GetState(), Message: r.GetMessage(), Peers: []PeerJSON{}, Routes: []RouteJSON{}}
	for _, rt := range r.GetRoutes() {
		s.Routes = append(s.Routes, RouteJSON{Network: rt.GetNetwork(), Via: rt.GetVia(), ViaPublicKey: rt.GetViaPublicKey(),
			Masquerade: rt.GetMasquerade(), Metric: rt.GetMetric(), State: rt.GetState(), Message: rt.GetMessage()})
	}
	if d := r.GetDns(); d != nil {
		s.DNS = &DNSJSON{Addresses: append([]string{}, d.GetAddresses()...), Domain: d.GetDomain(), Mode: d.GetMode(), Message: d.GetMessage()}
	}
	self := r.GetSelf()
	s.Self = SelfJSON{
		Name: self.GetName(), DNSName: self.GetDnsName(), OverlayIP: self.GetOverlayIp(), PublicKey: self.GetPublicKey(),
		Control:   ServerJSON{URL: self.GetControl().GetUrl(), State: self.GetControl().GetState(), Error: self.GetControl().GetError()},
		Signal:    ServerJSON{URL: self.GetSignal().GetUrl(), State: self.GetSignal().GetState(), Error: self.GetSignal().GetError()},
		Interface: self.GetInterface(), ListenPort: self.GetListenPort(),
		Login: loginJSON(self.GetLogin()),
	}
	for _, p := range r.GetPeers() {
		pj := PeerJSON{
			Name: p.GetName(), DNSName: p.GetDnsName(), OverlayIP: p.GetOverlayIp(), PublicKey: p.GetPublicKey(),
			State: p.GetState(), Path: p.GetPath(), LatencyMS: p.GetLatencyMs(),
			RxBytes: p.GetRxBytes(), TxBytes: p.GetTxBytes(), Reason: p.GetReason(),
		}
		if c := p.GetLocalCandidate(); c != nil && c.GetAddress() != "" {
			pj.LocalCandidate = &CandidateJSON{Type: c.GetType(), Address: c.GetAddress()}
		}
		if c := p.GetRemoteCandidate(); c != nil && c.GetAddress() != "" {
			pj.RemoteCandidate = &CandidateJSON{Type: c.GetType(), Address: c.GetAddress()}
		}
		if hs := p.GetLastHandshake(); hs != nil && hs.AsTime().Unix() > 0 {
			pj.LastHandshake = hs.AsTime().UTC().Format(time.RFC3339)
		}
		pj.PostQuantum = p.GetPostQuantum()
		if r := p.GetPostQuantumRotated(); r != nil && r.AsTime().Unix() > 0 {
			pj.PostQuantumRotated = r.AsTime().UTC().Format(time.RFC3339)
		}
		s.Peers = append(s.Peers, pj)
	}
	return s
}

// WriteJSON prints the status as indented JSON.
func WriteJSON(w io.Writer, r *daemonv1.StatusResponse) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ToJSON(r))
}

// WriteTable prints the status for people.
func WriteTable(w io.Writer, r *daemonv1.StatusResponse, now time.Time) error {
	s := ToJSON(r)
	b := &strings.Builder{}
	fmt.Fprintf(b, "%s  %s  %s  (%s)\n", orDash(s.Self.Name), orDash(s.Self.OverlayIP), s.State, s.Self.PublicKey)
	if s.Message != "" {
		fmt.Fprintf(b, "  %s\n", s.Message)
	}
	if l := s.Self.Login; l != nil {
		fmt.Fprintf(b, "  login   open %s and enter %s\n", l.URL, l.Code)
	}
	fmt.Fprintf(b, "  control %s  %s%s\n", orDash(s.Self.Control.State), s.Self.Control.URL, errSuffix(s.Self.Control.Error))
	fmt.Fprintf(b, "  signal  %s  %s%s\n", orDash(s.Self.Signal.State), s.Self.Signal.URL, errSuffix(s.Self.Signal.Error))
	if d := s.DNS; d != nil {
		fmt.Fprintf(b, "  dns     %s  %s  %s%s\n", orDash(strings.Join(d.Addresses, ", ")), orDash(d.Domain), d.Mode, errSuffix(d.Message))
	}
	if len(s.Routes) > 0 {
		b.WriteString("\n")
		tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROUTE\tVIA\tSTATE\tMASQUERADE\tMETRIC")
		for _, r := range s.Routes {
			via := r.Via
			if via == "" {
				via = "this machine"
			}
			masq := "no"
			if r.Masquerade {
				masq = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d%s\n", r.Network, via, r.State, masq, r.Metric, errSuffix(r.Message))
		}
		tw.Flush()
	}
	if len(s.Peers) == 0 {
		b.WriteString("\nno peers\n")
		_, err := io.WriteString(w, b.String())
		return err
	}
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tIP\tSTATE\tPATH\tENDPOINT\tLATENCY\tHANDSHAKE\tRX\tTX")
	for _, p := range s.Peers {
		path, endpoint := p.Path, "-"
		if path == "" {
			path = "-"
		}
		if p.RemoteCandidate != nil {
			endpoint = p.RemoteCandidate.Type + " " + p.RemoteCandidate.Address
		}
		lat := "-"
		if p.LatencyMS > 0 {
			lat = fmt.Sprintf("%.1fms", p.LatencyMS)
		}
		hs := "never"
		if t, err := time.Parse(time.RFC3339, p.LastHandshake); err == nil {
			hs = now.Sub(t).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(p.Name), orDash(p.OverlayIP), p.State, path, endpoint, lat, hs,
			cliutil.Bytes(p.RxBytes), cliutil.Bytes(p.TxBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var why strings.Builder
	for _, p := range s.Peers {
		if p.Reason != "" {
			fmt.Fprintf(&why, "  %s (%s): %s\n", orDash(p.Name), p.State+pathSuffix(p.Path), p.Reason)
		}
	}
	if why.Len() > 0 {
		if _, err := io.WriteString(w, "\nwhy not direct:\n"+why.String()); err != nil {
			return err
		}
	}
	var pq strings.Builder
	for _, p := range s.Peers {
		if p.PostQuantum {
			rotated := "never"
			if t, err := time.Parse(time.RFC3339, p.PostQuantumRotated); err == nil {
				rotated = now.Sub(t).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(&pq, "  %s: post_quantum: true, key rotated %s\n", orDash(p.Name), rotated)
		}
	}
	if pq.Len() > 0 {
		_, err := io.WriteString(w, "\npost-quantum pre-shared keys:\n"+pq.String())
		return err
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return "  (" + e + ")"
}

func pathSuffix(path string) string {
	if path == "" {
		return ""
	}
	return ", " + path
}

func loginJSON(l *daemonv1.SSOLogin) *LoginJSON {
	if l == nil {
		return nil
	}
	return &LoginJSON{URL: l.GetUrl(), Code: l.GetCode()}
}

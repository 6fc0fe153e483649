// Package rpcclient builds the HTTP clients that agents and `meshd admin`
// use to call control and signal: HTTP/2 over TLS, checking a certificate
// pin when one is given, or h2c for an http:// URL (labs only).
package rpcclient

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"meshd/internal/fwmark"
	"meshd/internal/tlsconf"
)

// New returns an HTTP client for baseURL. For https, pin (may be empty)
// selects pinned verification; for http, the client speaks h2c.
func New(baseURL, pin string) (*http.Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("url %q: want https://host:port", baseURL)
	}
	// The firewall mark keeps an agent's control and signal connections
	// on the underlay when the mesh routes a network holding the server
	// (internal/fwmark); elsewhere, and without privileges, it is a no-op.
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: fwmark.Control}
	t := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
		// HTTP/2 keepalive pings find dead connections under long streams.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 10 * time.Second},
	}
	protocols := new(http.Protocols)
	switch u.Scheme {
	case "https":
		cfg, err := tlsconf.ClientConfig(pin)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig = cfg
		protocols.SetHTTP2(true)
	case "http":
		if pin != "" {
			return nil, fmt.Errorf("url %q is not https, but a tls pin was given", baseURL)
		}
		protocols.SetUnencryptedHTTP2(true)
		t.DialContext = hintDial(t.DialContext)
	default:
		return nil, fmt.Errorf("url %q: scheme must be https (or http for an --insecure lab server)", baseURL)
	}
	t.Protocols = protocols
	return &http.Client{Transport: t}, nil
}

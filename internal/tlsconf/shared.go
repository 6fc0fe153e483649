package tlsconf

import (
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
)

// NeedsSelfSigned reports whether the server waits for ShareSelfSigned.
func (s *Server) NeedsSelfSigned() bool { return s.opts.SharedSelfSigned && s.shared.Load() == nil }

// ShareSelfSigned loads the self-signed certificate from a store that
// every replica shares and returns its pin (also in s.Pin). load returns
// the stored certificate and key (PEM, one after the other), calling gen
// when the store holds none yet; gen gives the certificate in DataDir,
// making it when there is none, so a machine that had a certificate there
// keeps its pin when it moves to a store. Call it before serving.
func (s *Server) ShareSelfSigned(load func(gen func() ([]byte, error)) ([]byte, error)) (string, error) {
	if !s.opts.SharedSelfSigned {
		return "", errors.New("tls: the certificate is not a shared self-signed one")
	}
	gen := func() ([]byte, error) {
		c, k, err := LoadOrCreateSelfSignedPEM(s.opts.DataDir, s.opts.Hosts)
		if err != nil {
			return nil, err
		}
		return append(append(c, '\n'), k...), nil
	}
	cert, pin, err := SelfSignedFrom(func() ([]byte, []byte, error) {
		b, err := load(gen)
		return b, b, err // X509KeyPair takes the certificate and key blocks it needs from each
	})
	if err != nil {
		return "", fmt.Errorf("tls: shared self-signed certificate: %w", err)
	}
	s.shared.Store(&cert)
	s.Pin = pin
	return pin, nil
}

// DataDirPin returns the pin of the self-signed certificate in dir, "" when
// there is none (or it does not load).
func DataDirPin(dir string) string {
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName))
	if err != nil {
		return ""
	}
	return Pin(c.Certificate[0])
}

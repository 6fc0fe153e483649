// Package tlsconf gives meshd TLS that needs no certificate authority: a
// self-signed certificate made once (in the data directory, or in the store
// that control replicas share), whose SHA-256 fingerprint ("pin") clients
// check instead of a CA chain and names. It also loads a
// given certificate or gets one by ACME. Servers and clients both import it.
package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme/autocert"
)

// PinPrefix starts every pin.
const PinPrefix = "sha256:"

// ErrPinMismatch means the server's certificate is not the pinned one.
var ErrPinMismatch = errors.New("tls: server certificate does not match the pinned fingerprint")

// Pin returns the pin of a DER certificate: "sha256:" and the hex SHA-256 of
// the certificate, as `openssl x509 -noout -fingerprint -sha256` shows it
// (without colons, lower case).
func Pin(der []byte) string {
	sum := sha256.Sum256(der)
	return PinPrefix + hex.EncodeToString(sum[:])
}

// ParsePin checks a pin's form and returns it normalised (lower case, no colons).
func ParsePin(s string) (string, error) {
	v, ok := strings.CutPrefix(strings.TrimSpace(s), PinPrefix)
	if !ok {
		return "", fmt.Errorf("tls pin %q: want sha256:<64 hex digits>", s)
	}
	v = strings.ToLower(strings.ReplaceAll(v, ":", ""))
	if b, err := hex.DecodeString(v); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("tls pin %q: want sha256:<64 hex digits>", s)
	}
	return PinPrefix + v, nil
}

// ClientConfig returns the TLS configuration of a client. With a pin, the
// server's leaf certificate must match it (no CA is consulted); without one,
// the system's roots verify the server.
func ClientConfig(pin string) (*tls.Config, error) {
	if pin == "" {
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	want, err := ParsePin(pin)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrPinMismatch
			}
			got := Pin(cs.PeerCertificates[0].Raw)
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				return fmt.Errorf("%w: got %s, want %s", ErrPinMismatch, got, want)
			}
			return nil
		},
	}, nil
}

// Options says where a server's certificate comes from. CertFile/KeyFile win
// over ACMEDomain, which wins over the self-signed default.
type Options struct {
	CertFile, KeyFile string
	ACMEDomain        string
	ACMEEmail         string
	// DataDir keeps the self-signed certificate and the ACME cache.
	DataDir string
	// Hosts are names and addresses the self-signed certificate is made for.
	Hosts []string
	// SharedSelfSigned: a self-signed certificate comes later, through
	// Server.ShareSelfSigned (control keeps it in its store, so that every
	// replica serves the one certificate whose pin join tokens carry);
	// ServerConfig does not read or write DataDir then.
	SharedSelfSigned bool
}

// Server is a server's TLS configuration and, for a self-signed
// certificate, its pin.
type Server struct {
	Config *tls.Config
	// Pin is empty unless the certificate is self-signed (and, with
	// Options.SharedSelfSigned, until ShareSelfSigned).
	Pin string

	opts   Options
	shared atomic.Pointer[tls.Certificate] // ShareSelfSigned's, served by Config
}

// ServerConfig builds the server's TLS configuration from opts.
func ServerConfig(opts Options) (*Server, error) {
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case opts.CertFile != "" || opts.KeyFile != "":
		if opts.CertFile == "" || opts.KeyFile == "" {
			return nil, errors.New("tls: --tls-cert and --tls-key go together")
		}
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load %s/%s: %w", opts.CertFile, opts.KeyFile, err)
		}
		base.Certificates = []tls.Certificate{cert}
		return &Server{Config: base}, nil
	case opts.ACMEDomain != "":
		m := &autocert.Manager{
			Prompt:     autocert.AcceptTOS,
			HostPolicy: autocert.HostWhitelist(opts.ACMEDomain),
			Cache:      autocert.DirCache(filepath.Join(opts.DataDir, "acme")),
			Email:      opts.ACMEEmail,
		}
		c := m.TLSConfig()
		c.MinVersion = tls.VersionTLS12
		return &Server{Config: c}, nil
	case opts.SharedSelfSigned:
		s := &Server{Config: base, opts: opts}
		base.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.shared.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("tls: the certificate is not loaded yet")
		}
		return s, nil
	default:
		cert, pin, err := LoadOrCreateSelfSigned(opts.DataDir, opts.Hosts)
		if err != nil {
			return nil, err
		}
		base.Certificates = []tls.Certificate{cert}
		return &Server{Config: base, Pin: pin}, nil
	}
}

// Self-signed certificate files in the data directory.
const (
	CertFileName = "tls.crt"
	KeyFileName  = "tls.key"
)

// LoadOrCreateSelfSigned loads DIR/tls.crt and DIR/tls.key, or creates them
// (ECDSA P-256, ten years) for hosts plus localhost. The pin stays the same
// across restarts because the certificate is made once.
func LoadOrCreateSelfSigned(dir string, hosts []string) (tls.Certificate, string, error) {
	return SelfSignedFrom(func() ([]byte, []byte, error) { return LoadOrCreateSelfSignedPEM(dir, hosts) })
}

// SelfSignedFrom returns the certificate and pin of the PEM certificate and
// key that load returns (from files, or from a store).
func SelfSignedFrom(load func() (certPEM, keyPEM []byte, err error)) (tls.Certificate, string, error) {
	certPEM, keyPEM, err := load()
	if err != nil {
		return tls.Certificate{}, "", err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("tls: self-signed certificate: %w", err)
	}
	return cert, Pin(cert.Certificate[0]), nil
}

// LoadOrCreateSelfSignedPEM is LoadOrCreateSelfSigned returning the PEM
// files' contents.
func LoadOrCreateSelfSignedPEM(dir string, hosts []string) (certPEM, keyPEM []byte, err error) {
	certPath, keyPath := filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName)
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return nil, nil, fmt.Errorf("tls: load %s: %w (remove both %s and %s to make a new certificate; joined agents then need the new pin)", certPath, err, CertFileName, KeyFileName)
		}
		return certPEM, keyPEM, nil
	case !errors.Is(cerr, os.ErrNotExist) && cerr != nil:
		return nil, nil, fmt.Errorf("tls: load %s: %w", certPath, cerr)
	case !errors.Is(kerr, os.ErrNotExist) && kerr != nil:
		return nil, nil, fmt.Errorf("tls: load %s: %w", keyPath, kerr)
	case cerr == nil || kerr == nil:
		return nil, nil, fmt.Errorf("tls: only one of %s and %s is in %s: restore the other, or remove both to make a new certificate (joined agents then need the new pin)", CertFileName, KeyFileName, dir)
	}
	certPEM, keyPEM, err = NewSelfSigned(hosts)
	if err != nil {
		return nil, nil, err
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// NewSelfSigned makes a self-signed certificate and key (ECDSA P-256, ten
// years, PEM) for hosts plus localhost. Clients check its pin, not its
// names: hosts only help tools that look.
func NewSelfSigned(hosts []string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("tls: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "meshd"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost", "meshd"},
	}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "localhost" && h != "meshd" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// writeFile writes atomically: a crash never leaves half a key behind.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("tls: write %s: %w", path, err)
	}
	return nil
}

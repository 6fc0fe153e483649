package cliutil

import (
	"github.com/urfave/cli/v2"

	"meshd/internal/tlsconf"
)

// ServerFlags are the flags of every role that serves HTTPS: where it
// listens and where its certificate comes from.
func ServerFlags(defaultListen string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "listen", Value: defaultListen, Usage: "`HOST:PORT` to serve HTTPS (Connect-RPC) on"},
		&cli.StringFlag{Name: "data", Value: DefaultDataDir, Usage: "`DIR` for the database, certificate and secrets"},
		&cli.StringFlag{Name: "tls-cert", Usage: "PEM certificate `FILE` (with --tls-key); default: a self-signed certificate in --data"},
		&cli.StringFlag{Name: "tls-key", Usage: "PEM private key `FILE` for --tls-cert"},
		&cli.StringFlag{Name: "acme-domain", Usage: "get a certificate for `DOMAIN` from Let's Encrypt (needs port 443 reachable)"},
		&cli.StringFlag{Name: "acme-email", Usage: "contact `EMAIL` for ACME"},
		&cli.BoolFlag{Name: "insecure", Usage: "serve HTTP/2 without TLS (h2c); for labs only"},
		&cli.IntFlag{Name: "max-conns", Usage: "at most `N` connections to --listen; silent and idle ones make room first (0: 8192, or half the open-file limit when lower)"},
	}
}

// TLSOptions reads the certificate flags. hosts go into a self-signed
// certificate.
func TLSOptions(c *cli.Context, hosts ...string) tlsconf.Options {
	return tlsconf.Options{
		CertFile:   c.String("tls-cert"),
		KeyFile:    c.String("tls-key"),
		ACMEDomain: c.String("acme-domain"),
		ACMEEmail:  c.String("acme-email"),
		DataDir:    c.String("data"),
		Hosts:      hosts,
	}
}

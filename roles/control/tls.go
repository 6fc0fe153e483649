package control

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"meshd/internal/tlsconf"
	"meshd/store"
)

// SelfSignedSecret names the self-signed certificate and key (PEM) in the
// store: replicas sharing the store serve that one certificate, so the pin
// in every join token matches every replica.
const SelfSignedSecret = "tls_self_signed"

// shareTLS loads the server's self-signed certificate from st, seeding
// the store with the one in dataDir (made when missing) the first time.
func shareTLS(ctx context.Context, st *store.Store, ts *tlsconf.Server, dataDir string, log *zap.Logger) (string, error) {
	pin, err := ts.ShareSelfSigned(func(gen func() ([]byte, error)) ([]byte, error) {
		return st.SecretOrCreate(ctx, SelfSignedSecret, gen)
	})
	if err != nil {
		return "", fmt.Errorf("control: %w", err)
	}
	if local := tlsconf.DataDirPin(dataDir); local != "" && local != pin {
		log.Warn("the certificate in the data directory is not the network's: serving the one in the store; agents that joined with the data directory's pin need a new join token",
			zap.String("data_dir_pin", local), zap.String("tls_pin", pin))
	}
	return pin, nil
}

package control

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/jointoken"
	"meshd/internal/netmap"
	"meshd/store"
)

// Files Bootstrap keeps in the data directory (mode 0600).
const (
	// AdminTokenFile holds the plaintext of the bootstrap admin token.
	AdminTokenFile = "admin-token"
	// JoinTokenFile holds the join token (control URL, pin, setup key).
	JoinTokenFile = "join-token"
	// AddressFile holds control's URL and pin (two lines) for `meshd admin
	// --data`: a replica that joined a network made by another has no
	// join-token (the bootstrap key stays with the first one).
	AddressFile = "control-address"
)

// ReadAddress returns the control URL and pin kept in DIR/control-address.
func ReadAddress(dir string) (url, pin string, err error) {
	b, err := os.ReadFile(filepath.Join(dir, AddressFile))
	if err != nil {
		return "", "", err
	}
	url, pin, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
	if url == "" {
		return "", "", fmt.Errorf("%s: no control URL in it", filepath.Join(dir, AddressFile))
	}
	return url, strings.TrimSpace(pin), nil
}

// Bootstrap is what a first start made, or a later start found again.
type Bootstrap struct {
	AccountID string
	// Created is true on the first start.
	Created bool
	// AdminToken is the plaintext admin token kept in AdminTokenPath.
	AdminToken     string
	AdminTokenPath string
	// SetupKey is the reusable setup key in the join token.
	SetupKey      string
	JoinToken     string
	JoinTokenPath string
	// JoinCommand is the line to print: "meshd agent --join <TOKEN>"; empty
	// when the bootstrap key no longer works (then Hint says what to do).
	JoinCommand string
	// Hint says why there is no join line and how to make a key.
	Hint string
}

// Bootstrap makes sure there is an account and an admin token, and makes the
// reusable bootstrap setup key once. The first start creates them and writes
// DIR/admin-token and DIR/join-token (mode 0600); later starts reuse them. A
// removed admin-token file gets a new token (the operator's way back in); a
// revoked, expired or deleted bootstrap key is not replaced, since an
// admin revoked it on purpose: there is no join line then, and Hint says how
// to make a key.
func (s *Service) Bootstrap(ctx context.Context, dir string) (Bootstrap, error) {
	var b Bootstrap
	if s.opts.PublicURL == "" {
		return b, errors.New("control: bootstrap needs the public URL of control (--public-url)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return b, fmt.Errorf("control: bootstrap: %w", err)
	}
	accts := s.accountList()
	var a *account
	if len(accts) > 0 {
		a = accts[0]
	} else {
		var err error
		if a, err = s.createAccount(ctx, "default"); err != nil {
			return b, err
		}
		b.Created = true
	}
	b.AccountID = a.id

	b.AdminTokenPath = filepath.Join(dir, AdminTokenFile)
	tok, err := s.bootstrapToken(ctx, a, b.AdminTokenPath)
	if err != nil {
		return b, err
	}
	b.AdminToken = tok

	want := s.joinToken("")
	if err := writeIfChanged(filepath.Join(dir, AddressFile), want.ControlURL+"\n"+want.Pin+"\n"); err != nil {
		return b, err
	}
	b.JoinTokenPath = filepath.Join(dir, JoinTokenFile)
	jt, why, err := s.bootstrapJoin(ctx, a, b.JoinTokenPath)
	if err != nil {
		return b, err
	}
	if why != "" {
		b.Hint = fmt.Sprintf("There is no join line: %s. To join a machine, make a setup key here:\n\n"+
			"  meshd admin --data %s setup-keys create --name NAME\n\nand run the line it prints on the machine.", why, dir)
		return b, nil
	}
	b.SetupKey, b.JoinToken = jt.SetupKey, jt.Encode()
	b.JoinCommand = JoinCommand(b.JoinToken)
	return b, nil
}

// createAccount makes an account with its All group and the default policy
// "All -> All, bidirectional".
func (s *Service) createAccount(ctx context.Context, name string) (*account, error) {
	now := s.now()
	d := &store.AccountData{Account: store.Account{ID: newID(), Name: name, OverlayNetwork: DefaultOverlayNetwork,
		DNSDomain: DefaultDNSDomain, EphemeralOffline: 10 * time.Minute, Created: now}}
	all := store.Group{ID: newID(), AccountID: d.Account.ID, Name: "All", IsAll: true, Created: now.Add(1)}
	d.Groups = []store.Group{all}
	d.Policies = []store.Policy{{ID: newID(), AccountID: d.Account.ID, Name: "Default",
		Description: "every peer reaches every peer", Enabled: true, Protocol: "all", Bidirectional: true,
		Action: "accept", Created: now.Add(2), Sources: []string{all.ID}, Destinations: []string{all.ID}}}
	err := s.st.Write(ctx, func(tx *store.Tx) error {
		if err := tx.PutAccount(d.Account); err != nil {
			return err
		}
		if err := tx.PutGroup(all); err != nil {
			return err
		}
		if err := tx.PutPolicy(d.Policies[0]); err != nil {
			return err
		}
		return tx.AddEvent(store.Event{AccountID: d.Account.ID, Time: now, Actor: "system", Action: "account.created",
			TargetType: "account", TargetID: d.Account.ID, TargetName: name})
	})
	if err != nil {
		return nil, fmt.Errorf("control: create account: %w", err)
	}
	a, err := newAccount(s, d)
	if err != nil {
		return nil, fmt.Errorf("control: create account: %w", err)
	}
	s.mu.Lock()
	s.accounts = append(s.accounts, a)
	s.mu.Unlock()
	s.start(a)
	s.publish(busMsg{Account: a.id, Kind: kindAccount, Change: netmap.Change{All: true}})
	s.log.Info("created account", zap.String("account", a.id), zap.String("network", d.Account.OverlayNetwork))
	return a, nil
}

// bootstrapToken returns the admin token in path, making a new one when
// the file is missing or its token unknown.
func (s *Service) bootstrapToken(ctx context.Context, a *account, path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		s.mu.RLock()
		t := s.tokens[string(hashSecret(tok))]
		s.mu.RUnlock()
		if t != nil && t.AccountID == a.id {
			return tok, nil
		}
		s.log.Warn("the admin token in the data directory is not known to the database; making a new one", zap.String("file", path))
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("control: bootstrap: %w", err)
	}
	tok, err := s.CreateAdminToken(ctx, a.id, "bootstrap")
	if err != nil {
		return "", err
	}
	if err := writeSecretFile(path, tok+"\n"); err != nil {
		return "", err
	}
	return tok, nil
}

// CreateAdminToken makes an admin token for an account and returns its
// plaintext, which is not kept.
func (s *Service) CreateAdminToken(ctx context.Context, accountID, name string) (string, error) {
	t, tok, err := newAdminToken(accountID, name, s.now())
	if err != nil {
		return "", err
	}
	err = s.st.Write(ctx, func(tx *store.Tx) error {
		if err := tx.PutAdminToken(*t); err != nil {
			return err
		}
		return tx.AddEvent(store.Event{AccountID: accountID, Time: t.Created, Actor: "system", Action: "admin_token.created",
			TargetType: "admin_token", TargetID: t.ID, TargetName: name})
	})
	if err != nil {
		return "", fmt.Errorf("control: admin token: %w", err)
	}
	s.mu.Lock()
	s.tokens[string(t.Hash)] = t
	s.mu.Unlock()
	s.publish(busMsg{Kind: kindTokens})
	return tok, nil
}

// newAdminToken makes a token and returns it with its plaintext
// ("mat_..."), which is not kept.
func newAdminToken(accountID, name string, now time.Time) (*store.AdminToken, string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, "", fmt.Errorf("control: admin token: %w", err)
	}
	tok := "mat_" + idEncoding.EncodeToString(raw[:])
	return &store.AdminToken{ID: newID(), AccountID: accountID, Name: name, Hash: hashSecret(tok), Created: now}, tok, nil
}

// JoinCommand is the line that joins a machine with a join token.
func JoinCommand(token string) string { return "meshd agent --join " + token }

// bootstrapJoin returns the join token of the bootstrap setup key, making
// the key on the account's first bootstrap only, and rewriting the file
// when control's URL or pin changed. When the key no longer works it
// returns why (and keeps the file, with the current URL and pin, since
// `meshd admin --data` reads control's address from it).
func (s *Service) bootstrapJoin(ctx context.Context, a *account, path string) (jointoken.Token, string, error) {
	want := s.joinToken("")
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.a.Bootstrapped {
		k, plain, err := a.createKeyLocked(ctx, "system", &adminv1.CreateSetupKeyRequest{Name: "bootstrap"})
		if err != nil {
			return want, "", fmt.Errorf("control: bootstrap setup key: %w", err)
		}
		// A crash before this commit makes a second key at the next start,
		// the old one staying valid under its name: no key is lost.
		err = a.commit(ctx, audit{actor: "system", action: "account.bootstrapped", targetType: "setup_key",
			targetID: k.ID, targetName: k.Name, detail: "join token in " + path},
			func(tx *store.Tx) error { return tx.SetBootstrapKey(a.id, k.ID) },
			func() { a.a.Bootstrapped, a.a.BootstrapKeyID = true, k.ID },
			netmap.Change{})
		if err != nil {
			return want, "", fmt.Errorf("control: bootstrap: %w", err)
		}
		want.SetupKey = plain
		return want, "", writeSecretFile(path, want.Encode()+"\n")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return want, fmt.Sprintf("%s is not here: the bootstrap setup key is kept only in the data directory "+
			"of the server that made the network (another replica's, or this one's if the file was removed)", path), nil
	} else if err != nil {
		return want, "", fmt.Errorf("control: bootstrap: %w", err)
	}
	t, err := jointoken.Decode(string(b))
	if err != nil {
		return want, fmt.Sprintf("%s is damaged (%v)", path, err), nil
	}
	want.SetupKey = t.SetupKey
	if !t.Equal(want) {
		if err := writeSecretFile(path, want.Encode()+"\n"); err != nil {
			return want, "", err
		}
	}
	k := a.keyHash[string(hashSecret(t.SetupKey))]
	switch {
	case k == nil:
		return want, "the bootstrap setup key was deleted", nil
	case keyState(k, s.now()) != "valid":
		return want, "the bootstrap setup key is " + keyState(k, s.now()), nil
	}
	return want, "", nil
}

// writeIfChanged writes data to path (mode 0600) unless it holds data already.
func writeIfChanged(path, data string) error {
	if b, err := os.ReadFile(path); err == nil && string(b) == data {
		return nil
	}
	return writeSecretFile(path, data)
}

// writeSecretFile writes data to path with mode 0600, atomically.
func writeSecretFile(path, data string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("control: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("control: write %s: %w", path, err)
	}
	if _, err := tmp.WriteString(data); err != nil {
		tmp.Close()
		return fmt.Errorf("control: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("control: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("control: write %s: %w", path, err)
	}
	return nil
}

// Package turncred makes and checks time-limited TURN credentials in the
// TURN REST style (draft-uberti-behave-turn-rest): the username is
// "<expiry unix seconds>:<id>" and the password is
// base64(HMAC-SHA1(secret, username)). Control issues them, the relay checks
// them, and coturn's use-auth-secret understands the same scheme.
package turncred

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrExpired means the credential's time has passed.
	ErrExpired = errors.New("turn credential expired")
	// ErrMalformed means the username is not "<expiry>:<id>".
	ErrMalformed = errors.New("turn credential username malformed")
)

// Credential is a TURN username and password with their expiry.
type Credential struct {
	Username string
	Password string
	Expires  time.Time
}

// Issue returns a credential for id valid until now+ttl.
func Issue(secret []byte, id string, now time.Time, ttl time.Duration) Credential {
	exp := now.Add(ttl).Truncate(time.Second)
	user := strconv.FormatInt(exp.Unix(), 10) + ":" + id
	return Credential{Username: user, Password: Password(secret, user), Expires: exp}
}

// Password returns the password belonging to username.
func Password(secret []byte, username string) string {
	m := hmac.New(sha1.New, secret)
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Check returns the expiry of username, or an error when the username is
// malformed or expired. The password is checked by the TURN server through
// Password (the long-term credential mechanism needs the key, not a compare).
func Check(username string, now time.Time) (time.Time, error) {
	exp, _, err := Parse(username)
	if err != nil {
		return time.Time{}, err
	}
	if !now.Before(exp) {
		return exp, fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	return exp, nil
}

// Parse splits a username into its expiry and id, without judging the
// expiry: an agent uses it to tell which of its credentials is newer.
func Parse(username string) (time.Time, string, error) {
	ts, id, ok := strings.Cut(username, ":")
	if !ok {
		return time.Time{}, "", ErrMalformed
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return time.Unix(sec, 0), id, nil
}

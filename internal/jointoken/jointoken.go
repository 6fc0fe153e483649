// Package jointoken encodes what a new machine needs to join: control's
// URLs, the pin of its certificate and a setup key, in one copy-paste string
// ("meshd1_" + base64url JSON). The server side makes it, the agent reads it.
package jointoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

const prefix = "meshd1_"

// Token is what a join token carries.
type Token struct {
	// ControlURL is the first control replica to try. Agents that know
	// only this field (older binaries) use it alone, so it stays the
	// first URL whatever the list holds.
	ControlURL string `json:"u"`
	// MoreURLs are the other replicas known when the token was printed:
	// a machine joins through any of them when the first is down.
	MoreURLs []string `json:"us,omitempty"`
	Pin      string   `json:"p,omitempty"`
	SetupKey string   `json:"k"`
}

// ErrMalformed means a string is not a join token.
var ErrMalformed = errors.New("join token malformed: copy the whole line that `meshd all` printed")

// New returns a token for urls (the first is tried first; empty and
// repeated URLs are dropped).
func New(urls []string, pin, setupKey string) Token {
	t := Token{Pin: pin, SetupKey: setupKey}
	for _, u := range urls {
		if u == "" || u == t.ControlURL || slices.Contains(t.MoreURLs, u) {
			continue
		}
		if t.ControlURL == "" {
			t.ControlURL = u
		} else {
			t.MoreURLs = append(t.MoreURLs, u)
		}
	}
	return t
}

// URLs returns every control URL of the token, ControlURL first.
func (t Token) URLs() []string {
	if t.ControlURL == "" {
		return slices.Clone(t.MoreURLs)
	}
	return append([]string{t.ControlURL}, t.MoreURLs...)
}

// Equal reports whether t and o carry the same fields.
func (t Token) Equal(o Token) bool {
	return t.ControlURL == o.ControlURL && slices.Equal(t.MoreURLs, o.MoreURLs) && t.Pin == o.Pin && t.SetupKey == o.SetupKey
}

// Encode returns the token as a string.
func (t Token) Encode() string {
	b, _ := json.Marshal(t) // cannot fail: strings only
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Decode parses a token made by Encode.
func Decode(s string) (Token, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), prefix)
	if !ok {
		return Token{}, ErrMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Token{}, fmt.Errorf("%w (%v)", ErrMalformed, err)
	}
	var t Token
	if err := json.Unmarshal(b, &t); err != nil {
		return Token{}, fmt.Errorf("%w (%v)", ErrMalformed, err)
	}
	if t.ControlURL == "" || t.SetupKey == "" {
		return Token{}, fmt.Errorf("%w (no control URL or setup key)", ErrMalformed)
	}
	if slices.Contains(t.MoreURLs, "") {
		return Token{}, fmt.Errorf("%w (an empty control URL)", ErrMalformed)
	}
	return t, nil
}

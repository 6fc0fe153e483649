// Package jointoken encodes what a new machine needs to join: control's URL,
// the pin of its certificate and a setup key, in one copy-paste string
// ("meshd1_" + base64url JSON). The server side makes it, the agent reads it.
package jointoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

const prefix = "meshd1_"

// Token is what a join token carries.
type Token struct {
	ControlURL string `json:"u"`
	Pin        string `json:"p,omitempty"`
	SetupKey   string `json:"k"`
}

// ErrMalformed means a string is not a join token.
var ErrMalformed = errors.New("join token malformed: copy the whole line that `meshd all` printed")

// Encode returns the token as a string.
func (t Token) Encode() string {
	b, _ := json.Marshal(t) // cannot fail: three strings
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
	return t, nil
}

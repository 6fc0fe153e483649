package admin

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"meshd/internal/control"
)

// safe makes text from control printable in a terminal: control
// characters (escape sequences, NUL, CR, tabs that would break the
// columns), bidirectional overrides and invalid UTF-8 are written as Go
// escapes (\x1b, \u202e), so the admin sees that they are there and the
// terminal does not act on them. Peers name themselves, so anything from
// the server may carry them; every printer of text goes through safe. JSON
// output needs nothing: the encoder escapes control characters.
func safe(s string) string {
	if strings.IndexFunc(s, control.UnsafeRune) < 0 && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x80 && control.UnsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case control.UnsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// safeJSON escapes in JSON text what the encoder leaves raw but a terminal
// would act on: C1 controls, bidirectional overrides, line separators.
// Such runes occur only inside strings, where \uXXXX means the same rune,
// so the JSON decodes to the same values.
func safeJSON(b []byte) []byte {
	if !bytes.ContainsFunc(b, func(r rune) bool { return r >= 0x80 && control.UnsafeRune(r) }) {
		return b
	}
	var out bytes.Buffer
	for _, r := range string(b) {
		if r >= 0x80 && control.UnsafeRune(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
			continue
		}
		out.WriteRune(r)
	}
	return out.Bytes()
}

package control

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
)

// Post-quantum modes of an account (docs/post-quantum.md). Off until the
// feature has shipped a release: an account opts in.
var pqModes = []string{"off", "permissive", "strict"}

// pqMode is the mode an account's stored setting means (empty: off).
func pqMode(s string) string {
	if s == "" {
		return "off"
	}
	return s
}

// pqMapMode is what maps say: nothing when off, so that the maps of
// accounts that never opted in stay as they were.
func pqMapMode(s string) string {
	if m := pqMode(s); m != "off" {
		return m
	}
	return ""
}

// checkPostQuantum validates an admin's post-quantum mode.
func checkPostQuantum(s string) (string, error) {
	m := strings.ToLower(strings.TrimSpace(s))
	for _, ok := range pqModes {
		if m == ok {
			return m, nil
		}
	}
	return "", connect.NewError(connect.CodeInvalidArgument,
		fmt.Errorf("post-quantum mode %q: use one of %s", s, strings.Join(pqModes, ", ")))
}

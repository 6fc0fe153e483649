// Package version tells which meshd this is.
package version

import "runtime/debug"

// Version is set at build time with -ldflags "-X meshd/internal/version.Version=v1.2.3".
var Version = "dev"

// String returns the version and, when the binary was built from a git
// checkout, the commit.
func String() string {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}

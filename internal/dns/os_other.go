//go:build !linux

package dns

// resolvedUsable: systemd-resolved exists on Linux only.
func resolvedUsable() (bool, string) {
	return false, "automatic DNS configuration is not supported on this OS yet"
}

// directUsable: resolv.conf is managed on Linux only.
func directUsable() (bool, string) { return false, "resolv.conf is managed on Linux only" }

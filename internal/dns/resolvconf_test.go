package dns

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const origResolv = `# from DHCP
nameserver 192.0.2.53
nameserver 2001:db8::53
search corp.example lab.example
options rotate edns0
`

// directOS is an OS in direct mode on files under a temp directory.
func directOS(t *testing.T, path, backupDir string) *OS {
	t.Helper()
	return NewOS(OSOptions{Iface: "meshd0", ResolvConf: path, BackupDir: backupDir,
		Run: func(context.Context, string, ...string) ([]byte, error) {
			t.Fatal("no command may run in direct mode")
			return nil, nil
		},
		Resolved: func() (bool, string) { return false, "systemd-resolved is not running" },
		Direct:   func() (bool, string) { return true, "" }})
}

func tempResolv(t *testing.T, content string, mode os.FileMode) (path, backupDir string) {
	t.Helper()
	dir := t.TempDir()
	path, backupDir = filepath.Join(dir, "etc", "resolv.conf"), filepath.Join(dir, "state")
	for _, d := range []string{filepath.Dir(path), backupDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if content != "" {
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	return path, backupDir
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var meshServer = netip.MustParseAddr("100.64.0.1")

func TestResolvConfWrittenAndRestoredExactly(t *testing.T) {
	path, state := tempResolv(t, origResolv, 0o640)
	o := directOS(t, path, state)
	ctx := context.Background()
	if err := o.Set(ctx, meshServer, "meshd.internal.", "bravo.meshd.internal"); err != nil {
		t.Fatal(err)
	}
	want := resolvMarker + `
# The original is saved in ` + filepath.Join(state, resolvBackupName) + ` and comes back when the agent stops;
# edit that one, not this.
nameserver 100.64.0.1
nameserver 192.0.2.53
nameserver 2001:db8::53
search meshd.internal corp.example lab.example
options edns0
`
	if got := mustRead(t, path); got != want {
		t.Fatalf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	if o.Mode() != OSResolvConf {
		t.Fatalf("mode %q, want %q", o.Mode(), OSResolvConf)
	}
	if got := mustRead(t, filepath.Join(state, resolvBackupName)); got != origResolv {
		t.Fatalf("backup:\n%s\nwant the original", got)
	}

	// A new domain rewrites the file; the backup stays the original.
	if err := o.Set(ctx, meshServer, "mesh.example", ""); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, path); !strings.Contains(got, "search mesh.example corp.example lab.example\n") {
		t.Fatalf("after a domain change:\n%s", got)
	}
	if got := mustRead(t, filepath.Join(state, resolvBackupName)); got != origResolv {
		t.Fatalf("backup after a second set:\n%s", got)
	}

	if err := o.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, path); got != origResolv {
		t.Fatalf("restored:\n%s\nwant:\n%s", got, origResolv)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Fatalf("restored mode %v, want 0640", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("state dir keeps %v after the restore", entries)
	}
}

// A crash leaves meshd's file and the backup: the next start restores the
// original before anything else, and a set without that recovery keeps the
// backup of the true original.
func TestResolvConfRecoveredAfterACrash(t *testing.T) {
	path, state := tempResolv(t, origResolv, 0o644)
	if err := directOS(t, path, state).Set(context.Background(), meshServer, "meshd.internal", ""); err != nil {
		t.Fatal(err)
	}
	// The process dies here: no Close. A new agent starts on the same
	// state and sets again before any recovery.
	again := directOS(t, path, state)
	if err := again.Set(context.Background(), meshServer, "meshd.internal", ""); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, filepath.Join(state, resolvBackupName)); got != origResolv {
		t.Fatalf("backup after a set over a crashed agent's file:\n%s\nwant the original", got)
	}
	// It dies too. The next start recovers.
	restored, err := RecoverResolvConf(path, state)
	if err != nil || !restored {
		t.Fatalf("recover: %v, %v; want the original restored", restored, err)
	}
	if got := mustRead(t, path); got != origResolv {
		t.Fatalf("recovered:\n%s\nwant:\n%s", got, origResolv)
	}
	if restored, err := RecoverResolvConf(path, state); err != nil || restored {
		t.Fatalf("second recover: %v, %v; want nothing to do", restored, err)
	}
}

// A symlinked resolv.conf (resolvconf, NetworkManager) is replaced by a
// file, its target left alone, and the symlink comes back.
func TestResolvConfSymlinkComesBack(t *testing.T) {
	path, state := tempResolv(t, "", 0)
	target := filepath.Join(filepath.Dir(path), "managed-resolv.conf")
	if err := os.WriteFile(target, []byte(origResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	o := directOS(t, path, state)
	if err := o.Set(context.Background(), meshServer, "meshd.internal", ""); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(path); fi.Mode()&os.ModeSymlink != 0 {
		t.Fatal("resolv.conf is still a symlink: meshd wrote through it")
	}
	if got := mustRead(t, target); got != origResolv {
		t.Fatalf("the symlink's target changed:\n%s", got)
	}
	if got := mustRead(t, path); !strings.Contains(got, "nameserver 192.0.2.53") {
		t.Fatalf("the target's servers are not kept:\n%s", got)
	}
	if err := o.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(path); err != nil || got != target {
		t.Fatalf("after close: link %q, %v; want a symlink to %s", got, err, target)
	}
}

func TestResolvConfAbsentStaysAbsent(t *testing.T) {
	path, state := tempResolv(t, "", 0)
	o := directOS(t, path, state)
	if err := o.Set(context.Background(), meshServer, "meshd.internal", ""); err != nil {
		t.Fatal(err)
	}
	want := "nameserver 100.64.0.1\nsearch meshd.internal\n"
	if got := mustRead(t, path); !strings.HasSuffix(got, want) {
		t.Fatalf("written:\n%s\nwant it to end with\n%s", got, want)
	}
	if err := o.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("resolv.conf exists after close (%v); there was none before", err)
	}
}

// A file someone else wrote while meshd ran is theirs: close keeps it.
func TestResolvConfRewrittenByOthersIsKept(t *testing.T) {
	path, state := tempResolv(t, origResolv, 0o644)
	o := directOS(t, path, state)
	if err := o.Set(context.Background(), meshServer, "meshd.internal", ""); err != nil {
		t.Fatal(err)
	}
	const dhcp = "nameserver 198.51.100.53\n"
	if err := os.WriteFile(path, []byte(dhcp), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, path); got != dhcp {
		t.Fatalf("after close:\n%s\nwant the newer file kept", got)
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("state dir keeps %v", entries)
	}
}

// meshd's file without its backup cannot be undone: Set says so and
// leaves everything as it is.
func TestResolvConfOursWithoutBackupIsRefused(t *testing.T) {
	path, state := tempResolv(t, resolvMarker+"\nnameserver 100.64.0.1\n", 0o644)
	o := directOS(t, path, state)
	err := o.Set(context.Background(), meshServer, "meshd.internal", "bravo.meshd.internal")
	if err == nil || !strings.Contains(err.Error(), "put the right resolv.conf back") || !strings.Contains(err.Error(), "dig @100.64.0.1") {
		t.Fatalf("err = %v; want what to do about it", err)
	}
	if o.Mode() != OSManual {
		t.Fatalf("mode %q", o.Mode())
	}
}

// In another network namespace resolv.conf is the host's: left alone.
func TestResolvConfNotTouchedWhereNotAllowed(t *testing.T) {
	path, state := tempResolv(t, origResolv, 0o644)
	o := NewOS(OSOptions{Iface: "meshd0", ResolvConf: path, BackupDir: state,
		Resolved: func() (bool, string) { return false, "systemd-resolved is not running" },
		Direct:   func() (bool, string) { return false, "another network namespace" }})
	if err := o.Set(context.Background(), meshServer, "meshd.internal", ""); err != nil {
		t.Fatal(err)
	}
	o.Close(context.Background())
	if got := mustRead(t, path); got != origResolv || o.Mode() != OSManual {
		t.Fatalf("mode %q, file:\n%s", o.Mode(), got)
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("state dir has %v", entries)
	}
}

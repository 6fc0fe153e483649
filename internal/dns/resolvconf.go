package dns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Direct mode: where systemd-resolved is absent, the agent writes
// resolv.conf itself, as Tailscale's "direct" mode does. The mesh resolver
// comes first, the original nameservers after it (the resolver forwards
// other names to them, and they still answer, slowly, if the agent died),
// and the mesh domain heads the search list so that short names work. The
// original file is saved in the agent's state directory first (its bytes,
// mode, or the symlink it was) and put back exactly when the agent stops,
// or at the next start after a crash.

// resolvMarker starts every resolv.conf meshd writes: how meshd (and a
// reader) knows the file is its own.
const resolvMarker = "# Written by meshd: mesh DNS without systemd-resolved."

// Names of the backup in the state directory: the original file (or
// symlink), or a marker saying there was no file.
const (
	resolvBackupName = "resolv.conf.meshd-backup"
	resolvAbsentName = "resolv.conf.meshd-absent"
)

// DefaultResolvConf is the file direct mode manages.
const DefaultResolvConf = "/etc/resolv.conf"

// resolvConf manages one resolv.conf file with its backup.
type resolvConf struct {
	path   string
	backup string
	absent string
}

func newResolvConf(path, backupDir string) resolvConf {
	return resolvConf{path: path, backup: filepath.Join(backupDir, resolvBackupName),
		absent: filepath.Join(backupDir, resolvAbsentName)}
}

// ours reports whether the file is one meshd wrote.
func (r resolvConf) ours() (bool, error) {
	b, err := os.ReadFile(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("dns: read %s: %w", r.path, err)
	}
	return bytes.HasPrefix(b, []byte(resolvMarker)), nil
}

// hasBackup reports whether an original is saved.
func (r resolvConf) hasBackup() bool {
	_, e1 := os.Lstat(r.backup)
	_, e2 := os.Lstat(r.absent)
	return e1 == nil || e2 == nil
}

// original returns the saved original's text ("" when there was no file).
func (r resolvConf) original() (string, error) {
	if _, err := os.Lstat(r.absent); err == nil {
		return "", nil
	}
	b, err := os.ReadFile(r.backup) // through a saved symlink: what it points at now
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("dns: read the saved resolv.conf %s: %w", r.backup, err)
	}
	return string(b), nil
}

// set makes the file point at server for domain, saving the original
// first unless it is saved already (a file of ours with a saved original
// is what a crash leaves: it is simply rewritten).
func (r resolvConf) set(server netip.Addr, domain string) error {
	ours, err := r.ours()
	if err != nil {
		return err
	}
	switch {
	case ours && !r.hasBackup():
		return fmt.Errorf("dns: %s was written by meshd but its original is not in %s (was the state directory replaced?); "+
			"put the right resolv.conf back, then restart the agent", r.path, filepath.Dir(r.backup))
	case !ours:
		if err := r.save(); err != nil {
			return err
		}
	}
	orig, err := r.original()
	if err != nil {
		return err
	}
	return writeAtomic(r.path, []byte(resolvText(orig, server, domain, r.backup)), 0o644)
}

// save copies the file as it is (bytes and mode, or the symlink) into the
// backup, replacing an older backup.
func (r resolvConf) save() error {
	_ = os.Remove(r.backup)
	_ = os.Remove(r.absent)
	fi, err := os.Lstat(r.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = writeAtomic(r.absent, nil, 0o600)
	case err != nil:
	case fi.Mode()&fs.ModeSymlink != 0:
		var target string
		if target, err = os.Readlink(r.path); err == nil {
			err = os.Symlink(target, r.backup)
		}
	default:
		var b []byte
		if b, err = os.ReadFile(r.path); err == nil {
			err = writeAtomic(r.backup, b, fi.Mode().Perm())
		}
	}
	if err != nil {
		return fmt.Errorf("dns: save %s before changing it: %w", r.path, err)
	}
	return syncDir(filepath.Dir(r.backup))
}

// restore puts the saved original back if the file is still ours (if
// someone else rewrote it since, theirs stays), then drops the backup. It
// reports whether it put the original back.
func (r resolvConf) restore() (bool, error) {
	if !r.hasBackup() {
		return false, nil
	}
	ours, err := r.ours()
	if err != nil {
		return false, err
	}
	if ours {
		if err := r.putBack(); err != nil {
			return false, err
		}
	}
	if err := errors.Join(removeIfExists(r.backup), removeIfExists(r.absent)); err != nil {
		return ours, fmt.Errorf("dns: remove the saved resolv.conf: %w", err)
	}
	return ours, nil
}

func (r resolvConf) putBack() error {
	var err error
	if _, e := os.Lstat(r.absent); e == nil {
		err = removeIfExists(r.path)
	} else if fi, e := os.Lstat(r.backup); e != nil {
		err = e
	} else if fi.Mode()&fs.ModeSymlink != 0 {
		var target string
		if target, err = os.Readlink(r.backup); err == nil {
			tmp := r.path + ".meshd-tmp"
			_ = os.Remove(tmp)
			if err = os.Symlink(target, tmp); err == nil {
				err = os.Rename(tmp, r.path)
			}
		}
	} else {
		var b []byte
		if b, err = os.ReadFile(r.backup); err == nil {
			err = writeAtomic(r.path, b, fi.Mode().Perm())
		}
	}
	if err != nil {
		return fmt.Errorf("dns: restore %s from %s: %w (copy it back by hand)", r.path, r.backup, err)
	}
	return nil
}

// RecoverResolvConf puts back the resolv.conf that an agent which did not
// stop cleanly left in place: when backupDir holds a saved original and
// path is still meshd's, the original returns. Call it once at start,
// before anything else touches DNS; it reports whether it restored.
func RecoverResolvConf(path, backupDir string) (bool, error) {
	return newResolvConf(path, backupDir).restore()
}

// resolvText is the resolv.conf meshd writes: the mesh resolver, then the
// original's nameservers, the mesh domain before the original's search
// domains, then the original's other lines ("rotate" dropped: it would
// skip the mesh resolver for every other query).
func resolvText(orig string, server netip.Addr, domain, backup string) string {
	var servers, search, rest []string
	sc := bufio.NewScanner(strings.NewReader(orig))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case len(f) == 0 || line[0] == '#' || line[0] == ';':
		case f[0] == "nameserver" && len(f) > 1:
			if f[1] != server.String() {
				servers = append(servers, f[1])
			}
		case f[0] == "search" || f[0] == "domain":
			search = f[1:] // the last one wins, as in the C library
		case f[0] == "options":
			opts := slices.DeleteFunc(f[1:], func(o string) bool { return o == "rotate" })
			if len(opts) > 0 {
				rest = append(rest, "options "+strings.Join(opts, " "))
			}
		default:
			rest = append(rest, line)
		}
	}
	search = slices.DeleteFunc(search, func(d string) bool { return strings.TrimSuffix(d, ".") == domain })
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n# The original is saved in %s and comes back when the agent stops;\n# edit that one, not this.\n", resolvMarker, backup)
	fmt.Fprintf(&b, "nameserver %s\n", server)
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	fmt.Fprintf(&b, "search %s\n", strings.Join(append([]string{domain}, search...), " "))
	for _, l := range rest {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// writeAtomic writes data to path through a temporary file in the same
// directory and a rename, so that readers see the old file or the new one,
// never half of one, and a symlink at path is replaced, not written
// through.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".meshd-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	_ = d.Sync() // not every file system syncs directories
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

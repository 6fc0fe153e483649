//go:build !linux

package fwmark

import "syscall"

// Control does nothing: only Linux has socket marks.
func Control(_, _ string, _ syscall.RawConn) error { return nil }

// Get returns 0: only Linux has socket marks.
func Get(syscall.Conn) uint32 { return 0 }

// Set does nothing: only Linux has socket marks.
func Set(syscall.Conn) {}

//go:build !unix

package server

func fdLimit() (uint64, bool) { return 0, false }

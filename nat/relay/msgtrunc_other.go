//go:build !linux

package relay

const msgTrunc = 0x20 // MSG_TRUNC on the BSDs and Linux

//go:build !linux

package peerconn

const msgTrunc = 0

// batchReads is off: x/net's ReadBatch reads one datagram at a time here,
// and on Windows it is not implemented (it would end pion's TURN reader).
var batchReads = false

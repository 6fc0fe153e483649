package peerconn

import "golang.org/x/sys/unix"

const msgTrunc = unix.MSG_TRUNC

// batchReads: ReadFrom reads with recvmmsg (x/net's ReadBatch; on other
// systems it reads one datagram, or on Windows nothing at all). A variable
// so that tests run the other systems' path here too.
var batchReads = true

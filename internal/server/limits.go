package server

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"connectrpc.com/connect"
)

// MaxRequestBody bounds the body of a unary request as it arrives on the
// wire, whatever its handler allows per message: Connect reads a too-large
// message to its end to report its size, and without this bound that read
// is as long as the client cares to send.
const MaxRequestBody = 4 << 20

// limitBody caps the body of every request except a streaming RPC's. A
// streaming request body is a sequence of messages for as long as the stream
// lives (signal streams for hours); each message is bounded by its handler's
// read limit (ReadLimit), the body as a whole cannot be.
func limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && !isStreamingRPC(r.Header.Get("Content-Type")) {
			r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBody)
		}
		h.ServeHTTP(w, r)
	})
}

// isStreamingRPC reports whether a content type frames a body as a sequence
// of length-prefixed messages: the Connect streaming protocol, gRPC and
// gRPC-Web.
func isStreamingRPC(contentType string) bool {
	return strings.HasPrefix(contentType, "application/connect+") ||
		strings.HasPrefix(contentType, "application/grpc")
}

// ReadLimit returns the handler options that bound one request message to
// maxBytes, both as sent and after gzip: connect.WithReadMaxBytes and a
// gzip decompressor that fails as soon as a message inflates past the limit.
// Connect's own limit already stops buffering there, but then inflates the
// rest of the message to report its size; a few hundred KiB of gzip can
// take seconds of CPU that way. newCompressor makes the response
// compressor (nil: gzip at its default level).
func ReadLimit(maxBytes int, newCompressor func() connect.Compressor) connect.HandlerOption {
	if newCompressor == nil {
		newCompressor = func() connect.Compressor { return gzip.NewWriter(io.Discard) }
	}
	// Connect reads one byte past the limit to see that a message is too
	// large; the decompressor lets it, then refuses to read further.
	allow := int64(maxBytes) + 1
	return connect.WithHandlerOptions(
		connect.WithReadMaxBytes(maxBytes),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &cappedGzip{max: allow} },
			newCompressor))
}

// errInflated ends a gzip message that inflates past its handler's limit.
var errInflated = errors.New("gzip message inflates past the size this service accepts")

// cappedGzip is a gzip decompressor that yields at most max bytes per
// message and then fails.
type cappedGzip struct {
	zr   gzip.Reader
	max  int64
	left int64
}

func (c *cappedGzip) Reset(r io.Reader) error {
	c.left = c.max
	if err := c.zr.Reset(r); err != nil {
		return fmt.Errorf("server: gzip header: %w", err)
	}
	return nil
}

func (c *cappedGzip) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errInflated
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.zr.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cappedGzip) Close() error { return c.zr.Close() }

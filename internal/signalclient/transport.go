package signalclient

import (
	"encoding/binary"
	"io"
	"net/http"
)

// wholeMessages wraps an HTTP transport so that each Connect message of a
// request stream goes out as one HTTP/2 DATA frame. Connect writes a
// message to the request body in two writes (its 5-byte prefix, then the
// message), and Go's HTTP/2 transport sends, and flushes, a frame for every
// read of the body: two frames and two socket writes per message, and two
// reads at the server. Reading whole messages halves that.
type wholeMessages struct{ base http.RoundTripper }

func (t wholeMessages) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return t.base.RoundTrip(r)
	}
	r2 := new(http.Request)
	*r2 = *r
	r2.Body = &messageReader{r: r.Body}
	return t.base.RoundTrip(r2)
}

func (t wholeMessages) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// messageReader returns Connect-enveloped messages (flags, 4-byte length,
// data) one whole message per Read when the buffer is large enough.
type messageReader struct {
	r    io.ReadCloser
	rest int    // bytes of the current message still to read from r
	pend []byte // bytes read from r but not returned yet
}

func (m *messageReader) Read(p []byte) (int, error) {
	switch {
	case len(p) == 0:
		return 0, nil
	case len(m.pend) > 0:
		n := copy(p, m.pend)
		m.pend = m.pend[n:]
		return n, nil
	case m.rest > 0:
		n, err := m.r.Read(p[:min(len(p), m.rest)])
		m.rest -= n
		return n, err
	}
	// At a message boundary: the prefix, then as much of the message as fits.
	var hdr [5]byte
	if _, err := io.ReadFull(m.r, hdr[:]); err != nil {
		return 0, err // io.EOF between messages; ErrUnexpectedEOF if cut off
	}
	m.rest = int(binary.BigEndian.Uint32(hdr[1:]))
	n := copy(p, hdr[:])
	if n < len(hdr) {
		m.pend = append(m.pend[:0], hdr[n:]...)
		return n, nil
	}
	k, err := io.ReadFull(m.r, p[n:n+min(m.rest, len(p)-n)])
	m.rest -= k
	return n + k, err
}

func (m *messageReader) Close() error { return m.r.Close() }

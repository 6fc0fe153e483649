package signalclient

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

// connectWrites writes messages the way Connect does: prefix, then data,
// in two writes each.
func connectWrites(w *io.PipeWriter, msgs [][]byte) {
	for _, m := range msgs {
		var hdr [5]byte
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(m)))
		if _, err := w.Write(hdr[:]); err != nil {
			return
		}
		if len(m) > 0 {
			if _, err := w.Write(m); err != nil {
				return
			}
		}
	}
	w.Close()
}

func TestMessageReaderReturnsWholeMessages(t *testing.T) {
	msgs := [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte("x"), 300), []byte("end")}
	var want bytes.Buffer
	for _, m := range msgs {
		var hdr [5]byte
		binary.BigEndian.PutUint32(hdr[1:], uint32(len(m)))
		want.Write(hdr[:])
		want.Write(m)
	}
	for _, bufLen := range []int{1, 3, 5, 6, 64, 1 << 14} {
		pr, pw := io.Pipe()
		go connectWrites(pw, msgs)
		r := &messageReader{r: pr}
		var got bytes.Buffer
		buf := make([]byte, bufLen)
		reads := 0
		for range 10_000 {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if n > 0 {
				reads++
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("buffer %d: %v", bufLen, err)
			}
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("buffer %d: stream differs:\n got %q\nwant %q", bufLen, got.Bytes(), want.Bytes())
		}
		if bufLen == 1<<14 && reads != len(msgs) {
			t.Fatalf("with room to spare, %d reads for %d messages", reads, len(msgs))
		}
	}
}

package server

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap/zaptest"
)

// TestUnaryBodiesAreCapped: a unary request's body stops at MaxRequestBody
// however the handler reads it; a streaming RPC's body does not.
func TestUnaryBodiesAreCapped(t *testing.T) {
	s := New(zaptest.NewLogger(t), nil)
	s.Handle("/x", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		if err != nil || n != MaxRequestBody+1 {
			t.Errorf("read %d bytes, %v", n, err)
		}
	}))
	for _, tt := range []struct {
		ctype string
		want  int
	}{
		{"application/proto", http.StatusRequestEntityTooLarge},
		{"application/json", http.StatusRequestEntityTooLarge},
		{"application/connect+proto", http.StatusOK},
		{"application/grpc", http.StatusOK},
	} {
		req := httptest.NewRequest(http.MethodPost, "/x", bytes.NewReader(make([]byte, MaxRequestBody+1)))
		req.Header.Set("Content-Type", tt.ctype)
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("%s: status %d, want %d", tt.ctype, rec.Code, tt.want)
		}
	}
}

// TestCappedGzipStopsInflating: the decompressor yields its limit and then
// fails at once instead of inflating the rest of a bomb.
func TestCappedGzipStopsInflating(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zeros := make([]byte, 1<<20)
	for range 64 {
		_, _ = zw.Write(zeros)
	}
	_ = zw.Close()
	c := &cappedGzip{max: 1000}
	if err := c.Reset(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c)
	if !errors.Is(err, errInflated) || n != 1000 {
		t.Fatalf("read %d bytes, %v; want 1000 bytes, then %v", n, err, errInflated)
	}
	// Reused for a small message, it reads it whole.
	buf.Reset()
	zw.Reset(&buf)
	_, _ = zw.Write([]byte("hello"))
	_ = zw.Close()
	if err := c.Reset(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || string(b) != "hello" {
		t.Fatalf("got %q, %v", b, err)
	}
}

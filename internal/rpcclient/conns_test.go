package rpcclient

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCloseAllClosesOpenConnections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	tr := &http.Transport{}
	cs := Track(tr)
	c := &http.Client{Transport: tr}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cs.mu.Lock()
	n := len(cs.set)
	cs.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d tracked connections after one request, want 1", n)
	}
	cs.CloseAll()
	cs.mu.Lock()
	n = len(cs.set)
	cs.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d connections left after CloseAll", n)
	}
	// The pooled connection was closed, so the next request dials anew
	// (and the new connection is tracked).
	resp, err = c.Get(srv.URL)
	if err != nil {
		t.Fatalf("request after CloseAll: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	cs.mu.Lock()
	n = len(cs.set)
	cs.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d tracked connections after a new request, want 1", n)
	}
}

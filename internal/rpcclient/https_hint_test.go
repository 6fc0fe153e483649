package rpcclient

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHTTPURLAgainstTLSServer: a TLS server that closes the connection on
// h2c's preface (net/http's does) gives an error saying to use https://,
// not "unexpected EOF".
func TestHTTPURLAgainstTLSServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	hc, err := New("http://"+addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.CloseIdleConnections()
	_, err = hc.Get("http://" + addr + "/x")
	if !errors.Is(err, ErrSpeaksHTTPS) || !strings.Contains(err.Error(), "https://"+addr) {
		t.Fatalf("got %v; want it to say to use https://%s", err, addr)
	}
}

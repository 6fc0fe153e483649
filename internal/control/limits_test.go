package control_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"meshd/api/admin/v1/adminv1connect"
	"meshd/api/control/v1/controlv1connect"
	"meshd/internal/control/controltest"
)

// bombBytes is how far the test's gzip bomb inflates; it is a few hundred
// KiB on the wire.
const bombBytes = 256 << 20

// gzipBomb returns bombBytes of zeros, gzipped.
func gzipBomb(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range bombBytes / len(zeros) {
		if _, err := zw.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// allocDuring runs fn and returns the bytes allocated meanwhile (by the
// whole process: the harness is idle) and the highest heap in use seen.
func allocDuring(fn func()) (total, peak uint64) {
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	peak = before.HeapAlloc
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		}
	}()
	fn()
	close(done)
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc, max(peak, after.HeapAlloc) - before.HeapAlloc
}

// TestGzipBombIsRefusedCheaply sends a gzip bomb to Login, to Sync (a
// compressed stream message) and to admin methods with and without a token:
// each gets a clear error, and the server allocates a few MiB at most,
// not the bomb's inflated size.
func TestGzipBombIsRefusedCheaply(t *testing.T) {
	h := controltest.NewHarness(t, 0)
	bomb := gzipBomb(t)
	t.Logf("bomb: %d KiB inflating to %d MiB", len(bomb)>>10, bombBytes>>20)

	envelope := make([]byte, 5, 5+len(bomb))
	envelope[0] = 1 // compressed
	binary.BigEndian.PutUint32(envelope[1:], uint32(len(bomb)))
	envelope = append(envelope, bomb...)

	for _, tt := range []struct {
		name      string
		procedure string
		token     string
		stream    bool
		want      string // Connect error code
	}{
		{"login", controlv1connect.ControlServiceLoginProcedure, "", false, "resource_exhausted"},
		{"sync", controlv1connect.ControlServiceSyncProcedure, "", true, "resource_exhausted"},
		{"admin without token", adminv1connect.AdminServiceCreateGroupProcedure, "", false, "unauthenticated"},
		{"admin with a wrong token", adminv1connect.AdminServiceListPeersProcedure, "nope", false, "unauthenticated"},
		{"admin with its token", adminv1connect.AdminServiceCreateGroupProcedure, h.Boot.AdminToken, false, "resource_exhausted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			body, ctype := bomb, "application/proto"
			if tt.stream {
				body, ctype = envelope, "application/connect+proto"
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL+tt.procedure, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", ctype)
			if tt.stream {
				req.Header.Set("Connect-Content-Encoding", "gzip")
			} else {
				req.Header.Set("Content-Encoding", "gzip")
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			var reply string
			total, peak := allocDuring(func() {
				resp, err := h.HTTPClient().Do(req)
				if err != nil {
					t.Errorf("request: %v", err)
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				reply = resp.Status + " " + string(b)
			})
			t.Logf("%s: allocated %d KiB, peak heap +%d KiB: %s", tt.name, total>>10, peak>>10, reply)
			if !strings.Contains(reply, `"code":"`+tt.want+`"`) {
				t.Errorf("reply %q, want Connect code %s", reply, tt.want)
			}
			if total > 16<<20 {
				t.Errorf("refusing the bomb allocated %d MiB; want a few MiB at most", total>>20)
			}
		})
	}
}

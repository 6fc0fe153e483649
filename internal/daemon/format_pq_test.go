package daemon

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// A peer with a post-quantum key says so in JSON and in the table, with
// when the key last rotated.
func TestStatusShowsPostQuantum(t *testing.T) {
	r := sample()
	r.Peers[0].PostQuantum = true
	r.Peers[0].PostQuantumRotated = timestamppb.New(hs.Add(-90 * time.Second))
	var js bytes.Buffer
	if err := WriteJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"post_quantum": true`, `"post_quantum_rotated": "2030-01-02T03:02:35Z"`, `"post_quantum": false`} {
		if !strings.Contains(js.String(), want) {
			t.Errorf("JSON lacks %s:\n%s", want, js.String())
		}
	}
	var tb bytes.Buffer
	if err := WriteTable(&tb, r, hs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "post-quantum pre-shared keys:\n  beta: post_quantum: true, key rotated 1m30s ago\n") {
		t.Errorf("table:\n%s", tb.String())
	}
}

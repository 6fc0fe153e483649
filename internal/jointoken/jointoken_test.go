package jointoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, in := range []Token{
		{ControlURL: "https://198.51.100.1:33073", Pin: "sha256:ab", SetupKey: "K-123"},
		New([]string{"https://a:1", "", "https://b:2", "https://a:1", "https://c:3"}, "sha256:ab", "K"),
	} {
		out, err := Decode(" " + in.Encode() + "\n")
		if err != nil || !out.Equal(in) {
			t.Fatalf("Decode(Encode) = %+v, %v, want %+v", out, err, in)
		}
	}
	in := Token{ControlURL: "https://198.51.100.1:33073", Pin: "sha256:ab", SetupKey: "K-123"}
	for _, bad := range []string{"", "meshd1_", "meshd1_!!!", "x" + in.Encode(), prefix + "e30",
		Token{ControlURL: "https://a:1", MoreURLs: []string{""}, SetupKey: "K"}.Encode()} {
		if _, err := Decode(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q) err = %v, want ErrMalformed", bad, err)
		}
	}
}

// A token with several URLs keeps the first in "u", where agents that
// predate the list look; tokens without the list still decode.
func TestSeveralURLsStayReadable(t *testing.T) {
	tok := New([]string{"https://a:1", "https://b:2", "https://c:3"}, "sha256:ab", "K")
	if got := tok.URLs(); !slices.Equal(got, []string{"https://a:1", "https://b:2", "https://c:3"}) {
		t.Fatalf("URLs = %v", got)
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok.Encode()[len(prefix):])
	if err != nil {
		t.Fatal(err)
	}
	// What a binary that knows only u, p and k reads.
	var old struct {
		U string `json:"u"`
		P string `json:"p"`
		K string `json:"k"`
	}
	if err := json.Unmarshal(raw, &old); err != nil || old.U != "https://a:1" || old.K != "K" || old.P != "sha256:ab" {
		t.Fatalf("an old reader gets %+v, %v", old, err)
	}
	// A token an old binary printed.
	oldTok := prefix + base64.RawURLEncoding.EncodeToString([]byte(`{"u":"https://a:1","p":"sha256:ab","k":"K"}`))
	got, err := Decode(oldTok)
	if err != nil || !slices.Equal(got.URLs(), []string{"https://a:1"}) {
		t.Fatalf("old token: %+v, %v", got, err)
	}
}

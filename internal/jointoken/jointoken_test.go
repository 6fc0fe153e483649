package jointoken

import (
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := Token{ControlURL: "https://198.51.100.1:33073", Pin: "sha256:ab", SetupKey: "K-123"}
	out, err := Decode(" " + in.Encode() + "\n")
	if err != nil || out != in {
		t.Fatalf("Decode(Encode) = %+v, %v", out, err)
	}
	for _, bad := range []string{"", "meshd1_", "meshd1_!!!", "x" + in.Encode(), prefix + "e30"} {
		if _, err := Decode(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q) err = %v, want ErrMalformed", bad, err)
		}
	}
}

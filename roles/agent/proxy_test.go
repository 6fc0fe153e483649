package agent

import (
	"strings"
	"testing"

	"meshd/internal/proxy"
)

func TestProxyFlags(t *testing.T) {
	ns := []string{"--control", "https://c:1", "--setup-key", "K", "--wg-mode", "netstack"}
	o, _, err := agentOptions(ctxFor(t, append(ns, "--socks5", "1080", "--http-proxy", "0.0.0.0:3128",
		"--forward", "8080=80", "--forward", "2222=[::1]:22")...))
	if err != nil {
		t.Fatal(err)
	}
	c := ctxFor(t, append(ns, "--socks5", "1080", "--http-proxy", "0.0.0.0:3128", "--forward", "8080=80", "--forward", "2222=[::1]:22")...)
	pl, err := proxyOptions(c, &o)
	if err != nil {
		t.Fatal(err)
	}
	if pl.socks5 != "127.0.0.1:1080" || pl.http != "0.0.0.0:3128" {
		t.Errorf("listen %+v", pl)
	}
	want := []proxy.Forward{{Port: 8080, Local: "127.0.0.1:80"}, {Port: 2222, Local: "[::1]:22"}}
	if len(o.Forwards) != 2 || o.Forwards[0] != want[0] || o.Forwards[1] != want[1] {
		t.Errorf("forwards %v, want %v", o.Forwards, want)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--control", "https://c:1", "--setup-key", "K", "--socks5", "1080"}, "--socks5 needs --wg-mode netstack"},
		{[]string{"--control", "https://c:1", "--setup-key", "K", "--wg-mode", "userspace", "--forward", "80=80"}, "--forward needs --wg-mode netstack"},
		{append(ns, "--forward", "53=5353"), "mesh resolver"},
		{append(ns, "--forward", "80=80", "--forward", "80=81"), "forwarded twice"},
		{append(ns, "--forward", "80"), "PORT=LOCAL"},
		{append(ns, "--socks5", "example.com:1080"), "--socks5"},
	} {
		c := ctxFor(t, tc.args...)
		o, _, err := agentOptions(c)
		if err == nil {
			_, err = proxyOptions(c, &o)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	c = ctxFor(t, append(ns, "--dns=false", "--forward", "53=5353")...)
	if o, _, err = agentOptions(c); err == nil {
		_, err = proxyOptions(c, &o)
	}
	if err != nil {
		t.Errorf("--forward 53 with --dns=false: %v", err)
	}
}

package dashboard_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"meshd/internal/control/controltest"
)

// The live stream sends the peers table again when a peer joins, and says
// when the session is gone.
func TestLivePeers(t *testing.T) {
	e := newEnv(t, 1)
	c := e.client(t)
	c.Timeout = 0 // a stream; the context bounds it
	e.signIn(t, c, e.h.Boot.AdminToken)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/live/peers", nil)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	events := make(chan [2]string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(nil, 1<<20)
		var name string
		var data strings.Builder
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data.WriteString(strings.TrimPrefix(line, "data: ") + "\n")
			case line == "":
				events <- [2]string{name, data.String()}
				name = ""
				data.Reset()
			}
		}
	}()
	next := func(what string) [2]string {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended waiting for %s", what)
			}
			return ev
		case <-ctx.Done():
			t.Fatalf("no event: %s", what)
		}
		return [2]string{}
	}
	first := next("the first table")
	if first[0] != "peers" || !strings.Contains(first[1], `data-peer="`+e.h.Agents[0].Name+`"`) {
		t.Fatalf("first event: %v", first)
	}
	e.h.AddAgent(controltest.AgentOptions{Hostname: "newcomer"})
	for i := 0; ; i++ {
		ev := next("the newcomer")
		if ev[0] == "peers" && strings.Contains(ev[1], `data-peer="newcomer"`) {
			break
		}
		if i > 10 {
			t.Fatal("the newcomer never showed")
		}
	}
	e.clock.Advance(48 * time.Hour)
	for i := 0; ; i++ {
		if ev := next("signedout"); ev[0] == "signedout" {
			break
		}
		if i > 10 {
			t.Fatal("no signedout event after the session ended")
		}
	}
}

package signalclient_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/zap/zaptest"

	signalv1 "meshd/api/signal/v1"
	"meshd/api/signal/v1/signalv1connect"
	"meshd/internal/keys"
	"meshd/internal/signalclient"
)

// refusingServer refuses every stream at once, before reading a message.
type refusingServer struct{}

func (refusingServer) Connect(context.Context, *connect.BidiStream[signalv1.ClientMessage, signalv1.ServerMessage]) error {
	return connect.NewError(connect.CodePermissionDenied, errors.New("registration refused: key unknown to control"))
}

// When signal refuses the stream before the hello is written, the error is
// the server's, not "write envelope: EOF".
func TestRefusalIsTheServersError(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(signalv1connect.NewSignalServiceHandler(refusingServer{}))
	hs := httptest.NewUnstartedServer(mux)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	hs.Config.Protocols = p
	hs.Start()
	t.Cleanup(hs.Close)

	priv, _ := keys.Generate()
	c, err := signalclient.New(signalclient.Options{URL: hs.URL, Private: priv, Log: zaptest.NewLogger(t),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for c.State().LastError == nil {
		if time.Now().After(deadline) {
			t.Fatal("no error from a refusing server")
		}
		time.Sleep(5 * time.Millisecond) // polling the client's state, bounded by the deadline
	}
	msg := c.State().LastError.Error()
	if strings.Contains(msg, "EOF") || !strings.Contains(msg, "key unknown to control") {
		t.Fatalf("error %q: want the server's reason", msg)
	}
}

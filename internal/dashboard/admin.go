package dashboard

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"connectrpc.com/connect"

	"meshd/api/admin/v1/adminv1connect"
)

// inProcess is an http.RoundTripper that serves requests with a handler in
// this process: the dashboard reaches the admin API without a socket, yet
// through all of its HTTP layers (token check included).
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	w := &recorder{header: http.Header{}, status: http.StatusOK}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	r.RequestURI = r.URL.RequestURI()
	t.h.ServeHTTP(w, r)
	return &http.Response{StatusCode: w.status, Status: http.StatusText(w.status), Header: w.header,
		Body: io.NopCloser(&w.body), ContentLength: int64(w.body.Len()), Request: r,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}, nil
}

// recorder collects a unary response.
type recorder struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }
func (w *recorder) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
}
func (w *recorder) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// newAdminClient returns an admin client over h.
func newAdminClient(h http.Handler) adminv1connect.AdminServiceClient {
	return adminv1connect.NewAdminServiceClient(&http.Client{Transport: inProcess{h}}, "http://control.in-process")
}

// call runs one admin call with the session's token.
func call[Req, Res any](ctx context.Context, token string, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), m *Req) (*Res, error) {
	req := connect.NewRequest(m)
	req.Header().Set("Authorization", "Bearer "+token)
	res, err := fn(ctx, req)
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

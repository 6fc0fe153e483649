package dashboard

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"time"

	adminv1 "meshd/api/admin/v1"
)

// livePeers streams the peers table body as server-sent events ("peers")
// whenever it changes, so that the page follows peers coming and going
// without a reload. Each tick lists the peers through the admin API with
// the session's token, like the page itself; the stream ends with the
// session.
func (d *Dashboard) livePeers(w http.ResponseWriter, r *http.Request, s *session) error {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return nil
	}
	if !d.sessions.addLive(s, 1) {
		http.Error(w, "too many live views open: close some tabs", http.StatusTooManyRequests)
		return nil
	}
	defer d.sessions.addLive(s, -1)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	ctx := r.Context()
	tick := time.NewTicker(d.opts.LiveInterval)
	defer tick.Stop()
	var last []byte
	for {
		if !d.sessions.alive(s) {
			fmt.Fprint(w, "event: signedout\ndata: \n\n")
			fl.Flush()
			return nil
		}
		res, err := call(ctx, s.token, d.admin.ListPeers, &adminv1.ListPeersRequest{})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprint(w, "event: signedout\ndata: \n\n")
			fl.Flush()
			return nil
		}
		var buf bytes.Buffer
		if err := d.pages["peers"].ExecuteTemplate(&buf, "peer-rows", peersData{res.Peers}); err != nil {
			return err
		}
		if !bytes.Equal(buf.Bytes(), last) {
			last = buf.Bytes()
			var ev strings.Builder
			ev.WriteString("event: peers\n")
			for _, line := range strings.Split(buf.String(), "\n") {
				ev.WriteString("data: " + line + "\n")
			}
			ev.WriteString("\n")
			if _, err := w.Write([]byte(ev.String())); err != nil {
				return nil
			}
			fl.Flush()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

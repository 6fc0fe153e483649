package admin

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
	"meshd/internal/cliutil"
)

// serverCmd is `meshd admin server status`: how the server is doing.
func serverCmd() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "the server itself: peers online, signal and relay counters",
		Subcommands: []*cli.Command{
			{Name: "status", Usage: "show the server's status", Action: run(func(s *session) error {
				r, err := s.api.GetServerStatus(s.ctx, connect.NewRequest(&adminv1.GetServerStatusRequest{}))
				if err != nil {
					return err
				}
				st := r.Msg
				if s.json {
					return s.printJSON(st)
				}
				pairs := []string{"version", st.Version, "started", when(st.Started),
					"peers", fmt.Sprintf("%d (%d online)", st.Peers, st.PeersOnline)}
				if st.StoreAvailable {
					pairs = append(pairs, "store", "available")
				} else if st.ReplicaId != "" {
					pairs = append(pairs, "store", fmt.Sprintf("UNAVAILABLE since %s: %s; this replica serves its streams "+
						"from memory and refuses changes until the database is back", when(st.StoreDownSince), st.StoreError))
				}
				for _, rp := range st.Replicas {
					this := ""
					if rp.Id == st.ReplicaId {
						this = " (this one)"
					}
					pairs = append(pairs, "replica", fmt.Sprintf("%s %s, %s, started %s, seen %s%s",
						rp.Id, rp.PublicUrl, rp.Version, when(rp.Started), when(rp.LastSeen), this))
				}
				if sg := st.Signal; sg != nil {
					pairs = append(pairs, "signal", fmt.Sprintf("%d streams, %d registrations, %d forwarded, %d to offline peers, %d refused",
						sg.Streams, sg.Registered, sg.Forwarded, sg.NotConnected, sg.Refused))
				} else {
					pairs = append(pairs, "signal", "not in this process")
				}
				if rl := st.Relay; rl != nil {
					pairs = append(pairs, "relay", fmt.Sprintf("%d allocations (%d since start, %d refused), %s to peers, %s from peers",
						rl.Allocations, rl.AllocationsTotal, rl.Refused, cliutil.Bytes(int64(rl.BytesToPeers)), cliutil.Bytes(int64(rl.BytesFromPeers))),
						"relay urls", strings.Join(rl.Urls, " "))
				} else {
					pairs = append(pairs, "relay", "not in this process")
				}
				return details(s.out, pairs...)
			})},
		},
	}
}

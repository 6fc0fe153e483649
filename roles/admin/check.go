package admin

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
)

// checkCmd is `meshd admin policies check SOURCE DESTINATION`: the same
// answer as the dashboard's "Can A reach B?", from the rules the agents
// enforce.
func checkCmd() *cli.Command {
	return &cli.Command{Name: "check", Usage: "may peer SOURCE open a connection to peer DESTINATION? (from the rules agents enforce)",
		ArgsUsage: "SOURCE DESTINATION",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "protocol", Value: "tcp", Usage: "tcp, udp or icmp"},
			&cli.UintFlag{Name: "port", Usage: "destination `PORT` (tcp and udp)"},
		},
		Action: run(func(s *session) error {
			a := args(s.c)
			if len(a) != 2 {
				return cli.Exit(fmt.Sprintf("meshd admin policies check: name the source and the destination peer, got %q", a), 2)
			}
			r, err := s.api.CheckAccess(s.ctx, connect.NewRequest(&adminv1.CheckAccessRequest{Source: a[0], Destination: a[1],
				Protocol: s.c.String("protocol"), Port: uint32(min(s.c.Uint("port"), 1<<20))}))
			if err != nil {
				return err
			}
			if s.json {
				return s.printJSON(r.Msg)
			}
			_, err = fmt.Fprintf(s.out, "%s: %s\n", map[bool]string{true: "yes", false: "no"}[r.Msg.Allowed], r.Msg.Reason)
			return err
		})}
}

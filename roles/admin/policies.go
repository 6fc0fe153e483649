package admin

import (
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
)

func showPolicy(s *session, p *adminv1.Policy) error {
	if s.json {
		return s.printJSON(p)
	}
	return details(s.out, "id", p.Id, "name", p.Name, "description", p.Description, "sources", join(p.Sources),
		"destinations", join(p.Destinations), "direction", direction(p.Bidirectional), "protocol", p.Protocol,
		"ports", portsOf(p.Ports), "action", p.Action, "enabled", yesNo(p.Enabled), "created", when(p.Created))
}

func direction(bi bool) string {
	if bi {
		return "<->"
	}
	return "->"
}

func portsOf(p []string) string {
	if len(p) == 0 {
		return "all"
	}
	return join(p)
}

func policyFlags(create bool) []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: "name", Usage: "`NAME` of the policy"},
		&cli.StringFlag{Name: "description", Usage: "`TEXT` describing it"},
		&cli.StringSliceFlag{Name: "source", Usage: "source `GROUP` (repeatable or comma-separated)"},
		&cli.StringSliceFlag{Name: "destination", Usage: "destination `GROUP` (repeatable or comma-separated)"},
		&cli.StringFlag{Name: "protocol", Usage: "all, tcp, udp or icmp", Value: "all"},
		&cli.StringSliceFlag{Name: "ports", Usage: "destination `PORT`s or ranges for tcp/udp: 443,8000-8100 (default all)"},
		&cli.BoolFlag{Name: "bidirectional", Usage: "destinations may also reach sources"},
		&cli.BoolFlag{Name: "disabled", Usage: "create it switched off"},
	}
	if !create {
		fs = append(fs,
			&cli.BoolFlag{Name: "unidirectional", Usage: "only sources reach destinations"},
			&cli.BoolFlag{Name: "enable", Usage: "switch it on"},
			&cli.BoolFlag{Name: "all-ports", Usage: "allow every port again"})
	}
	return fs
}

func policiesCmd() *cli.Command {
	return &cli.Command{
		Name:  "policies",
		Usage: "which groups may reach which, on which protocols and ports",
		Subcommands: []*cli.Command{
			listCmd("list policies", func(s *session) error {
				r, err := s.api.ListPolicies(s.ctx, connect.NewRequest(&adminv1.ListPoliciesRequest{}))
				if err != nil {
					return err
				}
				if s.json {
					return printJSONList(s, r.Msg.Policies)
				}
				var rows [][]string
				for _, p := range r.Msg.Policies {
					rows = append(rows, []string{p.Name, join(p.Sources), direction(p.Bidirectional), join(p.Destinations),
						p.Protocol, portsOf(p.Ports), yesNo(p.Enabled)})
				}
				return table(s.out, []string{"NAME", "SOURCES", "", "DESTINATIONS", "PROTOCOL", "PORTS", "ENABLED"}, rows)
			}),
			{Name: "get", Usage: "show a policy", ArgsUsage: "POLICY", Action: run(func(s *session) error {
				id, err := arg(s.c, "policy")
				if err != nil {
					return err
				}
				r, err := s.api.GetPolicy(s.ctx, connect.NewRequest(&adminv1.GetPolicyRequest{Id: id}))
				if err != nil {
					return err
				}
				return showPolicy(s, r.Msg)
			})},
			{Name: "create", Usage: "let source groups reach destination groups", Flags: policyFlags(true),
				Action: run(func(s *session) error {
					c := s.c
					name := c.String("name")
					if a := args(c); len(a) == 1 && name == "" {
						name = a[0]
					}
					if name == "" || len(c.StringSlice("source")) == 0 || len(c.StringSlice("destination")) == 0 {
						return cli.Exit("policies create needs --name, --source and --destination", 2)
					}
					r, err := s.api.CreatePolicy(s.ctx, connect.NewRequest(&adminv1.CreatePolicyRequest{Name: name,
						Description: c.String("description"), Sources: c.StringSlice("source"),
						Destinations: c.StringSlice("destination"), Protocol: c.String("protocol"),
						Ports: c.StringSlice("ports"), Bidirectional: c.Bool("bidirectional"), Enabled: ptr(!c.Bool("disabled"))}))
					if err != nil {
						return err
					}
					return showPolicy(s, r.Msg)
				})},
			{Name: "update", Usage: "change a policy", ArgsUsage: "POLICY", Flags: policyFlags(false),
				Action: run(func(s *session) error {
					c := s.c
					id, err := arg(c, "policy")
					if err != nil {
						return err
					}
					req := &adminv1.UpdatePolicyRequest{Id: id}
					if c.IsSet("name") {
						req.Name = ptr(c.String("name"))
					}
					if c.IsSet("description") {
						req.Description = ptr(c.String("description"))
					}
					if c.IsSet("source") {
						req.Sources = &adminv1.StringList{Values: c.StringSlice("source")}
					}
					if c.IsSet("destination") {
						req.Destinations = &adminv1.StringList{Values: c.StringSlice("destination")}
					}
					if c.IsSet("protocol") {
						req.Protocol = ptr(c.String("protocol"))
					}
					if c.IsSet("ports") || c.Bool("all-ports") {
						req.Ports = &adminv1.StringList{Values: c.StringSlice("ports")}
					}
					if c.Bool("bidirectional") || c.Bool("unidirectional") {
						req.Bidirectional = ptr(c.Bool("bidirectional"))
					}
					if c.Bool("disabled") || c.Bool("enable") {
						req.Enabled = ptr(c.Bool("enable"))
					}
					r, err := s.api.UpdatePolicy(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					return showPolicy(s, r.Msg)
				})},
			{Name: "delete", Aliases: []string{"rm"}, Usage: "delete a policy", ArgsUsage: "POLICY", Action: run(func(s *session) error {
				id, err := arg(s.c, "policy")
				if err != nil {
					return err
				}
				if _, err := s.api.DeletePolicy(s.ctx, connect.NewRequest(&adminv1.DeletePolicyRequest{Id: id})); err != nil {
					return err
				}
				return s.deleted("policy", id)
			})},
			checkCmd(),
		},
	}
}

func showRoute(s *session, r *adminv1.Route) error {
	if s.json {
		return s.printJSON(r)
	}
	groups := join(r.Groups)
	if groups == "" {
		groups = "every peer"
	}
	return details(s.out, "id", r.Id, "network", r.Network, "routing peers", join(r.Peers), "metric", fmt.Sprint(r.Metric),
		"masquerade", yesNo(r.Masquerade), "for", groups, "description", r.Description, "enabled", yesNo(r.Enabled),
		"created", when(r.Created))
}

func routeFlags(create bool) []cli.Flag {
	metric := &cli.IntFlag{Name: "metric", Usage: "`N` from 1 to 9999; lower wins between routes of one network", DefaultText: "unchanged"}
	if create {
		metric.DefaultText = "9999"
	}
	fs := []cli.Flag{
		&cli.StringFlag{Name: "network", Usage: "the `CIDR` routed, e.g. 192.168.1.0/24"},
		&cli.StringSliceFlag{Name: "peer", Usage: "routing `PEER`, in order of preference (repeatable or comma-separated)"},
		metric,
		&cli.BoolFlag{Name: "masquerade", Usage: "the routing peer masquerades traffic into the network"},
		&cli.StringSliceFlag{Name: "group", Usage: "only peers of `GROUP` get the route (default every peer)"},
		&cli.StringFlag{Name: "description", Usage: "`TEXT` describing it"},
		&cli.BoolFlag{Name: "disabled", Usage: "switched off"},
	}
	if !create {
		fs = append(fs, &cli.BoolFlag{Name: "no-masquerade", Usage: "stop masquerading"},
			&cli.BoolFlag{Name: "enable", Usage: "switch it on"},
			&cli.BoolFlag{Name: "all-peers", Usage: "every peer gets the route again"})
	}
	return fs
}

func routesCmd() *cli.Command {
	return &cli.Command{
		Name:  "routes",
		Usage: "networks reached through routing peers",
		Subcommands: []*cli.Command{
			listCmd("list routes", func(s *session) error {
				r, err := s.api.ListRoutes(s.ctx, connect.NewRequest(&adminv1.ListRoutesRequest{}))
				if err != nil {
					return err
				}
				if s.json {
					return printJSONList(s, r.Msg.Routes)
				}
				var rows [][]string
				for _, rt := range r.Msg.Routes {
					rows = append(rows, []string{rt.Network, join(rt.Peers), fmt.Sprint(rt.Metric), yesNo(rt.Masquerade),
						join(rt.Groups), yesNo(rt.Enabled), rt.Description, rt.Id})
				}
				return table(s.out, []string{"NETWORK", "VIA", "METRIC", "MASQUERADE", "GROUPS", "ENABLED", "DESCRIPTION", "ID"}, rows)
			}),
			{Name: "get", Usage: "show a route", ArgsUsage: "ROUTE", Action: run(func(s *session) error {
				id, err := arg(s.c, "route (id or network)")
				if err != nil {
					return err
				}
				r, err := s.api.GetRoute(s.ctx, connect.NewRequest(&adminv1.GetRouteRequest{Id: id}))
				if err != nil {
					return err
				}
				return showRoute(s, r.Msg)
			})},
			{Name: "create", Usage: "route a network through peers", Flags: routeFlags(true), ArgsUsage: "[CIDR]",
				Action: run(func(s *session) error {
					c := s.c
					network := c.String("network")
					if a := args(c); len(a) == 1 && network == "" {
						network = a[0]
					}
					if network == "" || len(c.StringSlice("peer")) == 0 {
						return cli.Exit("routes create needs --network CIDR and --peer PEER", 2)
					}
					r, err := s.api.CreateRoute(s.ctx, connect.NewRequest(&adminv1.CreateRouteRequest{Network: network,
						Peers: c.StringSlice("peer"), Metric: int32(c.Int("metric")), Masquerade: c.Bool("masquerade"),
						Description: c.String("description"), Groups: c.StringSlice("group"), Enabled: ptr(!c.Bool("disabled"))}))
					if err != nil {
						return err
					}
					return showRoute(s, r.Msg)
				})},
			{Name: "update", Usage: "change a route", ArgsUsage: "ROUTE", Flags: routeFlags(false),
				Action: run(func(s *session) error {
					c := s.c
					id, err := arg(c, "route (id or network)")
					if err != nil {
						return err
					}
					req := &adminv1.UpdateRouteRequest{Id: id}
					if c.IsSet("network") {
						req.Network = ptr(c.String("network"))
					}
					if c.IsSet("peer") {
						req.Peers = &adminv1.StringList{Values: c.StringSlice("peer")}
					}
					if c.IsSet("metric") {
						req.Metric = ptr(int32(c.Int("metric")))
					}
					if c.Bool("masquerade") || c.Bool("no-masquerade") {
						req.Masquerade = ptr(c.Bool("masquerade"))
					}
					if c.IsSet("description") {
						req.Description = ptr(c.String("description"))
					}
					if c.IsSet("group") || c.Bool("all-peers") {
						req.Groups = &adminv1.StringList{Values: c.StringSlice("group")}
					}
					if c.Bool("disabled") || c.Bool("enable") {
						req.Enabled = ptr(c.Bool("enable"))
					}
					r, err := s.api.UpdateRoute(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					return showRoute(s, r.Msg)
				})},
			{Name: "delete", Aliases: []string{"rm"}, Usage: "delete a route", ArgsUsage: "ROUTE", Action: run(func(s *session) error {
				id, err := arg(s.c, "route (id or network)")
				if err != nil {
					return err
				}
				if _, err := s.api.DeleteRoute(s.ctx, connect.NewRequest(&adminv1.DeleteRouteRequest{Id: id})); err != nil {
					return err
				}
				return s.deleted("route", id)
			})},
		},
	}
}

func eventsCmd() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "the audit log: who changed what, when",
		Subcommands: []*cli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "list the newest events, oldest first",
				Flags: []cli.Flag{&cli.IntFlag{Name: "limit", Value: 100, Usage: "at most `N` events"}},
				Action: run(func(s *session) error {
					r, err := s.api.ListEvents(s.ctx, connect.NewRequest(&adminv1.ListEventsRequest{Limit: int32(s.c.Int("limit"))}))
					if err != nil {
						return err
					}
					if s.json {
						return printJSONList(s, r.Msg.Events)
					}
					var rows [][]string
					for _, e := range r.Msg.Events {
						target := e.TargetType
						if e.TargetName != "" {
							target += " " + strconv.Quote(e.TargetName)
						}
						rows = append(rows, []string{when(e.Time), e.Actor, e.Action, target, e.Detail})
					}
					return table(s.out, []string{"TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"}, rows)
				})},
		},
	}
}

package admin

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
)

func listCmd(usage string, fn func(s *session) error) *cli.Command {
	return &cli.Command{Name: "list", Aliases: []string{"ls"}, Usage: usage, Action: run(fn)}
}

func accountCmd() *cli.Command {
	show := func(s *session, a *adminv1.Account) error {
		if s.json {
			return s.printJSON(a)
		}
		exp := seconds(a.LoginExpirationSeconds)
		if a.LoginExpirationSeconds > 0 {
			exp += " (for opted-in peers: peers update PEER --login-expiration on)"
		}
		return details(s.out, "id", a.Id, "name", a.Name, "overlay network", a.OverlayNetwork, "dns domain", a.DnsDomain,
			"login expiration", exp,
			"logins expired", fmt.Sprint(a.LoginExpiredPeers), "ephemeral peers removed after",
			seconds(a.EphemeralOfflineSeconds)+" offline", "post-quantum", a.PostQuantum, "created", when(a.Created))
	}
	return &cli.Command{
		Name:  "account",
		Usage: "the account's settings",
		Subcommands: []*cli.Command{
			{Name: "get", Usage: "show the account", Action: run(func(s *session) error {
				r, err := s.api.GetAccount(s.ctx, connect.NewRequest(&adminv1.GetAccountRequest{}))
				if err != nil {
					return err
				}
				return show(s, r.Msg)
			})},
			{Name: "update", Usage: "change the account's settings",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "account `NAME`"},
					&cli.StringFlag{Name: "overlay-network", Usage: "overlay `CIDR` (must hold every peer's address)"},
					&cli.StringFlag{Name: "dns-domain", Usage: "DNS `DOMAIN` of peer names"},
					&cli.StringFlag{Name: "login-expiration", Usage: "opted-in peers must log in again after `DURATION` (e.g. 30d; 0: never); peers joined with setup keys are exempt unless opted in"},
					&cli.StringFlag{Name: "ephemeral-offline", Usage: "remove ephemeral peers offline for `DURATION`"},
					&cli.StringFlag{Name: "post-quantum", Usage: "post-quantum pre-shared keys between peers: `MODE` off, permissive (peers that both support them use them) or strict (a peer without them is not connected); docs/post-quantum.md"},
				},
				Action: run(func(s *session) error {
					req := &adminv1.UpdateAccountRequest{}
					c := s.c
					if c.IsSet("name") {
						req.Name = ptr(c.String("name"))
					}
					if c.IsSet("overlay-network") {
						req.OverlayNetwork = ptr(c.String("overlay-network"))
					}
					if c.IsSet("dns-domain") {
						req.DnsDomain = ptr(c.String("dns-domain"))
					}
					if c.IsSet("post-quantum") {
						req.PostQuantum = ptr(c.String("post-quantum"))
					}
					for flag, dst := range map[string]**int64{"login-expiration": &req.LoginExpirationSeconds, "ephemeral-offline": &req.EphemeralOfflineSeconds} {
						if c.IsSet(flag) {
							d, err := parseDuration(c.String(flag))
							if err != nil {
								return cli.Exit("--"+flag+": "+err.Error(), 2)
							}
							*dst = ptr(int64(d.Seconds()))
						}
					}
					r, err := s.api.UpdateAccount(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					if n := r.Msg.LoginExpiredPeers; n > 0 && req.LoginExpirationSeconds != nil {
						fmt.Fprintf(s.c.App.ErrWriter, "warning: with this login expiration %d opted-in peer(s) are expired now and cut off "+
							"until they log in again; `meshd admin peers update PEER --login-expiration off` exempts one\n", n)
					}
					return show(s, r.Msg)
				})},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func showPeer(s *session, p *adminv1.Peer) error {
	if s.json {
		return s.printJSON(p)
	}
	return details(s.out, "id", p.Id, "name", p.Name, "dns name", p.DnsName, "overlay ip", p.OverlayIp,
		"public key", p.PublicKey, "hostname", p.Hostname, "os", p.Os, "version", p.Version, "groups", join(p.Groups),
		"online", yesNo(p.Online), "last seen", when(p.LastSeen), "login expires", when(p.LoginExpires),
		"login expiration", map[bool]string{true: "on", false: "off"}[p.LoginExpirationEnabled],
		"ephemeral", yesNo(p.Ephemeral), "joined", when(p.Created), "setup key", p.SetupKeyId, "user", p.User)
}

func peersCmd() *cli.Command {
	return &cli.Command{
		Name:  "peers",
		Usage: "the machines in the network",
		Subcommands: []*cli.Command{
			listCmd("list peers", func(s *session) error {
				r, err := s.api.ListPeers(s.ctx, connect.NewRequest(&adminv1.ListPeersRequest{}))
				if err != nil {
					return err
				}
				if s.json {
					return printJSONList(s, r.Msg.Peers)
				}
				var rows [][]string
				for _, p := range r.Msg.Peers {
					online := "offline"
					if p.Online {
						online = "online"
					}
					rows = append(rows, []string{p.Name, p.OverlayIp, p.DnsName, online, when(p.LastSeen), join(p.Groups), p.Os})
				}
				return table(s.out, []string{"NAME", "IP", "DNS NAME", "STATE", "LAST SEEN", "GROUPS", "OS"}, rows)
			}),
			{Name: "get", Usage: "show a peer", ArgsUsage: "PEER", Action: run(func(s *session) error {
				id, err := arg(s.c, "peer")
				if err != nil {
					return err
				}
				r, err := s.api.GetPeer(s.ctx, connect.NewRequest(&adminv1.GetPeerRequest{Id: id}))
				if err != nil {
					return err
				}
				return showPeer(s, r.Msg)
			})},
			{Name: "update", Usage: "rename a peer, set its groups or its login expiration", ArgsUsage: "PEER",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "new `NAME` (also its DNS name)"},
					&cli.StringSliceFlag{Name: "group", Usage: "the peer's `GROUP`s, replacing the current ones (repeatable or comma-separated)"},
					&cli.BoolFlag{Name: "no-groups", Usage: "take the peer out of every group (but All)"},
					&cli.StringFlag{Name: "login-expiration", Usage: "`on` or off: whether the account's login expiration applies (off by default for peers joined with a setup key)"},
				},
				Action: run(func(s *session) error {
					id, err := arg(s.c, "peer")
					if err != nil {
						return err
					}
					req := &adminv1.UpdatePeerRequest{Id: id}
					if s.c.IsSet("name") {
						req.Name = ptr(s.c.String("name"))
					}
					if s.c.IsSet("group") || s.c.Bool("no-groups") {
						req.Groups = &adminv1.StringList{Values: s.c.StringSlice("group")}
					}
					if s.c.IsSet("login-expiration") {
						switch v := s.c.String("login-expiration"); v {
						case "on", "true", "yes":
							req.LoginExpirationEnabled = ptr(true)
						case "off", "false", "no":
							req.LoginExpirationEnabled = ptr(false)
						default:
							return cli.Exit(fmt.Sprintf("--login-expiration %q: want on or off", v), 2)
						}
					}
					r, err := s.api.UpdatePeer(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					return showPeer(s, r.Msg)
				})},
			{Name: "delete", Aliases: []string{"rm"}, Usage: "remove a peer from the network", ArgsUsage: "PEER", Action: run(func(s *session) error {
				id, err := arg(s.c, "peer")
				if err != nil {
					return err
				}
				if _, err := s.api.DeletePeer(s.ctx, connect.NewRequest(&adminv1.DeletePeerRequest{Id: id})); err != nil {
					return err
				}
				return s.deleted("peer", id)
			})},
		},
	}
}

// deleted reports a deletion.
func (s *session) deleted(kind, id string) error {
	if s.json {
		_, err := fmt.Fprintf(s.out, "{\"deleted\":%q,\"%s\":%q}\n", kind, "id", id)
		return err
	}
	_, err := fmt.Fprintf(s.out, "deleted %s %s\n", kind, safe(id))
	return err
}

func showGroup(s *session, g *adminv1.Group) error {
	if s.json {
		return s.printJSON(g)
	}
	return details(s.out, "id", g.Id, "name", g.Name, "peers", join(g.Peers), "created", when(g.Created))
}

func groupsCmd() *cli.Command {
	return &cli.Command{
		Name:  "groups",
		Usage: "named sets of peers that policies, routes and DNS refer to",
		Subcommands: []*cli.Command{
			listCmd("list groups", func(s *session) error {
				r, err := s.api.ListGroups(s.ctx, connect.NewRequest(&adminv1.ListGroupsRequest{}))
				if err != nil {
					return err
				}
				if s.json {
					return printJSONList(s, r.Msg.Groups)
				}
				var rows [][]string
				for _, g := range r.Msg.Groups {
					members := join(g.Peers)
					if len(members) > 60 {
						members = members[:57] + "..."
					}
					rows = append(rows, []string{g.Name, fmt.Sprint(len(g.Peers)), members})
				}
				return table(s.out, []string{"NAME", "PEERS", "MEMBERS"}, rows)
			}),
			{Name: "get", Usage: "show a group", ArgsUsage: "GROUP", Action: run(func(s *session) error {
				id, err := arg(s.c, "group")
				if err != nil {
					return err
				}
				r, err := s.api.GetGroup(s.ctx, connect.NewRequest(&adminv1.GetGroupRequest{Id: id}))
				if err != nil {
					return err
				}
				return showGroup(s, r.Msg)
			})},
			{Name: "create", Usage: "create a group", ArgsUsage: "NAME",
				Flags: []cli.Flag{&cli.StringSliceFlag{Name: "peer", Usage: "member `PEER` (repeatable or comma-separated)"}},
				Action: run(func(s *session) error {
					name, err := arg(s.c, "group name")
					if err != nil {
						return err
					}
					r, err := s.api.CreateGroup(s.ctx, connect.NewRequest(&adminv1.CreateGroupRequest{Name: name, Peers: s.c.StringSlice("peer")}))
					if err != nil {
						return err
					}
					return showGroup(s, r.Msg)
				})},
			{Name: "update", Usage: "rename a group or set its members", ArgsUsage: "GROUP",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "new `NAME`"},
					&cli.StringSliceFlag{Name: "peer", Usage: "the members, replacing the current ones (repeatable or comma-separated)"},
					&cli.BoolFlag{Name: "no-peers", Usage: "remove every member"},
				},
				Action: run(func(s *session) error {
					id, err := arg(s.c, "group")
					if err != nil {
						return err
					}
					req := &adminv1.UpdateGroupRequest{Id: id}
					if s.c.IsSet("name") {
						req.Name = ptr(s.c.String("name"))
					}
					if s.c.IsSet("peer") || s.c.Bool("no-peers") {
						req.Peers = &adminv1.StringList{Values: s.c.StringSlice("peer")}
					}
					r, err := s.api.UpdateGroup(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					return showGroup(s, r.Msg)
				})},
			{Name: "delete", Aliases: []string{"rm"}, Usage: "delete a group no policy, route or key uses", ArgsUsage: "GROUP", Action: run(func(s *session) error {
				id, err := arg(s.c, "group")
				if err != nil {
					return err
				}
				if _, err := s.api.DeleteGroup(s.ctx, connect.NewRequest(&adminv1.DeleteGroupRequest{Id: id})); err != nil {
					return err
				}
				return s.deleted("group", id)
			})},
		},
	}
}

func showKey(s *session, k *adminv1.SetupKey) error {
	if s.json {
		return s.printJSON(k)
	}
	kind := "reusable"
	if k.OneOff {
		kind = "one-off"
	}
	limit := keyLimit(k)
	pairs := []string{"id", k.Id, "name", k.Name}
	if k.Key != "" {
		pairs = append(pairs, "key", k.Key+"   (shown only now: keep it)")
	}
	if k.JoinCommand != "" {
		pairs = append(pairs, "join", k.JoinCommand+"   (run on the machine to join)")
	}
	pairs = append(pairs, "prefix", k.Prefix, "type", kind, "state", k.State, "used", fmt.Sprint(k.Used), "usage limit", limit,
		"expires", when(k.Expires), "auto groups", join(k.AutoGroups), "ephemeral", yesNo(k.Ephemeral),
		"last used", when(k.LastUsed), "created", when(k.Created))
	return details(s.out, pairs...)
}

// keyLimit is how many times a key works: a one-off key once.
func keyLimit(k *adminv1.SetupKey) string {
	switch {
	case k.OneOff:
		return "1 (one-off)"
	case k.UsageLimit > 0:
		return fmt.Sprint(k.UsageLimit)
	}
	return "unlimited"
}

func setupKeysCmd() *cli.Command {
	return &cli.Command{
		Name:    "setup-keys",
		Aliases: []string{"keys"},
		Usage:   "the keys machines join with",
		Subcommands: []*cli.Command{
			listCmd("list setup keys", func(s *session) error {
				r, err := s.api.ListSetupKeys(s.ctx, connect.NewRequest(&adminv1.ListSetupKeysRequest{}))
				if err != nil {
					return err
				}
				if s.json {
					return printJSONList(s, r.Msg.SetupKeys)
				}
				var rows [][]string
				for _, k := range r.Msg.SetupKeys {
					kind := "reusable"
					if k.OneOff {
						kind = "one-off"
					}
					used := fmt.Sprint(k.Used)
					if k.OneOff || k.UsageLimit > 0 {
						used += "/" + fmt.Sprint(max(k.UsageLimit, 1))
					}
					rows = append(rows, []string{k.Name, k.Id, k.Prefix, kind, k.State, used, when(k.Expires), join(k.AutoGroups)})
				}
				return table(s.out, []string{"NAME", "ID", "PREFIX", "TYPE", "STATE", "USED", "EXPIRES", "AUTO GROUPS"}, rows)
			}),
			{Name: "get", Usage: "show a setup key (never its value)", ArgsUsage: "KEY", Action: run(func(s *session) error {
				id, err := arg(s.c, "setup key")
				if err != nil {
					return err
				}
				r, err := s.api.GetSetupKey(s.ctx, connect.NewRequest(&adminv1.GetSetupKeyRequest{Id: id}))
				if err != nil {
					return err
				}
				return showKey(s, r.Msg)
			})},
			{Name: "create", Usage: "create a setup key; its value is shown once", ArgsUsage: "[NAME]",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "`NAME` of the key"},
					&cli.BoolFlag{Name: "one-off", Usage: "the key works once"},
					&cli.StringFlag{Name: "expires", Usage: "the key stops working after `DURATION` (e.g. 24h, 7d)"},
					&cli.IntFlag{Name: "usage-limit", Usage: "the key works `N` times (0: unlimited)"},
					&cli.StringSliceFlag{Name: "group", Usage: "`GROUP` peers joining with it are put in (repeatable or comma-separated)"},
					&cli.BoolFlag{Name: "ephemeral", Usage: "peers joining with it are removed after being offline a while"},
				},
				Action: run(func(s *session) error {
					req := &adminv1.CreateSetupKeyRequest{Name: s.c.String("name"), OneOff: s.c.Bool("one-off"),
						UsageLimit: int32(s.c.Int("usage-limit")), AutoGroups: s.c.StringSlice("group"), Ephemeral: s.c.Bool("ephemeral")}
					if a := args(s.c); len(a) == 1 && req.Name == "" {
						req.Name = a[0]
					} else if len(a) > 0 {
						return cli.Exit(fmt.Sprintf("setup-keys create: unexpected arguments %q", a), 2)
					}
					if s.c.IsSet("expires") {
						d, err := parseDuration(s.c.String("expires"))
						if err != nil {
							return cli.Exit("--expires: "+err.Error(), 2)
						}
						req.ExpiresInSeconds = int64(d.Seconds())
					}
					r, err := s.api.CreateSetupKey(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					return showKey(s, r.Msg)
				})},
			{Name: "update", Usage: "rename, revoke or set the auto groups of a setup key", ArgsUsage: "KEY",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "name", Usage: "new `NAME`"},
					&cli.BoolFlag{Name: "revoke", Usage: "the key stops working"},
					&cli.BoolFlag{Name: "unrevoke", Usage: "the key works again"},
					&cli.StringSliceFlag{Name: "group", Usage: "auto `GROUP`s, replacing the current ones"},
					&cli.BoolFlag{Name: "no-groups", Usage: "no auto groups"},
				},
				Action: run(func(s *session) error {
					id, err := arg(s.c, "setup key")
					if err != nil {
						return err
					}
					req := &adminv1.UpdateSetupKeyRequest{Id: id}
					if s.c.IsSet("name") {
						req.Name = ptr(s.c.String("name"))
					}
					switch {
					case s.c.Bool("revoke") && s.c.Bool("unrevoke"):
						return cli.Exit("--revoke or --unrevoke, not both", 2)
					case s.c.Bool("revoke"):
						req.Revoked = ptr(true)
					case s.c.Bool("unrevoke"):
						req.Revoked = ptr(false)
					}
					if s.c.IsSet("group") || s.c.Bool("no-groups") {
						req.AutoGroups = &adminv1.StringList{Values: s.c.StringSlice("group")}
					}
					r, err := s.api.UpdateSetupKey(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					return showKey(s, r.Msg)
				})},
			{Name: "delete", Aliases: []string{"rm"}, Usage: "delete a setup key (peers that joined with it stay)", ArgsUsage: "KEY", Action: run(func(s *session) error {
				id, err := arg(s.c, "setup key")
				if err != nil {
					return err
				}
				if _, err := s.api.DeleteSetupKey(s.ctx, connect.NewRequest(&adminv1.DeleteSetupKeyRequest{Id: id})); err != nil {
					return err
				}
				return s.deleted("setup key", id)
			})},
		},
	}
}

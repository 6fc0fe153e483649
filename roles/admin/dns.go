package admin

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
)

func showNS(s *session, n *adminv1.NameserverGroup) error {
	if s.json {
		return s.printJSON(n)
	}
	match, groups := join(n.MatchDomains), join(n.Groups)
	if match == "" {
		match = "every domain"
	}
	if groups == "" {
		groups = "every peer"
	}
	return details(s.out, "id", n.Id, "name", n.Name, "nameservers", join(n.Nameservers), "domains", match,
		"for", groups, "enabled", yesNo(n.Enabled))
}

func showRecord(s *session, r *adminv1.DNSRecord) error {
	if s.json {
		return s.printJSON(r)
	}
	return details(s.out, "id", r.Id, "name", r.Name, "type", r.Type, "value", r.Value, "ttl", fmt.Sprint(r.Ttl))
}

func dnsCmd() *cli.Command {
	showSettings := func(s *session, d *adminv1.DNSSettings) error {
		if s.json {
			return s.printJSON(d)
		}
		return details(s.out, "domain", d.Domain)
	}
	nsFlags := func(create bool) []cli.Flag {
		fs := []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "`NAME` of the group"},
			&cli.StringSliceFlag{Name: "nameserver", Usage: "resolver `IP` or IP:port (repeatable or comma-separated)"},
			&cli.StringSliceFlag{Name: "domain", Usage: "match `DOMAIN` (default: every domain)"},
			&cli.StringSliceFlag{Name: "group", Usage: "only peers of `GROUP` use it (default every peer)"},
			&cli.BoolFlag{Name: "disabled", Usage: "switched off"},
		}
		if !create {
			fs = append(fs, &cli.BoolFlag{Name: "enable", Usage: "switch it on"},
				&cli.BoolFlag{Name: "all-domains", Usage: "resolve every domain"},
				&cli.BoolFlag{Name: "all-peers", Usage: "every peer uses it"})
		}
		return fs
	}
	recordFlags := func(create bool) []cli.Flag {
		typ := &cli.StringFlag{Name: "type", Usage: "A, AAAA, CNAME or TXT"}
		ttl := &cli.UintFlag{Name: "ttl", Usage: "`SECONDS` a resolver may cache it", DefaultText: "unchanged"}
		if create {
			typ.Value, ttl.DefaultText = "A", "300"
		}
		return []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "record `NAME`"}, typ,
			&cli.StringFlag{Name: "value", Usage: "record `VALUE`"}, ttl,
		}
	}
	return &cli.Command{
		Name:  "dns",
		Usage: "the DNS domain, nameserver groups and custom records",
		Subcommands: []*cli.Command{
			{Name: "get", Usage: "show the DNS settings", Action: run(func(s *session) error {
				r, err := s.api.GetDNSSettings(s.ctx, connect.NewRequest(&adminv1.GetDNSSettingsRequest{}))
				if err != nil {
					return err
				}
				return showSettings(s, r.Msg)
			})},
			{Name: "update", Usage: "change the DNS settings",
				Flags: []cli.Flag{&cli.StringFlag{Name: "domain", Usage: "DNS `DOMAIN` of peer names"}},
				Action: run(func(s *session) error {
					req := &adminv1.UpdateDNSSettingsRequest{}
					if s.c.IsSet("domain") {
						req.Domain = ptr(s.c.String("domain"))
					}
					r, err := s.api.UpdateDNSSettings(s.ctx, connect.NewRequest(req))
					if err != nil {
						return err
					}
					return showSettings(s, r.Msg)
				})},
			{Name: "nameservers", Aliases: []string{"ns"}, Usage: "resolvers for (some) domains",
				Subcommands: []*cli.Command{
					listCmd("list nameserver groups", func(s *session) error {
						r, err := s.api.ListNameserverGroups(s.ctx, connect.NewRequest(&adminv1.ListNameserverGroupsRequest{}))
						if err != nil {
							return err
						}
						if s.json {
							return printJSONList(s, r.Msg.NameserverGroups)
						}
						var rows [][]string
						for _, n := range r.Msg.NameserverGroups {
							rows = append(rows, []string{n.Name, join(n.Nameservers), join(n.MatchDomains), join(n.Groups), yesNo(n.Enabled)})
						}
						return table(s.out, []string{"NAME", "NAMESERVERS", "DOMAINS", "GROUPS", "ENABLED"}, rows)
					}),
					{Name: "get", Usage: "show a nameserver group", ArgsUsage: "NAME", Action: run(func(s *session) error {
						id, err := arg(s.c, "nameserver group")
						if err != nil {
							return err
						}
						r, err := s.api.GetNameserverGroup(s.ctx, connect.NewRequest(&adminv1.GetNameserverGroupRequest{Id: id}))
						if err != nil {
							return err
						}
						return showNS(s, r.Msg)
					})},
					{Name: "create", Usage: "add a nameserver group", ArgsUsage: "[NAME]", Flags: nsFlags(true),
						Action: run(func(s *session) error {
							c := s.c
							name := c.String("name")
							if a := args(c); len(a) == 1 && name == "" {
								name = a[0]
							}
							r, err := s.api.CreateNameserverGroup(s.ctx, connect.NewRequest(&adminv1.CreateNameserverGroupRequest{
								Name: name, Nameservers: c.StringSlice("nameserver"), MatchDomains: c.StringSlice("domain"),
								Groups: c.StringSlice("group"), Enabled: ptr(!c.Bool("disabled"))}))
							if err != nil {
								return err
							}
							return showNS(s, r.Msg)
						})},
					{Name: "update", Usage: "change a nameserver group", ArgsUsage: "NAME", Flags: nsFlags(false),
						Action: run(func(s *session) error {
							c := s.c
							id, err := arg(c, "nameserver group")
							if err != nil {
								return err
							}
							req := &adminv1.UpdateNameserverGroupRequest{Id: id}
							if c.IsSet("name") {
								req.Name = ptr(c.String("name"))
							}
							if c.IsSet("nameserver") {
								req.Nameservers = &adminv1.StringList{Values: c.StringSlice("nameserver")}
							}
							if c.IsSet("domain") || c.Bool("all-domains") {
								req.MatchDomains = &adminv1.StringList{Values: c.StringSlice("domain")}
							}
							if c.IsSet("group") || c.Bool("all-peers") {
								req.Groups = &adminv1.StringList{Values: c.StringSlice("group")}
							}
							if c.Bool("disabled") || c.Bool("enable") {
								req.Enabled = ptr(c.Bool("enable"))
							}
							r, err := s.api.UpdateNameserverGroup(s.ctx, connect.NewRequest(req))
							if err != nil {
								return err
							}
							return showNS(s, r.Msg)
						})},
					{Name: "delete", Aliases: []string{"rm"}, Usage: "delete a nameserver group", ArgsUsage: "NAME", Action: run(func(s *session) error {
						id, err := arg(s.c, "nameserver group")
						if err != nil {
							return err
						}
						if _, err := s.api.DeleteNameserverGroup(s.ctx, connect.NewRequest(&adminv1.DeleteNameserverGroupRequest{Id: id})); err != nil {
							return err
						}
						return s.deleted("nameserver group", id)
					})},
				}},
			{Name: "records", Usage: "custom records in the account's zone",
				Subcommands: []*cli.Command{
					listCmd("list records", func(s *session) error {
						r, err := s.api.ListDNSRecords(s.ctx, connect.NewRequest(&adminv1.ListDNSRecordsRequest{}))
						if err != nil {
							return err
						}
						if s.json {
							return printJSONList(s, r.Msg.Records)
						}
						var rows [][]string
						for _, rec := range r.Msg.Records {
							rows = append(rows, []string{rec.Name, rec.Type, rec.Value, fmt.Sprint(rec.Ttl), rec.Id})
						}
						return table(s.out, []string{"NAME", "TYPE", "VALUE", "TTL", "ID"}, rows)
					}),
					{Name: "get", Usage: "show a record", ArgsUsage: "RECORD", Action: run(func(s *session) error {
						id, err := arg(s.c, "record")
						if err != nil {
							return err
						}
						r, err := s.api.GetDNSRecord(s.ctx, connect.NewRequest(&adminv1.GetDNSRecordRequest{Id: id}))
						if err != nil {
							return err
						}
						return showRecord(s, r.Msg)
					})},
					{Name: "create", Usage: "add a record", ArgsUsage: "[NAME]", Flags: recordFlags(true),
						Action: run(func(s *session) error {
							c := s.c
							name := c.String("name")
							if a := args(c); len(a) == 1 && name == "" {
								name = a[0]
							}
							r, err := s.api.CreateDNSRecord(s.ctx, connect.NewRequest(&adminv1.CreateDNSRecordRequest{
								Name: name, Type: c.String("type"), Value: c.String("value"), Ttl: uint32(c.Uint("ttl"))}))
							if err != nil {
								return err
							}
							return showRecord(s, r.Msg)
						})},
					{Name: "update", Usage: "change a record", ArgsUsage: "RECORD", Flags: recordFlags(false),
						Action: run(func(s *session) error {
							c := s.c
							id, err := arg(c, "record")
							if err != nil {
								return err
							}
							req := &adminv1.UpdateDNSRecordRequest{Id: id}
							if c.IsSet("name") {
								req.Name = ptr(c.String("name"))
							}
							if c.IsSet("type") {
								req.Type = ptr(c.String("type"))
							}
							if c.IsSet("value") {
								req.Value = ptr(c.String("value"))
							}
							if c.IsSet("ttl") {
								req.Ttl = ptr(uint32(c.Uint("ttl")))
							}
							r, err := s.api.UpdateDNSRecord(s.ctx, connect.NewRequest(req))
							if err != nil {
								return err
							}
							return showRecord(s, r.Msg)
						})},
					{Name: "delete", Aliases: []string{"rm"}, Usage: "delete a record", ArgsUsage: "RECORD", Action: run(func(s *session) error {
						id, err := arg(s.c, "record")
						if err != nil {
							return err
						}
						if _, err := s.api.DeleteDNSRecord(s.ctx, connect.NewRequest(&adminv1.DeleteDNSRecordRequest{Id: id})); err != nil {
							return err
						}
						return s.deleted("dns record", id)
					})},
				}},
		},
	}
}

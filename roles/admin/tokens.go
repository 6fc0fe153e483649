package admin

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
)

// tokensCmd is `meshd admin tokens`: the admin tokens of the account, one
// per person or script, each revocable alone.
func tokensCmd() *cli.Command {
	return &cli.Command{
		Name:  "tokens",
		Usage: "admin tokens: one per person or script, each revocable alone",
		Subcommands: []*cli.Command{
			listCmd("list admin tokens (never their values)", func(s *session) error {
				r, err := s.api.ListAdminTokens(s.ctx, connect.NewRequest(&adminv1.ListAdminTokensRequest{}))
				if err != nil {
					return err
				}
				if s.json {
					return printJSONList(s, r.Msg.AdminTokens)
				}
				var rows [][]string
				for _, t := range r.Msg.AdminTokens {
					name := t.Name
					if t.Current {
						name += " (this one)"
					}
					rows = append(rows, []string{name, t.Id, when(t.Created), when(t.LastUsed)})
				}
				return table(s.out, []string{"NAME", "ID", "CREATED", "LAST USED"}, rows)
			}),
			{Name: "create", Usage: "create an admin token; its value is shown once", ArgsUsage: "NAME",
				Action: run(func(s *session) error {
					name, err := arg(s.c, "token name")
					if err != nil {
						return err
					}
					r, err := s.api.CreateAdminToken(s.ctx, connect.NewRequest(&adminv1.CreateAdminTokenRequest{Name: name}))
					if err != nil {
						return err
					}
					t := r.Msg
					if s.json {
						return s.printJSON(t)
					}
					return details(s.out, "id", t.Id, "name", t.Name, "token", t.Token+"   (shown only now: keep it)",
						"use", s.adminCommand(t.Token)+" ...", "created", when(t.Created))
				})},
			{Name: "delete", Aliases: []string{"rm", "revoke"}, Usage: "delete an admin token (not the last one)", ArgsUsage: "TOKEN",
				Action: run(func(s *session) error {
					id, err := arg(s.c, "admin token")
					if err != nil {
						return err
					}
					if _, err := s.api.DeleteAdminToken(s.ctx, connect.NewRequest(&adminv1.DeleteAdminTokenRequest{Id: id})); err != nil {
						return err
					}
					return s.deleted("admin token", id)
				})},
		},
	}
}

// adminCommand is how to call `meshd admin` with token against the control
// this session talks to.
func (s *session) adminCommand(token string) string {
	cmd := fmt.Sprintf("meshd admin --control %s --token %s", s.url, token)
	if s.pin != "" {
		cmd += " --tls-pin " + s.pin
	}
	return cmd
}

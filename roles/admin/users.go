package admin

import (
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	adminv1 "meshd/api/admin/v1"
)

// usersCmd is `meshd admin users`: the people who log in through the
// identity provider, their roles, and blocking them.
func usersCmd() *cli.Command {
	show := func(s *session, u *adminv1.User) error {
		if s.json {
			return s.printJSON(u)
		}
		return details(s.out, "id", u.Id, "email", u.Email, "name", u.Name, "role", u.Role, "blocked", yesNo(u.Blocked),
			"issuer", u.Issuer, "subject", u.Subject, "peers", strings.Join(u.Peers, ", "),
			"created", when(u.Created), "last login", when(u.LastLogin))
	}
	update := func(s *session, m *adminv1.UpdateUserRequest) error {
		id, err := arg(s.c, "user")
		if err != nil {
			return err
		}
		m.Id = id
		r, err := s.api.UpdateUser(s.ctx, connect.NewRequest(m))
		if err != nil {
			return err
		}
		return show(s, r.Msg)
	}
	block := func(name, usage string, blocked bool) *cli.Command {
		return &cli.Command{Name: name, Usage: usage, ArgsUsage: "USER", Action: run(func(s *session) error {
			return update(s, &adminv1.UpdateUserRequest{Blocked: &blocked})
		})}
	}
	return &cli.Command{
		Name:  "users",
		Usage: "people who log in by single sign-on: roles, blocking",
		Subcommands: []*cli.Command{
			listCmd("list users", func(s *session) error {
				r, err := s.api.ListUsers(s.ctx, connect.NewRequest(&adminv1.ListUsersRequest{}))
				if err != nil {
					return err
				}
				if s.json {
					return printJSONList(s, r.Msg.Users)
				}
				var rows [][]string
				for _, u := range r.Msg.Users {
					rows = append(rows, []string{u.Email, u.Name, u.Role, yesNo(u.Blocked), fmt.Sprint(len(u.Peers)), u.Id, when(u.LastLogin)})
				}
				return table(s.out, []string{"EMAIL", "NAME", "ROLE", "BLOCKED", "PEERS", "ID", "LAST LOGIN"}, rows)
			}),
			{Name: "get", Usage: "show a user (by id, email or subject)", ArgsUsage: "USER", Action: run(func(s *session) error {
				id, err := arg(s.c, "user")
				if err != nil {
					return err
				}
				r, err := s.api.GetUser(s.ctx, connect.NewRequest(&adminv1.GetUserRequest{Id: id}))
				if err != nil {
					return err
				}
				return show(s, r.Msg)
			})},
			{Name: "update", Usage: "change a user's role", ArgsUsage: "USER",
				Flags: []cli.Flag{&cli.StringFlag{Name: "role", Usage: "`ROLE`: owner, admin, auditor (reads everything) or user (own peers only)"}},
				Action: run(func(s *session) error {
					if !s.c.IsSet("role") {
						return cli.Exit("meshd admin users update: nothing to change: pass --role ROLE", 2)
					}
					role := s.c.String("role")
					return update(s, &adminv1.UpdateUserRequest{Role: &role})
				})},
			block("block", "block a user: their peers leave every map, their logins are refused", true),
			block("unblock", "unblock a user: they may log in again", false),
			{Name: "delete", Aliases: []string{"rm"}, Usage: "delete a user and their peers", ArgsUsage: "USER",
				Action: run(func(s *session) error {
					id, err := arg(s.c, "user")
					if err != nil {
						return err
					}
					if _, err := s.api.DeleteUser(s.ctx, connect.NewRequest(&adminv1.DeleteUserRequest{Id: id})); err != nil {
						return err
					}
					if s.json {
						return s.printJSON(&adminv1.DeleteUserResponse{})
					}
					_, err = fmt.Fprintf(s.out, "deleted user %s and their peers\n", id)
					return err
				})},
		},
	}
}

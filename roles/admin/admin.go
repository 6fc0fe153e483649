// Package admin is `meshd admin`: the command-line client of control's admin
// API. Every noun (peers, groups, setup-keys, policies, routes, dns, events,
// account) has the verbs that make sense (list, get, create, update,
// delete); output is a readable table, or JSON with --json (an array for
// list, an object otherwise). Only main imports it.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/proto"

	"meshd/api/admin/v1/adminv1connect"
	"meshd/internal/cliutil"
	"meshd/internal/control"
	"meshd/internal/jointoken"
	"meshd/internal/rpcclient"
	"meshd/internal/tlsconf"
)

// connFlags are the flags that say how to reach control; they are accepted
// before the noun and after the verb alike.
func connFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "control", Usage: "`URL` of control (default: from --data)"},
		&cli.StringFlag{Name: "token", Usage: "admin `TOKEN` (default: DIR/admin-token of --data)"},
		&cli.StringFlag{Name: "data", Usage: "control's data `DIR`, to read the token, URL and pin from (on the control host)"},
		&cli.StringFlag{Name: "tls-pin", Usage: "pin `sha256:HEX` of control's self-signed certificate (default: from --data)"},
		&cli.BoolFlag{Name: "json", Usage: "print JSON: an array for list, an object otherwise"},
	}
}

// DefaultDataDir is where `meshd control` and `meshd all` keep their data
// unless told otherwise; `meshd admin` looks there when given nothing.
const DefaultDataDir = cliutil.DefaultDataDir

// Options: HTTPClient, when set, replaces the client made from --control/--tls-pin
// (tests run the command against an in-process server).
type Options struct {
	HTTPClient *http.Client
}

// Command is `meshd admin`.
func Command() *cli.Command { return NewCommand(Options{}) }

// NewCommand is `meshd admin` with options (tests).
func NewCommand(o Options) *cli.Command {
	nouns := []*cli.Command{accountCmd(), peersCmd(), groupsCmd(), setupKeysCmd(), policiesCmd(), routesCmd(), dnsCmd(), eventsCmd(), serverCmd(), tokensCmd(), usersCmd(), loginCmd()}
	for _, n := range nouns {
		prepare(n, o)
	}
	return &cli.Command{
		OnUsageError: usageError,
		Name:         "admin",
		Usage:        "manage peers, groups, setup keys, policies, routes, DNS and admin tokens",
		UsageText: "meshd admin [--control URL] [--token T | --data DIR] [--tls-pin sha256:HEX] NOUN VERB [flags] [--json]\n\n" +
			"   e.g. meshd admin --data /var/lib/meshd peers list\n" +
			"        meshd admin groups create eng --peer laptop\n" +
			"        meshd admin setup-keys create --one-off --expires 24h --group eng --json\n" +
			"        meshd admin policies create --name web --source eng --destination servers --protocol tcp --ports 443",
		Flags:       connFlags(),
		Subcommands: append(nouns, storeCmd()),
	}
}

// prepare gives every verb the connection flags and wraps its action.
func prepare(c *cli.Command, o Options) {
	for _, sub := range c.Subcommands {
		prepare(sub, o)
	}
	c.OnUsageError = usageError
	if c.Action == nil {
		return
	}
	c.Flags = append(c.Flags, connFlags()...)
	inner := c.Action
	c.Action = func(cc *cli.Context) error {
		if cc.App.Metadata == nil {
			cc.App.Metadata = map[string]any{}
		}
		cc.App.Metadata[metaOptions] = o
		if err := reparse(cc); err != nil {
			return cli.Exit(err.Error(), 2)
		}
		if err := checkNumberFlags(cc); err != nil {
			return cli.Exit(err.Error(), 2)
		}
		return inner(cc)
	}
}

// usageError makes a bad flag exit 2 with a pointer to the help.
func usageError(c *cli.Context, err error, _ bool) error {
	return cli.Exit(fmt.Sprintf("%v (see `meshd admin ... %s --help`)", err, c.Command.Name), 2)
}

// Keys of what a verb's wrapper leaves in App.Metadata for the verb.
const (
	metaOptions = "meshd/admin.options"
	metaArgs    = "meshd/admin.args"
)

// reparse applies flags given after positional arguments ("groups create
// eng --peer laptop"), which the flag package leaves in Args. The remaining
// positional arguments are kept in Metadata.
func reparse(c *cli.Context) error {
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := lookupFlag(c.Command.Flags, name)
		if f == nil {
			return fmt.Errorf("flag provided but not defined: -%s (see `meshd admin ... %s --help`)", name, c.Command.Name)
		}
		if _, isBool := f.(*cli.BoolFlag); isBool {
			if !hasValue {
				value = "true"
			}
		} else if !hasValue {
			if i+1 >= len(args) {
				return fmt.Errorf("flag needs an argument: --%s", name)
			}
			i++
			value = args[i]
		}
		if err := c.Set(f.Names()[0], value); err != nil {
			return fmt.Errorf("--%s %q: %v", name, value, err)
		}
	}
	c.App.Metadata[metaArgs] = pos
	return nil
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// session is one admin command's context: the API client and the output.
type session struct {
	c    *cli.Context
	ctx  context.Context
	api  adminv1connect.AdminServiceClient
	out  io.Writer
	json bool
	url  string
	pin  string // control's certificate pin; empty when verified by CAs
}

// flag returns the value of a connection flag given at the verb or before
// the noun.
func flag(c *cli.Context, name string) string {
	for _, cc := range c.Lineage() {
		if cc.Command != nil && lookupFlag(cc.Command.Flags, name) != nil && cc.IsSet(name) {
			return cc.String(name)
		}
	}
	return ""
}

func boolFlag(c *cli.Context, name string) bool {
	for _, cc := range c.Lineage() {
		if cc.Command != nil && lookupFlag(cc.Command.Flags, name) != nil && cc.IsSet(name) {
			return cc.Bool(name)
		}
	}
	return false
}

// args returns the positional arguments of the verb.
func args(c *cli.Context) []string {
	a, _ := c.App.Metadata[metaArgs].([]string)
	return a
}

// arg returns the one positional argument a verb takes (what it names).
func arg(c *cli.Context, what string) (string, error) {
	a := args(c)
	switch len(a) {
	case 1:
		return a[0], nil
	case 0:
		return "", cli.Exit(fmt.Sprintf("meshd admin %s %s: name the %s (its name or id)", c.Lineage()[1].Command.Name, c.Command.Name, what), 2)
	}
	return "", cli.Exit(fmt.Sprintf("meshd admin %s %s: one %s please, got %q", c.Lineage()[1].Command.Name, c.Command.Name, what, a), 2)
}

// dataDirAddress reads control's URL and pin from DIR: the join-token of
// the server that made the network, or the control-address every replica
// writes.
func dataDirAddress(dir string) (jointoken.Token, error) {
	b, err := os.ReadFile(filepath.Join(dir, control.JoinTokenFile))
	if errors.Is(err, os.ErrNotExist) {
		url, pin, aerr := control.ReadAddress(dir)
		if aerr == nil {
			return jointoken.Token{ControlURL: url, Pin: pin}, nil
		}
		if !errors.Is(aerr, os.ErrNotExist) {
			return jointoken.Token{}, cli.Exit(fmt.Sprintf("cannot read control's address: %v (pass --control URL)", aerr), 1)
		}
	}
	if err != nil {
		return jointoken.Token{}, cli.Exit(fmt.Sprintf("cannot read control's address: %v (pass --control URL)", err), 1)
	}
	jt, err := jointoken.Decode(string(b))
	if err != nil {
		return jointoken.Token{}, cli.Exit(fmt.Sprintf("%s: %v", filepath.Join(dir, control.JoinTokenFile), err), 1)
	}
	return jt, nil
}

// connect builds the session: token, URL and pin from the flags, falling
// back to --data DIR.
func newSession(c *cli.Context) (*session, error) {
	url, token, pin, dir := flag(c, "control"), flag(c, "token"), flag(c, "tls-pin"), flag(c, "data")
	if url == "" && token == "" && dir == "" {
		// On the control host, the default data directory is enough.
		if _, err := os.Stat(filepath.Join(DefaultDataDir, control.AdminTokenFile)); err == nil {
			dir = DefaultDataDir
		}
	}
	if dir != "" {
		if token == "" {
			b, err := os.ReadFile(filepath.Join(dir, control.AdminTokenFile))
			if err != nil {
				return nil, cli.Exit(fmt.Sprintf("cannot read the admin token: %v (run on the control host as its user, or pass --token)", err), 1)
			}
			token = strings.TrimSpace(string(b))
		}
		if url == "" || pin == "" {
			jt, err := dataDirAddress(dir)
			if err != nil {
				return nil, err
			}
			if url == "" {
				url = jt.ControlURL
			}
			// --control changes only where to reach control (another
			// address of the same server): its certificate, and so its
			// pin, stay those of DIR unless --tls-pin says otherwise.
			if pin == "" {
				pin = jt.Pin
			}
		}
	}
	if token == "" && dir == "" {
		if s := loadSession(url, time.Now()); s != nil { // from `meshd admin login`
			token, url = s.Token, s.Control
			if pin == "" {
				pin = s.Pin
			}
		}
	}
	if url == "" {
		return nil, cli.Exit("where is control? pass --control URL (and --token), or --data DIR on the control host", 2)
	}
	if token == "" {
		return nil, cli.Exit("no admin token: pass --token TOKEN (from DIR/admin-token on the control host) or --data DIR", 2)
	}
	o, _ := c.App.Metadata[metaOptions].(Options)
	hc := o.HTTPClient
	if hc == nil {
		if pin != "" {
			var err error
			if pin, err = tlsconf.ParsePin(pin); err != nil {
				return nil, cli.Exit(fmt.Sprintf("--tls-pin: %v", err), 2)
			}
		}
		var err error
		if hc, err = rpcclient.New(url, pin); err != nil {
			return nil, cli.Exit(fmt.Sprintf("--control: %v", err), 2)
		}
	}
	auth := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	})
	ctx := c.Context
	if ctx == nil {
		ctx = context.Background()
	}
	return &session{c: c, ctx: ctx, out: c.App.Writer, json: boolFlag(c, "json"), url: url, pin: pin,
		api: adminv1connect.NewAdminServiceClient(hc, url, connect.WithInterceptors(auth))}, nil
}

// run is the action of a verb: make the session, call fn, and turn API
// errors into clear messages with a non-zero exit.
func run(fn func(s *session) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		s, err := newSession(c)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
		defer cancel()
		s.ctx = ctx
		return apiError(s, fn(s))
	}
}

func apiError(s *session, err error) error {
	var ec cli.ExitCoder
	var ce *connect.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ec):
		return err
	case errors.As(err, &ce):
		switch ce.Code() {
		case connect.CodeUnauthenticated:
			return cli.Exit(safe(ce.Message()), 1)
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded:
			if strings.Contains(ce.Message(), "store unavailable") {
				// Control answered: what it lost is its database.
				return cli.Exit(fmt.Sprintf("control at %s: %s", s.url, safe(ce.Message())), 1)
			}
			return cli.Exit(fmt.Sprintf("cannot reach control at %s: %s", s.url, safe(ce.Message())), 1)
		case connect.CodeInternal:
			return cli.Exit("control failed: "+safe(ce.Message()), 1)
		}
		return cli.Exit(safe(ce.Message()), 1)
	}
	return cli.Exit(safe(err.Error()), 1)
}

// printJSON prints one message as a JSON object.
func (s *session) printJSON(m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(s.out, "%s\n", safeJSON(b))
	return err
}

// printJSONList prints messages as a JSON array.
func printJSONList[T proto.Message](s *session, ms []T) error {
	var b strings.Builder
	b.WriteString("[")
	for i, m := range ms {
		j, err := marshalJSON(m)
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  ")
		b.Write(safeJSON(j))
	}
	if len(ms) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]\n")
	_, err := io.WriteString(s.out, b.String())
	return err
}

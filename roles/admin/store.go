package admin

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"meshd/store"
)

// storeCmd is `meshd admin store copy`: it works on databases, not through
// control's API, so it takes no connection flags.
func storeCmd() *cli.Command {
	return &cli.Command{
		Name:         "store",
		Usage:        "work on control's database directly (stop meshd first)",
		OnUsageError: usageError,
		Subcommands: []*cli.Command{{
			Name:  "copy",
			Usage: "copy a whole network into a new, empty database (e.g. SQLite to PostgreSQL)",
			UsageText: "meshd admin store copy --from sqlite:///var/lib/meshd/meshd.db --to postgres://meshd@db.example.org:5432/meshd?sslmode=verify-full\n\n" +
				"   Stop every meshd that uses --from first. The target must hold no meshd database; the copy is one\n" +
				"   transaction there, migrated to this meshd's schema; the source is not changed. Keep the password out\n" +
				"   of the command line with PGPASSWORD or ~/.pgpass. Then start meshd with --store and the --to URL.",
			OnUsageError: usageError,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "from", Required: true, Usage: "source database `URL`: a SQLite file (sqlite:///path or a path) or postgres://..."},
				&cli.StringFlag{Name: "to", Required: true, Usage: "target database `URL`, empty: postgres://user@host:port/db?sslmode=... or a new SQLite file"},
			},
			Action: storeCopy,
		}},
	}
}

func storeCopy(c *cli.Context) error {
	ctx := c.Context
	fromURL, toURL := c.String("from"), c.String("to")
	from, err := store.OpenAsIs(ctx, fromURL)
	if err != nil {
		return cli.Exit(fmt.Sprintf("store copy: source: %v", err), 1)
	}
	defer from.Close()
	// Version 0: open (creating a SQLite file) without adding a schema;
	// Copy refuses a target that has one.
	to, err := store.OpenAt(ctx, toURL, 0)
	if err != nil {
		return cli.Exit(fmt.Sprintf("store copy: target: %v", err), 1)
	}
	defer to.Close()
	if err := store.Copy(ctx, from, to); err != nil {
		return cli.Exit(fmt.Sprintf("%v", err), 1)
	}
	accts, err := to.Accounts(ctx)
	if err != nil {
		return cli.Exit(fmt.Sprintf("store copy: %v", err), 1)
	}
	peers := 0
	for _, a := range accts {
		d, err := to.LoadAccount(ctx, a.ID)
		if err != nil {
			return cli.Exit(fmt.Sprintf("store copy: %v", err), 1)
		}
		peers += len(d.Peers)
	}
	fmt.Fprintf(c.App.Writer, "copied %d network(s) with %d peer(s) from %s to %s (schema version %d)\n"+
		"next: start meshd with --store and the --to URL; agents reconnect by themselves\n",
		len(accts), peers, from, to, store.Latest())
	return nil
}

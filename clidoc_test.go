package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// docs/cli.md is the help of every command, so the reference can never
// drift from the binary. Regenerate: MESHD_UPDATE_DOCS=1 go test -run TestCLIDoc .
func TestCLIDoc(t *testing.T) {
	var doc bytes.Buffer
	doc.WriteString("# meshd command reference\n\n")
	doc.WriteString("Generated from `meshd … --help` by `MESHD_UPDATE_DOCS=1 go test -run TestCLIDoc .`; do not edit.\n")
	doc.WriteString("Every flag can also be set by the environment variable shown in brackets (`MESHD_<FLAG>`).\n")
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			p := append(append([]string{}, path...), c.Name)
			code, out, errOut := runMeshd(t, append(p, "--help")...)
			if code != 0 {
				t.Fatalf("meshd %s --help: exit %d: %s", strings.Join(p, " "), code, errOut)
			}
			fmt.Fprintf(&doc, "\n%s `meshd %s`\n\n```\n%s```\n", strings.Repeat("#", min(len(p)+1, 4)), strings.Join(p, " "), out)
			walk(p, c.Subcommands)
		}
	}
	walk(nil, newApp().Commands)
	const file = "docs/cli.md"
	if os.Getenv("MESHD_UPDATE_DOCS") != "" {
		if err := os.WriteFile(file, doc.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (generate it: MESHD_UPDATE_DOCS=1 go test -run TestCLIDoc .)", err)
	}
	if !bytes.Equal(want, doc.Bytes()) {
		t.Fatalf("%s is stale: the commands' help changed; regenerate it with MESHD_UPDATE_DOCS=1 go test -run TestCLIDoc .", file)
	}
	// An independent check that the reference covers what users type most.
	for _, must := range []string{"`meshd all`", "`meshd agent`", "`meshd status`", "--join", "--public-url", "`meshd admin policies create`"} {
		if !bytes.Contains(doc.Bytes(), []byte(must)) {
			t.Errorf("docs/cli.md lacks %s", must)
		}
	}
}

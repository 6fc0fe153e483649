package cliutil

import (
	"bytes"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestEnvSetsFlag(t *testing.T) {
	var got string
	cmd := &cli.Command{
		Name:   "x",
		Flags:  []cli.Flag{&cli.StringFlag{Name: "tls-pin"}},
		Action: func(c *cli.Context) error { got = c.String("tls-pin"); return nil },
	}
	app := &cli.App{Commands: []*cli.Command{cmd}, Writer: &bytes.Buffer{}}
	BindEnv(app.Flags, app.Commands)
	t.Setenv("MESHD_TLS_PIN", "sha256:abc")
	if err := app.Run([]string{"meshd", "x"}); err != nil {
		t.Fatal(err)
	}
	if got != "sha256:abc" {
		t.Fatalf("--tls-pin from env = %q", got)
	}
	if err := app.Run([]string{"meshd", "x", "--tls-pin", "sha256:def"}); err != nil {
		t.Fatal(err)
	}
	if got != "sha256:def" {
		t.Fatalf("the flag must win over the env: %q", got)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

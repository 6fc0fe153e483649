package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/urfave/cli/v2"

	daemonv1 "meshd/api/daemon/v1"
	"meshd/internal/cliutil"
	"meshd/internal/daemon"
)

// pingReport is what `meshd ping --json` prints. Field names are stable.
type pingReport struct {
	Peer      string      `json:"peer"`
	OverlayIP string      `json:"overlay_ip,omitempty"`
	Replies   []pingReply `json:"replies"`
	// Direct: some answer came while the path was direct.
	Direct bool `json:"direct"`
}

type pingReply struct {
	Seq       int                   `json:"seq"`
	LatencyMs float64               `json:"latency_ms,omitempty"`
	Path      string                `json:"path,omitempty"` // "direct", "relayed"
	Local     *daemon.CandidateJSON `json:"local_candidate,omitempty"`
	Remote    *daemon.CandidateJSON `json:"remote_candidate,omitempty"`
	Relay     string                `json:"relay,omitempty"`
	Error     string                `json:"error,omitempty"`
}

// PingCommand is `meshd ping`.
func PingCommand() *cli.Command {
	return &cli.Command{
		Name:      "ping",
		Usage:     "ping a peer through the mesh and show the path of each answer",
		ArgsUsage: "PEER",
		Description: "PEER is a peer's name, DNS name, overlay IP or public key. Each answer shows its path:\n" +
			"direct (with the candidate pair) or relayed (with the relay). Exits 1 when nothing answered,\n" +
			"or, with --until-direct, when the path never became direct.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Value: 4, Usage: "send `N` pings (with --until-direct: at most N, when given)"},
			&cli.BoolFlag{Name: "until-direct", Usage: "keep pinging until an answer comes over a direct path, or --timeout passes"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after `DURATION` in all"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON at the end (field names are stable, for scripts)"},
			socketFlag(),
		},
		Action: runPing,
	}
}

func runPing(c *cli.Context) error {
	if c.NArg() != 1 {
		return cliutil.Exit(2, "name one peer: `meshd ping PEER`")
	}
	peer, count, untilDirect := c.Args().First(), c.Int("count"), c.Bool("until-direct")
	if count < 1 {
		return cliutil.Exit(2, "--count must be at least 1")
	}
	if untilDirect && !c.IsSet("count") {
		count = 0 // no limit but the timeout
	}
	path := c.String("socket")
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	client := daemon.Client(path)
	rep := pingReport{Peer: peer, Replies: []pingReply{}}
	out := c.App.Writer
	if c.Bool("json") {
		out = io.Discard
	}
	answered := false
loop:
	for seq := 1; count == 0 || seq <= count; seq++ {
		started := time.Now()
		per := 2 * time.Second
		if d, ok := ctx.Deadline(); ok && time.Until(d) < per {
			per = time.Until(d)
		}
		if per <= 0 {
			break
		}
		resp, err := client.Ping(ctx, connect.NewRequest(&daemonv1.PingRequest{Peer: peer, TimeoutMs: per.Milliseconds()}))
		r := pingReply{Seq: seq}
		switch {
		case err == nil:
			m := resp.Msg
			answered = true
			rep.Peer, rep.OverlayIP = m.GetName(), m.GetOverlayIp()
			r.LatencyMs, r.Path, r.Relay = m.GetLatencyMs(), m.GetPath(), m.GetRelay()
			r.Local, r.Remote = candJSON(m.GetLocalCandidate()), candJSON(m.GetRemoteCandidate())
			fmt.Fprintf(out, "pong from %s (%s) %s in %.2fms\n", m.GetName(), m.GetOverlayIp(), describePath(m), r.LatencyMs)
		case connect.CodeOf(err) == connect.CodeDeadlineExceeded && ctx.Err() == nil:
			r.Error = daemon.Explain(path, err).Error()
			fmt.Fprintf(out, "timeout: %s\n", r.Error)
		case ctx.Err() != nil:
			break loop
		default:
			return cliutil.Exit(1, "%v", daemon.Explain(path, err))
		}
		rep.Replies = append(rep.Replies, r)
		if r.Path == "direct" {
			rep.Direct = true
			if untilDirect {
				break loop
			}
		}
		if count != 0 && seq == count {
			break loop
		}
		// One ping a second at most.
		if wait := time.Second - time.Since(started); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
	switch {
	case !answered:
		return cliutil.Exit(1, "no answer from %s", peer)
	case untilDirect && !rep.Direct:
		return cliutil.Exit(1, "%s answered, but never over a direct path (see `meshd netcheck` and docs/troubleshooting.md)", peer)
	}
	return nil
}

// describePath says how an answer travelled, for people.
func describePath(m *daemonv1.PingResponse) string {
	switch m.GetPath() {
	case "direct":
		return fmt.Sprintf("via direct %s -> %s", m.GetLocalCandidate().GetAddress(), m.GetRemoteCandidate().GetAddress())
	case "relayed":
		return "via relay " + m.GetRelay()
	}
	return "with no path yet"
}

func candJSON(c *daemonv1.Candidate) *daemon.CandidateJSON {
	if c.GetAddress() == "" {
		return nil
	}
	return &daemon.CandidateJSON{Type: c.GetType(), Address: c.GetAddress()}
}

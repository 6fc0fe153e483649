package admin

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// table prints rows under a header, aligned; cells go through safe.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i := range r {
			r[i] = safe(r[i])
			if r[i] == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// details prints "label: value" lines, aligned; pairs alternate label and
// value; values go through safe.
func details(w io.Writer, pairs ...string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(pairs); i += 2 {
		v := pairs[i+1]
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(tw, "%s:\t%s\n", pairs[i], safe(v))
	}
	return tw.Flush()
}

func when(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().Local().Format("2006-01-02 15:04:05")
}

func join(l []string) string { return strings.Join(l, ",") }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func seconds(s int64) string {
	if s == 0 {
		return "off"
	}
	return (time.Duration(s) * time.Second).String()
}

// maxDays keeps days within a time.Duration (about 292 years), so that a
// large value is an error rather than a wrapped, tiny one.
const maxDays = 100_000

// parseDuration parses Go durations plus days ("7d", "1d12h").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var total time.Duration
	if d, rest, ok := strings.Cut(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("duration %q: want e.g. 24h, 7d or 90m", s)
		}
		if n > maxDays {
			return 0, fmt.Errorf("duration %q: at most %dd", s, maxDays)
		}
		total, s = time.Duration(n)*24*time.Hour, rest
		if s == "" {
			return total, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want e.g. 24h, 7d or 90m", s)
	}
	if total+d < total {
		return 0, fmt.Errorf("duration %q: at most %dd", s, maxDays)
	}
	return total + d, nil
}

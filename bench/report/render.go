package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"meshd/bench"
)

// meta is what the report says about the run.
type meta struct {
	Date, Commit, Mode, Duration string
	CPU, Kernel, Memory, Go      string
	Cores                        int
	LoadStart, LoadEnd           string
	Tools                        string
	Commands                     string
	Profiles                     []profile
	Extras                       []extra
	Notes                        string // hand-written analysis (bench/NOTES.md)
	Failed                       []string
}

// extra is Markdown from elsewhere (bench/tunnel.sh) shown in a section.
type extra struct {
	Section, Title, Text string
}

// profile is the head of one profile report.
type profile struct {
	Name, Text string
}

// num formats a figure with about three significant digits.
func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "—"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func nums(vs []float64) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = num(v)
	}
	return strings.Join(s, ", ")
}

// cell escapes text for a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func metText(r bench.Row) string {
	switch {
	case r.Met == nil:
		return ""
	case *r.Met:
		return "met"
	default:
		return "**missed**"
	}
}

func loadText(ls []float64) string {
	if len(ls) == 0 {
		return ""
	}
	lo, hi := slices.Min(ls), slices.Max(ls)
	if lo == hi {
		return num(lo)
	}
	return num(lo) + "–" + num(hi)
}

// render writes the whole report.
func render(w io.Writer, m meta, rows []bench.Row) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# meshd benchmarks\n\n")
	p("Written by `bench/run.sh` (%s run); do not edit by hand. Every reference marked *same run* was measured in this run, alternating with meshd; *anchor* figures come from elsewhere (NetBird in the same kind of lab on this machine) and are given as they are.\n\n", m.Mode)
	p("| | |\n| --- | --- |\n")
	p("| date | %s (took %s) |\n", m.Date, m.Duration)
	p("| commit | `%s` |\n", m.Commit)
	p("| machine | %s, %d cores, %s RAM, kernel %s |\n", m.CPU, m.Cores, m.Memory, m.Kernel)
	p("| load average (1, 5, 15 min) | at start %s; at end %s |\n", m.LoadStart, m.LoadEnd)
	p("| software | %s, %s |\n\n", m.Go, m.Tools)
	p("The machine has %d cores and was shared with other work: the *load* column is the 1-minute load average at the end of each run of that figure. Figures taken under a load above the core count are noisy; ratios of runs that alternated with their reference are steadier than absolute figures: *paired* is the median of the round-by-round ratios, and the aim is judged on it where given.\n\n", m.Cores)

	if len(m.Failed) > 0 {
		p("**Steps that failed** (their figures are missing; see the step's log): %s.\n\n", strings.Join(m.Failed, "; "))
	}
	var aims []bench.Row
	for _, r := range rows {
		if r.Met != nil {
			aims = append(aims, r)
		}
	}
	slices.SortStableFunc(aims, func(a, b bench.Row) int { return strings.Compare(a.Section, b.Section) })
	if len(aims) > 0 {
		p("## Aims\n\n| figure | meshd | aim | |\n| --- | ---: | --- | --- |\n")
		for _, r := range aims {
			p("| %s | %s %s | %s | %s |\n", cell(r.Section+": "+r.Figure), num(r.Value), r.Unit, cell(r.Aim), metText(r))
		}
		p("\n")
	}

	var sections []string
	for _, r := range rows {
		if !slices.Contains(sections, r.Section) {
			sections = append(sections, r.Section)
		}
	}
	for _, e := range m.Extras {
		if !slices.Contains(sections, e.Section) {
			sections = append(sections, e.Section)
		}
	}
	slices.Sort(sections)
	for _, s := range sections {
		p("## %s\n\n", s)
		p("| figure | meshd | reference | meshd / ref | aim | | load | runs |\n")
		p("| --- | ---: | --- | ---: | --- | --- | ---: | --- |\n")
		var notes []string
		for _, r := range rows {
			if r.Section != s {
				continue
			}
			ref, ratio := "", ""
			if r.Ref != "" {
				kind := "anchor"
				if r.RefMeasured {
					kind = "same run"
				}
				ref = fmt.Sprintf("%s: %s %s (%s)", r.Ref, num(r.RefValue), r.Unit, kind)
				ratio = num(r.Ratio()) + "×"
				if len(r.PairedRatios) > 0 {
					ratio += fmt.Sprintf(" (paired: %s×)", num(bench.Median(r.PairedRatios)))
				}
			}
			runs := nums(r.Runs)
			if len(r.RefRuns) > 0 {
				runs = "meshd " + runs + "; ref " + nums(r.RefRuns)
			}
			fig := r.Figure
			if r.Note != "" {
				notes = append(notes, r.Note)
				fig += fmt.Sprintf(" [%d]", len(notes))
			}
			p("| %s | %s %s | %s | %s | %s | %s | %s | %s |\n", cell(fig), num(r.Value), r.Unit, cell(ref), ratio,
				cell(r.Aim), metText(r), loadText(r.Load), runs)
		}
		p("\n")
		for i, n := range notes {
			p("%d. %s\n", i+1, n)
		}
		if len(notes) > 0 {
			p("\n")
		}
		for _, e := range m.Extras {
			if e.Section == s {
				p("%s\n\n%s\n\n", e.Title, strings.TrimRight(e.Text, "\n"))
			}
		}
	}

	if len(m.Profiles) > 0 {
		p("## Profiles\n\nThe hottest entries of the profiles taken during the runs (CPU: perf, per process, during the first TCP run of each path; memory: the agent's Go heap profile, in-use space). Full reports, raw results and the lab's process logs stay in the run's work directory with KEEP=1.\n\n")
		for _, pr := range m.Profiles {
			p("### %s\n\n```\n%s\n```\n\n", pr.Name, strings.TrimRight(pr.Text, "\n"))
		}
	}
	p("## Commands\n\n```sh\n%s\n```\n", strings.TrimRight(m.Commands, "\n"))
	if m.Notes != "" {
		p("\n%s\n", strings.TrimRight(m.Notes, "\n"))
	}
}

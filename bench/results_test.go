package bench

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

// TestRecordReadRows: what Record appends, ReadRows gives back, in order.
func TestRecordReadRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	t.Setenv(ResultsEnv, path)
	want := []Row{
		{Section: "1. Tunnel throughput", Figure: "TCP", Unit: "Gb/s", Value: 2.5, Runs: []float64{2.4, 2.5, 2.6},
			Ref: "wireguard-go", RefValue: 2.0, RefMeasured: true, Aim: "≥ 1.0×", Met: Met(true), Load: []float64{1.5}},
		{Section: "5. Memory", Figure: "RSS", Unit: "MB", Value: 31, Aim: "< 30 MB", Met: Met(false)},
	}
	for _, r := range want {
		if err := Record(r); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadRows(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Figure != "TCP" || got[0].Runs[2] != 2.6 || !*got[0].Met || *got[1].Met || got[1].Ref != "" {
		t.Fatalf("rows = %+v", got)
	}
	if r := got[0].Ratio(); r != 1.25 {
		t.Errorf("ratio = %v, want 1.25", r)
	}
	if r := got[1].Ratio(); !math.IsNaN(r) {
		t.Errorf("ratio without a reference = %v, want NaN", r)
	}
}

func TestMedianQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if m := Median(xs); m != 3 {
		t.Errorf("median = %v", m)
	}
	if m := Median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("even median = %v", m)
	}
	if q := Quantile(xs, 0.9); q != 5 {
		t.Errorf("p90 = %v", q)
	}
	if q := Quantile(xs, 0); q != 1 {
		t.Errorf("p0 = %v", q)
	}
	if xs[0] != 5 {
		t.Error("Median sorted its argument")
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(Quantile(nil, 0.5)) {
		t.Error("empty input is not NaN")
	}
}

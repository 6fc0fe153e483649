// Package metricstest scrapes a Prometheus endpoint over HTTP and reads
// values out of it with the Prometheus text parser, so that the tests of
// every component with metrics check what a real scraper would see (names,
// types, labels), not the component's internals. Only tests import it.
package metricstest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are the metric families of one scrape, by name.
type Families map[string]*dto.MetricFamily

// Serve serves h on a loopback HTTP server until the test ends and returns
// the URL of its /metrics.
func Serve(tb testing.TB, h http.Handler) string {
	tb.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

// Scrape GETs url as Prometheus would (asking for the text format) and
// parses the answer; any failure fails the test.
func Scrape(tb testing.TB, url string) Families {
	tb.Helper()
	fams, err := TryScrape(url)
	if err != nil {
		tb.Fatal(err)
	}
	return fams
}

// TryScrape is Scrape returning its error, for polling an endpoint that
// may not be up yet.
func TryScrape(url string) (Families, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metricstest: scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("metricstest: scrape %s: %s: %s", url, resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("metricstest: scrape %s: content type %q, want text/plain", url, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("metricstest: parse %s: %w", url, err)
	}
	return fams, nil
}

// Find returns the metric of family name whose labels include the given
// name/value pairs (which must then pick exactly one), or an error saying
// what the family holds.
func (f Families) Find(name string, labels ...string) (*dto.Metric, *dto.MetricFamily, error) {
	if len(labels)%2 != 0 {
		return nil, nil, fmt.Errorf("metricstest: labels of %s: want name/value pairs, got %q", name, labels)
	}
	fam := f[name]
	if fam == nil {
		return nil, nil, fmt.Errorf("metricstest: no metric %s (have %s)", name, strings.Join(f.Names(), ", "))
	}
	var found []*dto.Metric
	for _, m := range fam.GetMetric() {
		if hasLabels(m, labels) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return nil, nil, fmt.Errorf("metricstest: %s%s matches %d series, want 1; the family holds %s", name, fmtLabels(labels), len(found), describe(fam))
	}
	return found[0], fam, nil
}

// Value returns the value of a counter, gauge or untyped series; for a
// histogram, its count of observations.
func (f Families) Value(tb testing.TB, name string, labels ...string) float64 {
	tb.Helper()
	m, fam, err := f.Find(name, labels...)
	if err != nil {
		tb.Fatal(err)
	}
	return value(m, fam.GetType())
}

// Histogram returns the count and sum of a histogram series.
func (f Families) Histogram(tb testing.TB, name string, labels ...string) (count uint64, sum float64) {
	tb.Helper()
	m, fam, err := f.Find(name, labels...)
	if err != nil {
		tb.Fatal(err)
	}
	if fam.GetType() != dto.MetricType_HISTOGRAM {
		tb.Fatalf("metricstest: %s is a %s, not a histogram", name, fam.GetType())
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// Type returns the type of family name, failing the test when it is absent.
func (f Families) Type(tb testing.TB, name string) dto.MetricType {
	tb.Helper()
	fam := f[name]
	if fam == nil {
		tb.Fatalf("metricstest: no metric %s (have %s)", name, strings.Join(f.Names(), ", "))
	}
	return fam.GetType()
}

// LabelValues returns the values label takes across family name, sorted.
func (f Families) LabelValues(name, label string) []string {
	var out []string
	for _, m := range f[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				out = append(out, lp.GetValue())
			}
		}
	}
	sort.Strings(out)
	return out
}

// Names returns the family names, sorted.
func (f Families) Names() []string {
	out := make([]string, 0, len(f))
	for n := range f {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func value(m *dto.Metric, t dto.MetricType) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i < len(labels); i += 2 {
		ok := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func fmtLabels(labels []string) string {
	if len(labels) == 0 {
		return ""
	}
	var parts []string
	for i := 0; i+1 < len(labels); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func describe(fam *dto.MetricFamily) string {
	var parts []string
	for _, m := range fam.GetMetric() {
		var ls []string
		for _, lp := range m.GetLabel() {
			ls = append(ls, lp.GetName(), lp.GetValue())
		}
		parts = append(parts, fmt.Sprintf("%s %g", fmtLabels(ls), value(m, fam.GetType())))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

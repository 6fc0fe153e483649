package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The architecture's import rules, checked rather than only stated (as
// tailscale's depaware does). Two kinds:
//
//   - layering rules, below, that no package doc can loosen;
//   - the sentence "Only A, B and C import it." in a package's doc comment,
//     which this test parses and enforces for that package.
//
// Only non-test files count: tests may import fakes and harnesses freely.
// Every file is parsed whatever its build tags, so a rule holds on every
// platform.

// layering lists packages (by prefix) that must never import others.
var layering = []struct {
	from, why string
	never     []string
	// allow lists the one import (importer → imported) a rule permits.
	allow map[string]string
}{
	{"wg", "the WireGuard device knows nothing of contracts, control or the agent engine",
		[]string{"api", "internal/agent", "internal/control", "internal/controlclient", "roles", "store"}, nil},
	{"nat", "ICE and TURN know nothing of contracts, control or the agent engine",
		[]string{"api", "internal/agent", "internal/control", "internal/controlclient", "roles", "store"}, nil},
	{"store", "the store knows nothing of services", []string{"api", "internal", "roles", "wg", "nat"},
		// the PostgreSQL implementation of the replicas' contract
		map[string]string{"store/pgcluster": "internal/cluster"}},
	{"internal", "logic never reaches up into the wiring", []string{"roles"}, nil},
	{"api", "contracts import no logic", []string{"internal", "roles", "store", "wg", "nat"}, nil},
}

// wired lists packages whose importers are fixed by the layout itself.
var wired = map[string][]string{
	"roles": {"main", "roles/all"}, // roles wire; main and `all` compose them
	"store": {"internal/control", "roles/control"},
}

type pkgInfo struct {
	imports map[string]bool // meshd-relative paths ("main" is the module root)
	doc     string
}

// loadPackages parses every non-test Go file under root.
func loadPackages(t *testing.T, root string) map[string]*pkgInfo {
	t.Helper()
	pkgs := map[string]*pkgInfo{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if pkg == "." {
			pkg = "main"
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		p := pkgs[pkg]
		if p == nil {
			p = &pkgInfo{imports: map[string]bool{}}
			pkgs[pkg] = p
		}
		if f.Doc != nil && strings.Contains(f.Doc.Text(), "Package ") {
			p.doc += f.Doc.Text()
		}
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			if ip == "meshd" {
				p.imports["main"] = true
			} else if rest, ok := strings.CutPrefix(ip, "meshd/"); ok {
				p.imports[rest] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// under reports whether pkg is prefix or inside it.
func under(pkg, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, "/")
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

var parens = regexp.MustCompile(`\s*\([^)]*\)`)

var onlyRule = regexp.MustCompile(`Only ([^.;:]+?) imports? (?:it|this package)\b`)

// docImporters returns the importers a package doc allows ("Only A, B and C
// import it."), and whether the doc states such a rule. "tests" and
// "benchmarks" name test files, which this test does not restrict.
func docImporters(doc string) ([]string, bool) {
	doc = parens.ReplaceAllString(strings.Join(strings.Fields(doc), " "), "")
	m := onlyRule.FindStringSubmatch(doc)
	if m == nil {
		return nil, false
	}
	var out []string
	for _, part := range strings.Split(strings.ReplaceAll(m[1], " and ", ", "), ",") {
		part = strings.TrimSpace(part)
		switch part {
		case "", "tests", "benchmarks":
			continue
		}
		out = append(out, strings.TrimSuffix(part, "/"))
	}
	return out, true
}

func TestImportRules(t *testing.T) {
	root, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	pkgs := loadPackages(t, root)
	if len(pkgs) < 20 || pkgs["internal/agent"] == nil || pkgs["wg"] == nil {
		t.Fatalf("found %d packages; the walk missed the tree", len(pkgs))
	}
	// Imports must be recorded, or every rule below would hold vacuously.
	if !pkgs["internal/agent"].imports["wg"] || !pkgs["main"].imports["roles/agent"] {
		t.Fatal("known imports (internal/agent → wg, main → roles/agent) not recorded; the import parser is broken")
	}
	names := make([]string, 0, len(pkgs))
	for n := range pkgs {
		names = append(names, n)
	}
	sort.Strings(names)

	allowed := func(importer string, list []string) bool {
		for _, a := range list {
			if under(importer, a) {
				return true
			}
		}
		return false
	}
	stated := 0
	for _, target := range names {
		list, ok := docImporters(pkgs[target].doc)
		if !ok {
			continue
		}
		stated++
		for _, a := range list {
			if a != "main" && !hasPackageUnder(pkgs, a) {
				t.Errorf("%s: its doc allows importer %q, which is no package here", target, a)
			}
		}
		for _, from := range names {
			if from != target && pkgs[from].imports[target] && !allowed(from, list) && !under(from, target) {
				t.Errorf("%s imports %s; its doc says only %s import it", from, target, strings.Join(list, ", "))
			}
		}
	}
	if stated < 10 {
		t.Errorf("only %d package docs state who imports them; the parser lost the sentence", stated)
	}
	for prefix, list := range wired {
		for _, from := range names {
			for imp := range pkgs[from].imports {
				if under(imp, prefix) && !under(from, prefix) && !allowed(from, list) {
					t.Errorf("%s imports %s; only %s may import %s/", from, imp, strings.Join(list, ", "), prefix)
				}
			}
		}
	}
	// roles/ import one another only through roles/all.
	for _, from := range names {
		for imp := range pkgs[from].imports {
			if under(from, "roles") && from != "roles/all" && under(imp, "roles") {
				t.Errorf("%s imports %s; only roles/all composes roles", from, imp)
			}
		}
	}
	for _, r := range layering {
		for _, from := range names {
			if !under(from, r.from) {
				continue
			}
			for imp := range pkgs[from].imports {
				for _, never := range r.never {
					if under(imp, never) && r.allow[from] != imp {
						t.Errorf("%s imports %s: %s", from, imp, r.why)
					}
				}
			}
		}
	}
}

func hasPackageUnder(pkgs map[string]*pkgInfo, prefix string) bool {
	for n := range pkgs {
		if under(n, prefix) {
			return true
		}
	}
	return false
}

// TestImportRulesCatch makes sure the checks above can fail: the rule
// parser reads the sentences as written in the package docs.
func TestImportRulesCatch(t *testing.T) {
	for doc, want := range map[string]string{
		"Package x does y. Only internal/agent imports it.":                         "internal/agent",
		"Package x. Only main and roles/ import it; the rest do not.":               "main roles",
		"Package x. Only tests, bench/relay and roles/all import\n// it.":           "bench/relay roles/all",
		"Package x. Only internal/control, roles/control and tests import it.":      "internal/control roles/control",
		"Package x. Only wg (its kernel device) and nat (for\n// tests) import it.": "wg nat",
	} {
		got, ok := docImporters(strings.ReplaceAll(doc, "// ", ""))
		if !ok || strings.Join(got, " ") != want {
			t.Errorf("docImporters(%q) = %q, %v; want %q", doc, got, ok, want)
		}
	}
	if _, ok := docImporters("Package x. Anyone may import it."); ok {
		t.Error("a package anyone may import states no rule")
	}
}

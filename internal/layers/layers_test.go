// Package layers holds the test that keeps the module's import graph one
// way: each production package imports only packages of lower layers.
package layers

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// module is the import path prefix of this repository's packages.
const module = "github.com/l2tpv3-netdev/l2tpv3-netdev/"

// layer is each production package's floor, the README's "How it is
// built" picture from the bottom up: a package may import only packages on
// a lower floor, and the floor-0 ones import no sibling.
var layer = map[string]int{
	"l2tp": 0, "vhostuser": 0, "qmp": 0, "impair": 0,
	"pump":    1,
	"capture": 2, "frontend": 2,
	"backend": 3,
	"admin":   4, "metrics": 4, "config": 4,
	"plug":              5,
	"cmd/l2tpv3-netdev": 6,
}

// only narrows what some packages may import below their floor: the pump
// knows its two interfaces, not the front ends (vhostuser) nor capture; it
// reads l2tp's drop reasons and runs impair's lines.
var only = map[string][]string{
	"pump": {"l2tp", "impair"},
}

// testOnly are packages for tests and tools: no production package may
// import them.
var testOnly = []string{"pump/pumptest", "vhostuser/vhosttest", "l2tp/l2tplayer", "internal/"}

// TestImportsPointDown parses every production file (no _test.go, nothing
// under test/) and checks its module imports against the floors.
func TestImportsPointDown(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	imports := map[string]map[string]bool{} // package → module packages it imports
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == "test" || strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		pkg := filepath.ToSlash(filepath.Dir(rel))
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if dep, ok := strings.CutPrefix(p, module); ok {
				if imports[pkg] == nil {
					imports[pkg] = map[string]bool{}
				}
				imports[pkg][dep] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for pkg, deps := range imports {
		if isTestOnly(pkg) {
			continue
		}
		floor, ok := layer[pkg]
		if !ok {
			t.Errorf("package %s has no floor in layers_test.go: give it one (and a place in the README picture)", pkg)
			continue
		}
		for _, dep := range sorted(deps) {
			switch {
			case isTestOnly(dep):
				t.Errorf("%s imports %s, which is for tests only", pkg, dep)
			case layer[dep] >= floor:
				t.Errorf("%s (floor %d) imports %s (floor %d): imports must point down", pkg, floor, dep, layer[dep])
			case only[pkg] != nil && !slices.Contains(only[pkg], dep):
				t.Errorf("%s imports %s: it may import only %v", pkg, dep, only[pkg])
			}
		}
	}
}

// isTestOnly reports whether pkg is one of the test-support packages.
func isTestOnly(pkg string) bool {
	for _, p := range testOnly {
		if pkg == p || strings.HasSuffix(p, "/") && strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}

// sorted lists a set's members in order, for stable messages.
func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

package tokenservice

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// documentedRoutes reads "METHOD /path" for every operation under paths:
// in openapi.yaml. The document is indented by two spaces per level, so a
// path is a key at level 1 and a method a key at level 2.
func documentedRoutes(t *testing.T, doc []byte) []string {
	t.Helper()
	pathKey := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodKey := regexp.MustCompile(`^    (get|put|post|delete|patch|head|options|trace):\s*$`)
	var out []string
	inPaths, path := false, ""
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' && line[0] != '#' {
			inPaths = strings.HasPrefix(line, "paths:")
			continue
		}
		if !inPaths {
			continue
		}
		if m := pathKey.FindStringSubmatch(line); m != nil {
			path = m[1]
		} else if m := methodKey.FindStringSubmatch(line); m != nil && path != "" {
			out = append(out, strings.ToUpper(m[1])+" "+path)
		}
	}
	if len(out) == 0 {
		t.Fatal("no operations found under paths: in openapi.yaml")
	}
	slices.Sort(out)
	return out
}

// Every route the mux serves is in the OpenAPI document, and every
// operation of the document is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	var served []string
	for _, rt := range routes {
		served = append(served, rt.method+" "+rt.path)
	}
	slices.Sort(served)
	documented := documentedRoutes(t, openAPIDocument)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is served but not in openapi.yaml", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("openapi.yaml documents %s, which is not served", r)
		}
	}
}

// Every problem type is documented in the OpenAPI document's prose or the
// docs, and has a title and a status.
func TestProblemTypesComplete(t *testing.T) {
	t.Parallel()
	if len(titles) != len(statuses) {
		t.Fatalf("%d titles, %d statuses", len(titles), len(statuses))
	}
	for typ := range titles {
		if statuses[typ] == 0 {
			t.Errorf("problem type %s has no status", typ)
		}
		if !strings.HasPrefix(typ, problemBase) {
			t.Errorf("problem type %s does not start with %s", typ, problemBase)
		}
	}
}

// Every problem type has its anchor in docs/token-service.md, so its URI
// leads somewhere.
func TestProblemTypesDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "token-service.md"))
	if err != nil {
		t.Fatal(err)
	}
	for typ := range titles {
		anchor := `<a id="` + strings.TrimPrefix(typ, "https://github.com/batonhq/baton/blob/main/docs/token-service.md#") + `"></a>`
		if !bytes.Contains(doc, []byte(anchor)) {
			t.Errorf("docs/token-service.md lacks %s for %s", anchor, typ)
		}
	}
}

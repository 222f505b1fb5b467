package docs_test

// This file keeps docs/protocol.md true. The first part parses the
// specification (its tables are marked with <!-- table: name --> comments
// and its examples with <!-- example: name -->) and compares it with the
// code: header names, problem types, JSON fields, routes, limits and
// examples. The second part runs, end to end over httptest with real
// engines and in-memory stores, the behaviour the tables state.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/batonhq/baton"
	"github.com/batonhq/baton/backend/memory"
	"github.com/batonhq/baton/engine"
	"github.com/batonhq/baton/httpsignal"
	"github.com/batonhq/baton/internal/testclock"
	"github.com/batonhq/baton/internal/testenv"
	"github.com/batonhq/baton/store"
	"github.com/batonhq/baton/tokenservice"
	"github.com/batonhq/baton/tokenservice/client"
	"github.com/batonhq/baton/transport"
	natstransport "github.com/batonhq/baton/transport/nats"
	"github.com/batonhq/baton/transport/rabbitmq"
)

// Where the documents and the code are, relative to this package.
const (
	specFile   = "protocol.md"
	moduleRoot = ".."

	httpProblemBase  = "https://github.com/batonhq/baton/blob/main/docs/protocol.md#problem-"
	tokenProblemBase = "https://github.com/batonhq/baton/blob/main/docs/token-service.md#problem-"
)

// ---------------------------------------------------------------------------
// Reading the specification

// spec is protocol.md, read once.
var spec = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile(specFile)
	return string(b), err
})

func readSpec(t *testing.T) string {
	t.Helper()
	s, err := spec()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// table returns the data rows of the Markdown table that follows the
// comment <!-- table: name -->, each as its trimmed cells. Cells never
// contain '|', so splitting on it is exact.
func table(t *testing.T, name string) [][]string {
	t.Helper()
	lines := strings.Split(readSpec(t), "\n")
	marker := "<!-- table: " + name + " -->"
	start := slices.Index(lines, marker)
	if start < 0 {
		t.Fatalf("%s has no %s", specFile, marker)
	}
	var rows [][]string
	width := 0
	for i := start + 1; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		if line == "" && len(rows) == 0 && width == 0 {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		switch {
		case width == 0: // the header row
			width = len(cells)
		case strings.Trim(strings.Join(cells, ""), "-: ") == "": // the separator
		case len(cells) != width:
			t.Fatalf("table %s: row %q has %d cells, the header %d", name, line, len(cells), width)
		default:
			rows = append(rows, cells)
		}
	}
	if len(rows) == 0 {
		t.Fatalf("table %s has no rows", name)
	}
	return rows
}

// example returns the body of the fenced code block that follows the
// comment <!-- example: name -->.
func example(t *testing.T, name string) string {
	t.Helper()
	s := readSpec(t)
	marker := "<!-- example: " + name + " -->"
	i := strings.Index(s, marker)
	if i < 0 {
		t.Fatalf("%s has no %s", specFile, marker)
	}
	rest := s[i+len(marker):]
	open := strings.Index(rest, "```")
	if open < 0 {
		t.Fatalf("example %s has no code block", name)
	}
	rest = rest[open+3:]
	rest = rest[strings.Index(rest, "\n")+1:] // skip the info string
	end := strings.Index(rest, "```")
	if end < 0 {
		t.Fatalf("example %s: code block not closed", name)
	}
	return rest[:end]
}

var backticked = regexp.MustCompile("`([^`]+)`")

// ticks returns the backticked parts of a cell.
func ticks(cell string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// tick returns the one backticked part of a cell, or "" for "none".
func tick(t *testing.T, cell string) string {
	t.Helper()
	if cell == "none" {
		return ""
	}
	parts := ticks(cell)
	if len(parts) != 1 {
		t.Fatalf("cell %q: want one backticked name or none", cell)
	}
	return parts[0]
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("%q is not a number: %v", s, err)
	}
	return n
}

// sameSet fails t unless got and want hold the same strings.
func sameSet(t *testing.T, what string, got, want []string) {
	t.Helper()
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("%s: %q is in the specification but not in the code", what, g)
		}
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s: %q is in the code but not in the specification", what, w)
		}
	}
}

// ---------------------------------------------------------------------------
// Reading constants from source, so that unexported limits and every
// exported name of a package (including ones added later) are compared.

var constCache sync.Map // dir -> map[string]constant.Value

// packageConsts evaluates the constants of the Go package in dir (relative
// to the module root; "" is the root package) whose values are literals,
// other constants of the package, and arithmetic or concatenation of those.
// Others (time.Second multiples, iota) are left out.
func packageConsts(t *testing.T, dir string) map[string]constant.Value {
	t.Helper()
	if v, ok := constCache.Load(dir); ok {
		return v.(map[string]constant.Value)
	}
	path := filepath.Join(moduleRoot, dir)
	entries, err := os.ReadDir(path)
	if err != nil {
		t.Fatal(err)
	}
	exprs := map[string]ast.Expr{}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(path, name), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if i < len(vs.Values) {
						exprs[id.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	values := map[string]constant.Value{}
	var eval func(e ast.Expr, depth int) constant.Value
	eval = func(e ast.Expr, depth int) (v constant.Value) {
		defer func() {
			if recover() != nil { // mismatched kinds: not a constant we read
				v = nil
			}
		}()
		if depth > 20 {
			return nil
		}
		switch e := e.(type) {
		case *ast.BasicLit:
			return constant.MakeFromLiteral(e.Value, e.Kind, 0)
		case *ast.ParenExpr:
			return eval(e.X, depth+1)
		case *ast.Ident:
			if x, ok := exprs[e.Name]; ok {
				return eval(x, depth+1)
			}
		case *ast.BinaryExpr:
			x, y := eval(e.X, depth+1), eval(e.Y, depth+1)
			if x == nil || y == nil {
				return nil
			}
			if e.Op == token.SHL || e.Op == token.SHR {
				s, ok := constant.Uint64Val(y)
				if !ok {
					return nil
				}
				return constant.Shift(x, e.Op, uint(s))
			}
			return constant.BinaryOp(x, e.Op, y)
		}
		return nil
	}
	for name, e := range exprs {
		if v := eval(e, 0); v != nil && v.Kind() != constant.Unknown {
			values[name] = v
		}
	}
	constCache.Store(dir, values)
	return values
}

// stringConsts returns the string constants of dir whose names start with
// prefix, by name.
func stringConsts(t *testing.T, dir, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for name, v := range packageConsts(t, dir) {
		if strings.HasPrefix(name, prefix) && v.Kind() == constant.String {
			out[name] = constant.StringVal(v)
		}
	}
	return out
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

func dirExists(dir string) bool {
	fi, err := os.Stat(filepath.Join(moduleRoot, dir))
	return err == nil && fi.IsDir()
}

// problemNames returns the problem types among a package's constants as
// the names after base; every one must start with base.
func problemNames(t *testing.T, dir, base string) []string {
	t.Helper()
	var out []string
	for name, uri := range stringConsts(t, dir, "Problem") {
		if !strings.HasPrefix(uri, "https://") {
			continue // ProblemContentType
		}
		if !strings.HasPrefix(uri, base) {
			t.Errorf("%s.%s = %q does not start with %s", dir, name, uri, base)
			continue
		}
		out = append(out, strings.TrimPrefix(uri, base))
	}
	slices.Sort(out)
	return out
}

// The reader of constants agrees with the compiler where both can look.
func TestConstantReaderAgreesWithCompiler(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		dir, name string
		want      any
	}{
		{"", "MaxPayloadBytes", int64(baton.MaxPayloadBytes)},
		{"tokenservice", "DefaultMaxBodyBytes", int64(tokenservice.DefaultMaxBodyBytes)},
		{"httpsignal", "ProblemRejected", httpsignal.ProblemRejected},
		{"httpsignal", "HeaderIdempotencyKey", httpsignal.HeaderIdempotencyKey},
		{"tokenservice", "ProblemNotApplied", tokenservice.ProblemNotApplied},
		{"transport/nats", "HeaderParkDropped", natstransport.HeaderParkDropped},
		{"transport/nats", "HeaderToken", natstransport.HeaderToken},
	} {
		v, ok := packageConsts(t, c.dir)[c.name]
		if !ok {
			t.Errorf("%s.%s not read", c.dir, c.name)
			continue
		}
		var got any
		if v.Kind() == constant.String {
			got = constant.StringVal(v)
		} else {
			got, _ = constant.Int64Val(v)
		}
		if got != c.want {
			t.Errorf("%s.%s read as %v, compiled as %v", c.dir, c.name, got, c.want)
		}
	}
}

// ---------------------------------------------------------------------------
// The specification's tables against the code

func TestHeaderTablesMatchCode(t *testing.T) {
	t.Parallel()
	// HTTP: request and answer headers together are httpsignal's Header*
	// constants. HTTP header names are case-insensitive.
	var documented []string
	for _, name := range []string{"http-request-headers", "http-answer-headers"} {
		for _, row := range table(t, name) {
			h := textproto.CanonicalMIMEHeaderKey(tick(t, row[0]))
			if !slices.Contains(documented, h) {
				documented = append(documented, h)
			}
		}
	}
	var code []string
	for _, v := range values(stringConsts(t, "httpsignal", "Header")) {
		code = append(code, textproto.CanonicalMIMEHeaderKey(v))
	}
	sameSet(t, "HTTP headers", documented, code)

	// Brokers: exact names, which are case-sensitive there.
	rows := table(t, "broker-headers")
	for col, dir := range map[int]string{2: "transport/nats", 3: "transport/rabbitmq"} {
		if !dirExists(dir) {
			t.Logf("%s does not exist; its column is not checked", dir)
			continue
		}
		var documented []string
		for _, row := range rows {
			switch row[col] {
			case "yes":
				documented = append(documented, tick(t, row[0]))
			case "no":
			default:
				t.Errorf("broker-headers: %q in column %d, want yes or no", row[col], col)
			}
		}
		sameSet(t, dir+" headers", documented, values(stringConsts(t, dir, "Header")))
	}

	// Baton-Outcome values.
	var outcomes []string
	for _, row := range table(t, "http-outcomes") {
		outcomes = append(outcomes, tick(t, row[0]))
	}
	sameSet(t, "Baton-Outcome values", outcomes, values(stringConsts(t, "httpsignal", "Outcome")))
}

func TestProblemTablesMatchCode(t *testing.T) {
	t.Parallel()
	doc := readSpec(t)
	for _, base := range []string{httpProblemBase, tokenProblemBase} {
		if !strings.Contains(doc, "`"+base+"`") {
			t.Errorf("%s does not state the problem type base %s", specFile, base)
		}
	}

	// httpsignal: the signal answers and the root token answers.
	statuses := map[string]int{}
	for _, name := range []string{"http-answers", "http-root-answers"} {
		for _, row := range table(t, name) {
			problemCol := 2
			if name == "http-root-answers" {
				problemCol = 1
			}
			p := tick(t, row[problemCol])
			if p == "" {
				continue
			}
			status := atoi(t, row[0])
			if s, seen := statuses[p]; seen && s != status {
				t.Errorf("problem type %s has status %d in one table and %d in another", p, s, status)
			}
			statuses[p] = status
		}
	}
	sameSet(t, "httpsignal problem types", slices.Sorted(maps.Keys(statuses)), problemNames(t, "httpsignal", httpProblemBase))

	// The outcome and problem of the two 409 answers go together.
	for _, row := range table(t, "http-answers") {
		outcome, problem := tick(t, row[1]), tick(t, row[2])
		switch outcome {
		case "duplicate":
			if problem != "already-processed" || row[0] != "409" {
				t.Errorf("duplicate goes with 409 already-processed, not %s %s", row[0], problem)
			}
		case "in-progress":
			if problem != "in-progress" || row[0] != "409" {
				t.Errorf("in-progress goes with 409 in-progress, not %s %s", row[0], problem)
			}
		case "applied", "replayed":
			if problem != "" || row[0] != "200" {
				t.Errorf("%s goes with 200 and no problem, not %s %s", outcome, row[0], problem)
			}
		}
	}

	// The token service.
	var names []string
	for _, row := range table(t, "token-service-problems") {
		names = append(names, tick(t, row[1]))
		atoi(t, row[0])
	}
	sameSet(t, "token service problem types", names, problemNames(t, "tokenservice", tokenProblemBase))
}

// Every problem type URI leads to exactly one anchor in the document it
// names, and protocol.md has no anchor that no problem type uses.
func TestProblemAnchorsExist(t *testing.T) {
	t.Parallel()
	const blob = "https://github.com/batonhq/baton/blob/main/"
	used := map[string]bool{}
	for _, dir := range []string{"httpsignal", "tokenservice"} {
		for name, uri := range stringConsts(t, dir, "Problem") {
			if !strings.HasPrefix(uri, "https://") {
				continue
			}
			file, frag, ok := strings.Cut(strings.TrimPrefix(uri, blob), "#")
			if !ok || !strings.HasPrefix(uri, blob) {
				t.Errorf("%s.%s = %q is not a link into the repository", dir, name, uri)
				continue
			}
			text, err := os.ReadFile(filepath.Join(moduleRoot, file))
			if err != nil {
				t.Errorf("%s.%s links to %s: %v", dir, name, file, err)
				continue
			}
			anchor := `<a id="` + frag + `"></a>`
			if n := strings.Count(string(text), anchor); n != 1 {
				t.Errorf("%s has %d anchors %s for %s.%s, want 1", file, n, anchor, dir, name)
			}
			if file == "docs/"+specFile {
				used[frag] = true
			}
		}
	}
	for _, m := range regexp.MustCompile(`<a id="(problem-[^"]+)"></a>`).FindAllStringSubmatch(readSpec(t), -1) {
		if !used[m[1]] {
			t.Errorf("%s has anchor %s, which no problem type links to", specFile, m[1])
		}
	}
}

// openAPIRoutes reads "METHOD /path" and the response codes of each
// operation from openapi.yaml, indented two spaces per level.
func openAPIRoutes(t *testing.T) map[string][]int {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(moduleRoot, "tokenservice", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pathKey := regexp.MustCompile(`^  (/\S*):\s*$`)
	methodKey := regexp.MustCompile(`^    (get|put|post|delete|patch|head|options|trace):\s*$`)
	codeKey := regexp.MustCompile(`^        "(\d{3})":`)
	routes := map[string][]int{}
	inPaths, path, route := false, "", ""
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' && line[0] != '#' {
			inPaths = strings.HasPrefix(line, "paths:")
			continue
		}
		switch {
		case !inPaths:
		case pathKey.MatchString(line):
			path, route = pathKey.FindStringSubmatch(line)[1], ""
		case methodKey.MatchString(line):
			route = strings.ToUpper(methodKey.FindStringSubmatch(line)[1]) + " " + path
			routes[route] = nil
		case route != "" && codeKey.MatchString(line):
			code, _ := strconv.Atoi(codeKey.FindStringSubmatch(line)[1])
			routes[route] = append(routes[route], code)
		}
	}
	if len(routes) == 0 {
		t.Fatal("no operations found in openapi.yaml")
	}
	return routes
}

func TestTokenServiceEndpointsMatchOpenAPI(t *testing.T) {
	t.Parallel()
	documented := openAPIRoutes(t)
	var listed, inAPI []string
	for route := range documented {
		inAPI = append(inAPI, route)
	}
	for _, row := range table(t, "token-service-endpoints") {
		route := row[0] + " " + tick(t, row[1])
		listed = append(listed, route)
		var statuses []int
		for _, s := range strings.Split(row[5], ",") {
			statuses = append(statuses, atoi(t, s))
		}
		codes, ok := documented[route]
		if !ok {
			continue // reported by sameSet below
		}
		slices.Sort(statuses)
		sorted := slices.Sorted(slices.Values(codes))
		if !slices.Equal(statuses, sorted) {
			t.Errorf("%s: the specification lists statuses %v, openapi.yaml %v", route, statuses, sorted)
		}
		success := atoi(t, strings.TrimSuffix(strings.Fields(row[4])[0], ","))
		var twoXX []int
		for _, c := range codes {
			if c/100 == 2 {
				twoXX = append(twoXX, c)
			}
		}
		if len(twoXX) != 1 || twoXX[0] != success {
			t.Errorf("%s: success %d in the specification, 2xx %v in openapi.yaml", route, success, twoXX)
		}
	}
	sameSet(t, "token service routes", listed, inAPI)
}

func TestLimitsMatchCode(t *testing.T) {
	t.Parallel()
	// The limits every implementation must know; the table must list them.
	compiled := map[string]int64{
		"baton.MaxPayloadBytes":            baton.MaxPayloadBytes,
		"baton.MaxNameBytes":               baton.MaxNameBytes,
		"store.MaxTokensPerTransition":     store.MaxTokensPerTransition,
		"store.DefaultPageLimit":           store.DefaultPageLimit,
		"store.MaxPageLimit":               store.MaxPageLimit,
		"store.MaxEntityKeyBytes":          store.MaxEntityKeyBytes,
		"tokenservice.DefaultMaxBodyBytes": tokenservice.DefaultMaxBodyBytes,
		"tokenservice.MaxExpireLimit":      tokenservice.MaxExpireLimit,
		"tokenservice.MaxBatch":            tokenservice.MaxBatch,
	}
	seen := map[string]bool{}
	for _, row := range table(t, "limits") {
		ref := tick(t, row[2])
		want := int64(atoi(t, row[1]))
		seen[ref] = true
		cut := strings.LastIndex(ref, ".")
		pkg, name := ref[:cut], ref[cut+1:]
		dir := pkg
		if pkg == "baton" {
			dir = ""
		}
		if !dirExists(dir) {
			t.Logf("%s: package %s does not exist; not checked", ref, pkg)
			continue
		}
		v, ok := packageConsts(t, dir)[name]
		if !ok {
			t.Errorf("%s: no such constant", ref)
			continue
		}
		got, exact := constant.Int64Val(v)
		if !exact || got != want {
			t.Errorf("%s = %v in the code, %d in the specification", ref, v, want)
		}
		if c, ok := compiled[ref]; ok && c != want {
			t.Errorf("%s = %d compiled, %d in the specification", ref, c, want)
		}
	}
	for ref := range compiled {
		if !seen[ref] {
			t.Errorf("the limits table lacks %s", ref)
		}
	}
	// The prose repeats the two limits every signal meets.
	doc := readSpec(t)
	for _, phrase := range []string{
		fmt.Sprintf("1 MiB (%d bytes)", baton.MaxPayloadBytes),
		fmt.Sprintf("1 to %d bytes of UTF-8", baton.MaxNameBytes),
		fmt.Sprintf("at most %d tokens to create", store.MaxTokensPerTransition),
		fmt.Sprintf("`limit` 0 or absent is %d, above %d\nis %d", store.DefaultPageLimit, store.MaxPageLimit, store.MaxPageLimit),
		fmt.Sprintf("deletes at most %d roots", tokenservice.MaxExpireLimit),
	} {
		if !strings.Contains(doc, phrase) {
			t.Errorf("%s does not say %q", specFile, phrase)
		}
	}
}

var tokenIDLike = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestTokenIDExamples(t *testing.T) {
	t.Parallel()
	for _, row := range table(t, "token-id-examples") {
		text := tick(t, row[0])
		_, err := baton.ParseTokenID(text)
		valid := strings.HasPrefix(row[1], "yes")
		if !valid && !strings.HasPrefix(row[1], "no") {
			t.Fatalf("token-id-examples: %q, want yes or no: ...", row[1])
		}
		if (err == nil) != valid {
			t.Errorf("ParseTokenID(%q) = %v; the specification says %s", text, err, row[1])
		}
		if valid != tokenIDLike.MatchString(text) {
			t.Errorf("%q: the rule of 32 lowercase hex digits and the table disagree", text)
		}
	}
	// The zero id parses but is refused where an id is required.
	zero := strings.Repeat("0", 32)
	if id, err := baton.ParseTokenID(zero); err != nil || !id.IsZero() {
		t.Errorf("ParseTokenID(zero) = %v, %v", id, err)
	}
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set(httpsignal.HeaderToken, zero)
	req.Header.Set(httpsignal.HeaderConversation, zero)
	req.Header.Set(httpsignal.HeaderType, "t")
	req.Header.Set(httpsignal.HeaderDestination, "d")
	if _, err := httpsignal.DecodeRequest(req, 0); !errors.Is(err, httpsignal.ErrMalformed) {
		t.Errorf("a signal with the zero token id: %v, want ErrMalformed", err)
	}

	// Every id in the examples is a token id.
	ids := regexp.MustCompile(`"(id|conversation|causation|consume|token)"\s*:\s*"([^"]*)"|(?m)^(?:Baton-Token|Baton-Conversation|Baton-Causation): (\S*)$|Idempotency-Key: "([^"]*)"`)
	n := 0
	for _, block := range regexp.MustCompile("(?s)```[a-z]*\n(.*?)```").FindAllStringSubmatch(readSpec(t), -1) {
		for _, m := range ids.FindAllStringSubmatch(block[1], -1) {
			id := m[2] + m[3] + m[4]
			if parsed, err := baton.ParseTokenID(id); err != nil || parsed.IsZero() {
				t.Errorf("example id %q: %v", id, err)
			}
			n++
		}
	}
	if n < 10 {
		t.Errorf("found only %d ids in the examples", n)
	}
}

func TestDigestExamples(t *testing.T) {
	t.Parallel()
	for _, row := range table(t, "digest-examples") {
		payload := ""
		if row[0] != "(empty)" {
			payload = tick(t, row[0])
		}
		want := tick(t, row[1])
		if got := baton.DigestOf([]byte(payload)).String(); got != want {
			t.Errorf("digest of %q is %s, the specification says %s", payload, got, want)
		}
	}
	// Digests in the examples are 64 lowercase hex digits of a payload in
	// the table.
	var known []string
	for _, row := range table(t, "digest-examples") {
		known = append(known, tick(t, row[1]))
	}
	for _, m := range regexp.MustCompile(`"(?:payload_)?digest"\s*:\s*"([^"]*)"`).FindAllStringSubmatch(readSpec(t), -1) {
		if !slices.Contains(known, m[1]) {
			t.Errorf("example digest %q is not one of the digest examples", m[1])
		}
	}
}

// strictDecode decodes exactly one JSON value into v, refusing unknown
// fields, as the token service and the root endpoint do.
func strictDecode(t *testing.T, name, text string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("example %s: %v", name, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("example %s: more than one JSON value", name)
	}
}

func TestExamplesDecode(t *testing.T) {
	t.Parallel()
	known := []string{"http-signal", "httpsignal.RootRequest", "httpsignal.RootResponse", "tokenservice.Token",
		"tokenservice.TransitionRequest", "tokenservice.TransitionResponse", "tokenservice.ExpirationRequest"}
	for _, m := range regexp.MustCompile(`<!-- example: (\S+) -->`).FindAllStringSubmatch(readSpec(t), -1) {
		if !slices.Contains(known, m[1]) {
			t.Errorf("example %s is checked by no test", m[1])
		}
	}

	// The HTTP signal decodes, and the token example authorises it.
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(example(t, "http-signal"))))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := httpsignal.DecodeRequest(req, 0)
	if err != nil {
		t.Fatalf("the example signal does not decode: %v", err)
	}
	if string(sig.Payload) != `{"amount":12}` || sig.Trace.Parent == "" || sig.Causation.IsZero() {
		t.Errorf("example signal decoded as %+v", sig)
	}
	var tok tokenservice.Token
	strictDecode(t, "tokenservice.Token", example(t, "tokenservice.Token"), &tok)
	decoded, err := tok.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.ValidateToken(decoded); err != nil {
		t.Fatal(err)
	}
	want := sig.Token()
	want.CreatedAt = decoded.CreatedAt
	if decoded != want {
		t.Errorf("the example token %+v does not authorise the example signal (%+v)", decoded, want)
	}
	if tokenservice.FormatTime(decoded.CreatedAt) != tok.CreatedAt {
		t.Errorf("created_at %q is not in the API's time format", tok.CreatedAt)
	}

	// A transition that creates a child of the consumed token.
	var tr tokenservice.TransitionRequest
	strictDecode(t, "tokenservice.TransitionRequest", example(t, "tokenservice.TransitionRequest"), &tr)
	consume, err := baton.ParseTokenID(tr.Consume)
	if err != nil {
		t.Fatal(err)
	}
	var create []baton.Token
	for _, j := range tr.Create {
		c, err := j.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if c.Conversation != consume || c.Causation != consume {
			t.Errorf("example transition creates %s, which is not a child of %s", c.ID, consume)
		}
		create = append(create, c)
	}
	if err := store.ValidateTransition(consume, create); err != nil {
		t.Errorf("example transition: %v", err)
	}
	var resp tokenservice.TransitionResponse
	strictDecode(t, "tokenservice.TransitionResponse", example(t, "tokenservice.TransitionResponse"), &resp)
	var exp tokenservice.ExpirationRequest
	strictDecode(t, "tokenservice.ExpirationRequest", example(t, "tokenservice.ExpirationRequest"), &exp)
	if _, err := tokenservice.ParseTime("before", exp.Before); err != nil || exp.Limit == nil {
		t.Errorf("example expiration request: %v, limit %v", err, exp.Limit)
	}

	// The root token endpoint's bodies.
	var rootReq httpsignal.RootRequest
	strictDecode(t, "httpsignal.RootRequest", example(t, "httpsignal.RootRequest"), &rootReq)
	if rootReq.PayloadDigest != baton.DigestOf([]byte(`{"amount":12}`)).String() {
		t.Errorf("root request digest %s", rootReq.PayloadDigest)
	}
	var rootResp httpsignal.RootResponse
	strictDecode(t, "httpsignal.RootResponse", example(t, "httpsignal.RootResponse"), &rootResp)
	if rootResp.Token != rootResp.Conversation || rootResp.ExpiresAt.IsZero() {
		t.Errorf("root response %+v: the conversation is the token's id, and it expires", rootResp)
	}
}

// jsonFields returns the JSON member names of a struct type.
func jsonFields(v any) []string {
	var out []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

func TestFieldTablesMatchCode(t *testing.T) {
	t.Parallel()
	firstColumn := func(name string) []string {
		var out []string
		for _, row := range table(t, name) {
			out = append(out, tick(t, row[0]))
		}
		return out
	}
	sameSet(t, "form fields", firstColumn("form-fields"), values(stringConsts(t, "httpsignal", "Field")))
	sameSet(t, "root request fields", firstColumn("root-request-fields"), jsonFields(httpsignal.RootRequest{}))
	sameSet(t, "root response fields", firstColumn("root-response-fields"), jsonFields(httpsignal.RootResponse{}))
	sameSet(t, "token fields", firstColumn("token-fields"), jsonFields(tokenservice.Token{}))
}

// The links that http.md keeps for old readers lead to headings of
// protocol.md (GitHub's heading anchors: lower case, punctuation dropped,
// spaces as hyphens).
func TestHTTPPointerLinksResolve(t *testing.T) {
	t.Parallel()
	pointer, err := os.ReadFile("http.md")
	must(t, err)
	slugs := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(readSpec(t), "\n") {
		if strings.HasPrefix(line, "#") {
			title := strings.TrimSpace(strings.TrimLeft(line, "#"))
			slugs[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(title), ""), " ", "-")] = true
		}
	}
	links := regexp.MustCompile(`\(protocol\.md#([^)]+)\)`).FindAllStringSubmatch(string(pointer), -1)
	if len(links) == 0 {
		t.Fatal("http.md links to no section of protocol.md")
	}
	for _, m := range links {
		if !slugs[m[1]] {
			t.Errorf("http.md links to protocol.md#%s, which is no heading", m[1])
		}
	}
}

// testedByRef is `path/to/pkg.TestName` (or FuzzName), optionally with a
// /subtest.
var testedByRef = regexp.MustCompile(`^([a-z0-9_/]+)\.((Test|Fuzz)[A-Za-z0-9_]+)(/\S+)?$`)

func TestTestedByNamesExist(t *testing.T) {
	t.Parallel()
	sources := map[string]string{} // dir -> its test files, concatenated
	n := 0
	for _, line := range strings.Split(readSpec(t), "\n") {
		if !strings.HasPrefix(line, "Tested by:") {
			continue
		}
		refs := ticks(line)
		if len(refs) == 0 {
			t.Errorf("%q names no test", line)
		}
		for _, ref := range refs {
			m := testedByRef.FindStringSubmatch(ref)
			if m == nil {
				t.Errorf("%q is not package.TestName", ref)
				continue
			}
			dir := m[1]
			if dir == "baton" {
				dir = ""
			}
			src, ok := sources[dir]
			if !ok {
				files, _ := filepath.Glob(filepath.Join(moduleRoot, dir, "*_test.go"))
				var b strings.Builder
				for _, f := range files {
					data, err := os.ReadFile(f)
					if err != nil {
						t.Fatal(err)
					}
					b.Write(data)
				}
				src = b.String()
				sources[dir] = src
			}
			param := "t *testing.T"
			if m[3] == "Fuzz" {
				param = "f *testing.F"
			}
			if !regexp.MustCompile(`(?m)^func ` + m[2] + `\(` + regexp.QuoteMeta(param) + `\)`).MatchString(src) {
				t.Errorf("%s: no func %s(%s) in %s/*_test.go", ref, m[2], param, m[1])
			}
			n++
		}
	}
	if n < 50 {
		t.Errorf("only %d tests named", n)
	}
}

// Every section without subsections says how it is tested, or that it
// only defines words.
func TestEverySectionSaysHowItIsTested(t *testing.T) {
	t.Parallel()
	type section struct {
		level int
		title string
		body  []string
	}
	var sections []section
	inCode := false
	for _, line := range strings.Split(readSpec(t), "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
		}
		if !inCode && strings.HasPrefix(line, "#") {
			level := len(line) - len(strings.TrimLeft(line, "#"))
			sections = append(sections, section{level: level, title: strings.TrimSpace(line[level:])})
			continue
		}
		if len(sections) > 0 {
			sections[len(sections)-1].body = append(sections[len(sections)-1].body, line)
		}
	}
	for i, s := range sections {
		if i+1 < len(sections) && sections[i+1].level > s.level {
			continue // its subsections say it
		}
		ok := slices.ContainsFunc(s.body, func(l string) bool {
			return strings.HasPrefix(l, "Tested by: ") || strings.HasPrefix(l, "Not behavioural: ")
		})
		if !ok {
			t.Errorf("section %q has no Tested by line", s.title)
		}
	}
}

// ---------------------------------------------------------------------------
// Behaviour: a destination served over HTTP, with a fault-injecting token
// store, a settable clock and activities for every answer.

// ledger is the state of a test entity: how often each signal was applied.
type ledger struct {
	Applied map[string]int `json:"applied"`
}

func (l *ledger) record(sig baton.Signal) {
	if l.Applied == nil {
		l.Applied = map[string]int{}
	}
	l.Applied[sig.ID.String()]++
}

// faultyTokens fails chosen calls before they apply.
type faultyTokens struct {
	store.TokenStore
	failGets, failTransitions, failIssues atomic.Int64
}

var errInjected = fmt.Errorf("%w: injected fault", store.ErrNotApplied)

func (f *faultyTokens) Get(ctx context.Context, id baton.TokenID) (baton.Token, error) {
	if f.failGets.Add(-1) >= 0 {
		return baton.Token{}, errInjected
	}
	return f.TokenStore.Get(ctx, id)
}

func (f *faultyTokens) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if f.failTransitions.Add(-1) >= 0 {
		return false, errInjected
	}
	return f.TokenStore.Transition(ctx, consume, create)
}

func (f *faultyTokens) Issue(ctx context.Context, root baton.Token) (baton.Token, error) {
	if f.failIssues.Add(-1) >= 0 {
		return baton.Token{}, errInjected
	}
	return f.TokenStore.Issue(ctx, root)
}

// billing is the destination "billing" served over HTTP twice: with the
// default concurrency (url) and with RejectInProgress (rejectURL).
type billing struct {
	tokens    *faultyTokens
	entities  *memory.EntityStore
	clock     *testclock.Clock
	e         *engine.Engine
	server    *httpsignal.Server
	url       string
	rejectURL string
	entered   chan struct{} // closed when the first "slow" activity starts
	release   chan struct{} // the first "slow" activity waits for it
}

func newBilling(t *testing.T) *billing {
	t.Helper()
	b := &billing{
		tokens:   &faultyTokens{TokenStore: memory.NewTokenStore()},
		entities: memory.NewEntityStore(),
		clock:    testclock.At(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
		entered:  make(chan struct{}),
		release:  make(chan struct{}),
	}
	e, err := engine.New(engine.Config{Destination: "billing", Tokens: b.tokens, Entities: b.entities,
		Dispatch: engine.Routes{}, Now: b.clock.Now, RetryDelay: time.Millisecond})
	must(t, err)
	b.e = e
	byConversation := func(sig baton.Signal) (string, error) { return "c-" + sig.Conversation.String(), nil }
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "charge", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			l.record(sig)
			return engine.Effects{Reply: []byte("charged " + string(sig.Payload))}, nil
		}}))
	var once sync.Once
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "slow", Entity: byConversation,
		Handle: func(_ context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			once.Do(func() { close(b.entered); <-b.release })
			l.record(sig)
			return engine.Effects{Reply: []byte("slow done")}, nil
		}}))
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "lost",
		Entity: func(baton.Signal) (string, error) { return "", errors.New("no entity for this signal") },
		Handle: func(context.Context, baton.Signal, *ledger) (engine.Effects, error) { return engine.Effects{}, nil }}))
	must(t, engine.Register(e, engine.Activity[ledger]{Type: "refuse", Entity: byConversation,
		Handle: func(context.Context, baton.Signal, *ledger) (engine.Effects, error) {
			return engine.Effects{}, engine.Permanent(errors.New("card declined for good"))
		}}))
	b.server, err = httpsignal.NewServer(e, httpsignal.Options{})
	must(t, err)
	srv := httptest.NewServer(b.server)
	t.Cleanup(srv.Close)
	b.url = srv.URL
	reject, err := httpsignal.NewServer(e, httpsignal.Options{Concurrency: httpsignal.RejectInProgress})
	must(t, err)
	rsrv := httptest.NewServer(reject)
	t.Cleanup(rsrv.Close)
	b.rejectURL = rsrv.URL
	return b
}

func (b *billing) root(t *testing.T, dest, typ, payload string, ttl time.Duration) baton.Signal {
	t.Helper()
	sig, err := b.e.IssueRoot(t.Context(), baton.Emit{Destination: dest, Type: typ, Payload: []byte(payload)}, ttl)
	must(t, err)
	return sig
}

// live fails t unless the token is still live: a refusal never consumes.
func (b *billing) live(t *testing.T, id baton.TokenID) {
	t.Helper()
	if _, err := b.tokens.TokenStore.Get(t.Context(), id); err != nil {
		t.Errorf("token %s is not live after a refusal: %v", id, err)
	}
}

// applied counts how often each signal was applied, over all entities.
func (b *billing) applied(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, key := range b.entities.Keys() {
		ent, err := b.entities.Load(t.Context(), key)
		must(t, err)
		var l ledger
		must(t, json.Unmarshal(ent.State, &l))
		for id, n := range l.Applied {
			out[id] += n
		}
	}
	return out
}

// exchange is one answer to check, and the token id it must echo ("" for
// none).
type exchange struct {
	resp  *http.Response
	body  []byte
	token string
}

func post(t *testing.T, url string, sig baton.Signal, edit func(*http.Request)) exchange {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, nil)
	must(t, err)
	must(t, httpsignal.EncodeRequest(req, sig))
	if edit != nil {
		edit(req)
	}
	return do(t, req, sig.ID.String())
}

func do(t *testing.T, req *http.Request, token string) exchange {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return exchange{resp, body, token}
}

// goPost sends in the background, for copies that wait.
func goPost(ctx context.Context, url string, sig baton.Signal) chan exchange {
	ch := make(chan exchange, 1)
	go func() {
		defer close(ch)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return
		}
		if httpsignal.EncodeRequest(req, sig) != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		ch <- exchange{resp, body, sig.ID.String()}
	}()
	return ch
}

func received(t *testing.T, ch chan exchange) exchange {
	t.Helper()
	x, ok := <-ch
	if !ok {
		t.Fatal("the background request failed")
	}
	return x
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// answerRow is one row of the http-answers or http-root-answers table.
type answerRow struct {
	status     int
	outcome    string
	problem    string
	retryAfter bool
}

func (r answerRow) key() string {
	if r.problem != "" {
		return r.problem
	}
	return r.outcome
}

// checkAnswer fails t unless x is the answer the row describes.
func checkAnswer(t *testing.T, row answerRow, x exchange, base string) {
	t.Helper()
	h := x.resp.Header
	if x.resp.StatusCode != row.status {
		t.Fatalf("status %d, the specification says %d; body %s", x.resp.StatusCode, row.status, x.body)
	}
	if got := h.Get(httpsignal.HeaderOutcome); got != row.outcome {
		t.Errorf("Baton-Outcome %q, the specification says %q", got, row.outcome)
	}
	if h.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", h.Get("Cache-Control"))
	}
	if got := h.Get(httpsignal.HeaderToken); got != x.token {
		t.Errorf("Baton-Token echoed %q, want %q", got, x.token)
	}
	if (h.Get("Retry-After") != "") != row.retryAfter {
		t.Errorf("Retry-After %q; the specification says it is present: %v", h.Get("Retry-After"), row.retryAfter)
	}
	if row.problem == "" {
		return
	}
	if ct := h.Get("Content-Type"); ct != httpsignal.ProblemContentType {
		t.Fatalf("Content-Type %q, want %s", ct, httpsignal.ProblemContentType)
	}
	var p map[string]any
	must(t, json.Unmarshal(x.body, &p))
	if p["type"] != base+row.problem || p["status"] != float64(row.status) || p["title"] == "" {
		t.Errorf("problem document %s, want type %s%s and status %d", x.body, base, row.problem, row.status)
	}
	if x.token != "" && p["token"] != x.token {
		t.Errorf("problem member token %v, want %s", p["token"], x.token)
	}
}

// Every row of the answers table is what a real server answers.
func TestHTTPAnswersFollowTheSpec(t *testing.T) {
	t.Parallel()
	scenarios := map[string]func(t *testing.T, b *billing) []exchange{
		"applied": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "charge", "42", 0)
			x := post(t, b.url, sig, nil)
			if string(x.body) != "charged 42" {
				t.Errorf("reply %q", x.body)
			}
			return []exchange{x}
		},
		"replayed": func(t *testing.T, b *billing) []exchange {
			// A retry while the outbox entry lives (the transition failed
			// after the commit) gets the same reply, marked replayed.
			sig := b.root(t, "billing", "charge", "7", 0)
			b.tokens.failTransitions.Store(1)
			if x := post(t, b.url, sig, nil); x.resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("applied but unfinished: %d", x.resp.StatusCode)
			}
			retry := post(t, b.url, sig, nil)
			if string(retry.body) != "charged 7" {
				t.Errorf("replayed reply %q", retry.body)
			}
			if n := b.applied(t)[sig.ID.String()]; n != 1 {
				t.Errorf("applied %d times, want 1", n)
			}
			// (A copy that waits for the first at the same server is
			// shown by httpsignal.TestConcurrentCopyWaitsForFirst, which
			// can watch the server's waiters.)
			return []exchange{retry}
		},
		"already-processed": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "charge", "1", 0)
			post(t, b.url, sig, nil)
			again := post(t, b.url, sig, nil)
			// A token that never existed gets the same answer.
			never := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "billing", Type: "charge"}
			return []exchange{again, post(t, b.url, never, nil)}
		},
		"in-progress": func(t *testing.T, b *billing) []exchange {
			slow := b.root(t, "billing", "slow", "", 0)
			first := goPost(t.Context(), b.rejectURL, slow)
			<-b.entered
			x := post(t, b.rejectURL, slow, nil)
			close(b.release)
			received(t, first)
			return []exchange{x}
		},
		"malformed-signal": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "charge", "1", 0)
			noToken := post(t, b.url, sig, func(r *http.Request) { r.Header.Del(httpsignal.HeaderToken) })
			noToken.token = ""
			otherKey := post(t, b.url, sig, func(r *http.Request) {
				r.Header.Set(httpsignal.HeaderIdempotencyKey, `"`+baton.NewTokenID().String()+`"`)
			})
			twice := post(t, b.url, sig, func(r *http.Request) {
				r.Header.Add(httpsignal.HeaderConversation, sig.Conversation.String())
			})
			badType := post(t, b.url, sig, func(r *http.Request) { r.Header.Set(httpsignal.HeaderType, "two words") })
			b.live(t, sig.ID)
			return []exchange{noToken, otherKey, twice, badType}
		},
		"misaddressed": func(t *testing.T, b *billing) []exchange {
			// The signal names another destination, or says billing while
			// its token is for shipping.
			forShipping := b.root(t, "shipping", "charge", "", 0)
			x1 := post(t, b.url, forShipping, nil)
			x2 := post(t, b.url, forShipping, func(r *http.Request) { r.Header.Set(httpsignal.HeaderDestination, "billing") })
			b.live(t, forShipping.ID)
			return []exchange{x1, x2}
		},
		"unknown-type": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "refund", "", 0)
			x := post(t, b.url, sig, nil)
			b.live(t, sig.ID)
			return []exchange{x}
		},
		"method-not-allowed": func(t *testing.T, b *billing) []exchange {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.url, nil)
			must(t, err)
			x := do(t, req, "")
			if x.resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow %q", x.resp.Header.Get("Allow"))
			}
			return []exchange{x}
		},
		"expired": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "charge", "", time.Minute)
			b.clock.Advance(time.Minute)
			x := post(t, b.url, sig, nil)
			b.live(t, sig.ID)
			if len(b.applied(t)) != 0 {
				t.Error("an expired root was applied")
			}
			return []exchange{x}
		},
		"payload-too-large": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "charge", "", 0)
			big := bytes.Repeat([]byte("x"), baton.MaxPayloadBytes+1)
			x := post(t, b.url, sig, func(r *http.Request) {
				r.Body, r.ContentLength, r.GetBody = io.NopCloser(bytes.NewReader(big)), int64(len(big)), nil
			})
			b.live(t, sig.ID)
			return []exchange{x}
		},
		"digest-mismatch": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "charge", "1", 0)
			sig.Payload = []byte("2")
			x := post(t, b.url, sig, nil)
			b.live(t, sig.ID)
			return []exchange{x}
		},
		"unroutable": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "lost", "", 0)
			x := post(t, b.url, sig, nil)
			b.live(t, sig.ID)
			return []exchange{x}
		},
		"rejected": func(t *testing.T, b *billing) []exchange {
			// The activity fails for good; a signal borrows a live token
			// for another conversation.
			refused := b.root(t, "billing", "refuse", "", 0)
			x1 := post(t, b.url, refused, nil)
			borrowed := b.root(t, "billing", "charge", "", 0)
			borrowed.Conversation = baton.NewTokenID()
			x2 := post(t, b.url, borrowed, nil)
			b.live(t, refused.ID)
			b.live(t, borrowed.ID)
			return []exchange{x1, x2}
		},
		"unavailable": func(t *testing.T, b *billing) []exchange {
			sig := b.root(t, "billing", "charge", "5", 0)
			b.tokens.failGets.Store(1)
			storeDown := post(t, b.url, sig, nil)
			b.tokens.failTransitions.Store(1)
			unfinished := post(t, b.url, sig, nil)
			if n := b.applied(t)[sig.ID.String()]; n != 1 {
				t.Errorf("applied %d times, want 1", n)
			}
			return []exchange{storeDown, unfinished}
		},
	}
	used := map[string]bool{}
	for _, cells := range table(t, "http-answers") {
		row := answerRow{status: atoi(t, cells[0]), outcome: tick(t, cells[1]), problem: tick(t, cells[2]),
			retryAfter: strings.Contains(cells[3], "`Retry-After`")}
		scenario, ok := scenarios[row.key()]
		if !ok {
			t.Errorf("no scenario shows the answer %d %s", row.status, row.key())
			continue
		}
		used[row.key()] = true
		t.Run(row.key(), func(t *testing.T) {
			t.Parallel()
			for i, x := range scenario(t, newBilling(t)) {
				t.Run(strconv.Itoa(i), func(t *testing.T) { checkAnswer(t, row, x, httpProblemBase) })
			}
		})
	}
	for key := range scenarios {
		if !used[key] {
			t.Errorf("scenario %s matches no row of the answers table", key)
		}
	}
}

// outboxLen counts the outbox entries of every entity.
func (b *billing) outboxLen(t *testing.T) int {
	t.Helper()
	n := 0
	for _, key := range b.entities.Keys() {
		ent, err := b.entities.Load(t.Context(), key)
		must(t, err)
		n += len(ent.Outbox)
	}
	return n
}

// The sweeper finishes an entry whose HTTP caller gave up, and deletes an
// unused root only once its expiry plus the grace period passed; until
// then the root is refused as expired, afterwards as a duplicate.
func TestSweeperFinishesAbandonedEntriesAndExpiresRoots(t *testing.T) {
	t.Parallel()
	b := newBilling(t)
	abandoned := b.root(t, "billing", "charge", "3", 0)
	b.tokens.failTransitions.Store(1)
	if x := post(t, b.url, abandoned, nil); x.resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("applied but unfinished: %d %s", x.resp.StatusCode, x.body)
	}
	unused := b.root(t, "billing", "charge", "", time.Minute)

	b.clock.Advance(31 * time.Second) // past the default SweepAfter of 30s
	n, err := b.e.Sweep(t.Context())
	must(t, err)
	if _, err := b.tokens.TokenStore.Get(t.Context(), abandoned.ID); n != 1 || !errors.Is(err, store.ErrNotFound) || b.outboxLen(t) != 0 {
		t.Errorf("sweep finished %d entries; token: %v; %d outbox entries left", n, err, b.outboxLen(t))
	}
	x := post(t, b.url, abandoned, nil)
	checkAnswer(t, answerRow{status: 409, outcome: httpsignal.OutcomeDuplicate, problem: "already-processed"}, x, httpProblemBase)

	b.clock.Advance(time.Minute) // the root expired, within the grace period
	_, err = b.e.Sweep(t.Context())
	must(t, err)
	b.live(t, unused.ID)
	x = post(t, b.url, unused, nil)
	checkAnswer(t, answerRow{status: 410, problem: "expired"}, x, httpProblemBase)

	b.clock.Advance(10 * time.Minute) // past the default RootExpiryGrace
	_, err = b.e.Sweep(t.Context())
	must(t, err)
	if _, err := b.tokens.TokenStore.Get(t.Context(), unused.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the expired root is still there after the grace period: %v", err)
	}
	x = post(t, b.url, unused, nil)
	checkAnswer(t, answerRow{status: 409, outcome: httpsignal.OutcomeDuplicate, problem: "already-processed"}, x, httpProblemBase)
	if got := b.applied(t); got[abandoned.ID.String()] != 1 || got[unused.ID.String()] != 0 {
		t.Errorf("applied %v; want the abandoned signal once and the expired root never", got)
	}
}

// A client that hangs up while its signal is processed (a lost response,
// seen from the server) does not cut the protocol short.
func TestHangUpDoesNotCutProcessingShort(t *testing.T) {
	t.Parallel()
	b := newBilling(t)
	slow := b.root(t, "billing", "slow", "", 0)
	ctx, hangUp := context.WithCancel(t.Context())
	answered := goPost(ctx, b.url, slow)
	<-b.entered
	hangUp()
	for range answered { // the request fails: nobody reads the answer
	}
	close(b.release)
	waitFor(t, "the protocol to finish", func() bool {
		_, err := b.tokens.TokenStore.Get(t.Context(), slow.ID)
		return errors.Is(err, store.ErrNotFound) && b.outboxLen(t) == 0
	})
	if n := b.applied(t)[slow.ID.String()]; n != 1 {
		t.Errorf("applied %d times, want 1", n)
	}
	x := post(t, b.url, slow, nil)
	checkAnswer(t, answerRow{status: 409, outcome: httpsignal.OutcomeDuplicate, problem: "already-processed"}, x, httpProblemBase)
}

// greedyLimiter refuses client-greedy and allows everyone else.
type greedyLimiter struct{}

func (greedyLimiter) Allow(client string) (bool, time.Duration) {
	if client == "client-greedy" {
		return false, 2 * time.Second
	}
	return true, 0
}

// Every row of the root token answers table is what a real endpoint
// answers, and its defaults are those stated.
func TestRootAnswersFollowTheSpec(t *testing.T) {
	t.Parallel()
	type fixture struct {
		*billing
		url string
	}
	newFixture := func(t *testing.T) fixture {
		b := newBilling(t)
		roots, err := httpsignal.NewRoots(httpsignal.RootsConfig{
			Tokens:       b.tokens,
			Destinations: map[string][]string{"billing": nil, "vault": nil},
			Identify:     httpsignal.APIKeys("X-Api-Key", map[string]string{"key-a": "client-a", "key-greedy": "client-greedy"}),
			Authorize: func(client string, req httpsignal.RootRequest) error {
				if req.Destination == "vault" {
					return errors.New("client may not start vault")
				}
				return nil
			},
			Limiter: greedyLimiter{},
			Now:     b.clock.Now,
		})
		must(t, err)
		srv := httptest.NewServer(roots)
		t.Cleanup(srv.Close)
		return fixture{b, srv.URL}
	}
	ask := func(t *testing.T, f fixture, method, key, body string) exchange {
		req, err := http.NewRequestWithContext(t.Context(), method, f.url, strings.NewReader(body))
		must(t, err)
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("X-Api-Key", key)
		}
		return do(t, req, "")
	}
	const charge = `{"destination":"billing","type":"charge"}`
	scenarios := map[string]func(t *testing.T, f fixture) []exchange{
		"issued": func(t *testing.T, f fixture) []exchange {
			payload := `{"amount":12}`
			x := ask(t, f, "POST", "key-a", `{"destination":"billing","type":"charge","payload_digest":"`+baton.DigestOf([]byte(payload)).String()+`"}`)
			var root httpsignal.RootResponse
			must(t, json.Unmarshal(x.body, &root))
			if root.Token != root.Conversation || !root.ExpiresAt.Equal(f.clock.Now().Add(15*time.Minute)) {
				t.Errorf("root %+v: want conversation = token and the default expiry of 15 minutes", root)
			}
			if ct := x.resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			// The token admits the signal it was issued for.
			sig := baton.Signal{ID: root.Token, Conversation: root.Conversation, Destination: "billing", Type: "charge", Payload: []byte(payload)}
			if a := post(t, f.billing.url, sig, nil); a.resp.StatusCode != 200 {
				t.Errorf("signal with the issued root: %d %s", a.resp.StatusCode, a.body)
			}
			// The default maximum TTL is 24 hours.
			longest := ask(t, f, "POST", "key-a", `{"destination":"billing","type":"charge","ttl_seconds":86400}`)
			must(t, json.Unmarshal(longest.body, &root))
			if !root.ExpiresAt.Equal(f.clock.Now().Add(24 * time.Hour)) {
				t.Errorf("ttl_seconds 86400 expires at %v", root.ExpiresAt)
			}
			return []exchange{x, longest}
		},
		"malformed-signal": func(t *testing.T, f fixture) []exchange {
			return []exchange{
				ask(t, f, "POST", "key-a", `{"destination":"billing","type":"charge","ttl_seconds":86401}`),
				ask(t, f, "POST", "key-a", `{"destination":"billing","type":"charge","extra":1}`),
				ask(t, f, "POST", "key-a", `{"destination":"billing","type":"charge","payload_digest":"`+strings.ToUpper(baton.DigestOf(nil).String())+`"}`),
				ask(t, f, "POST", "key-a", charge+` {}`),
				ask(t, f, "POST", "key-a", `{"destination":"billing","type":"`+strings.Repeat("x", baton.MaxNameBytes+1)+`"}`),
			}
		},
		"unauthorized": func(t *testing.T, f fixture) []exchange {
			return []exchange{ask(t, f, "POST", "", charge), ask(t, f, "POST", "stolen", charge)}
		},
		"forbidden": func(t *testing.T, f fixture) []exchange {
			return []exchange{ask(t, f, "POST", "key-a", `{"destination":"vault","type":"open"}`)}
		},
		"method-not-allowed": func(t *testing.T, f fixture) []exchange {
			return []exchange{ask(t, f, "GET", "key-a", "")}
		},
		"rate-limited": func(t *testing.T, f fixture) []exchange {
			x := ask(t, f, "POST", "key-greedy", charge)
			if x.resp.Header.Get("Retry-After") != "2" {
				t.Errorf("Retry-After %q, want the limiter's 2", x.resp.Header.Get("Retry-After"))
			}
			return []exchange{x}
		},
		"unavailable": func(t *testing.T, f fixture) []exchange {
			f.tokens.failIssues.Store(1)
			return []exchange{ask(t, f, "POST", "key-a", charge)}
		},
	}
	used := map[string]bool{}
	for _, cells := range table(t, "http-root-answers") {
		row := answerRow{status: atoi(t, cells[0]), problem: tick(t, cells[1]),
			retryAfter: strings.Contains(cells[2], "`Retry-After`")}
		key := row.problem
		if key == "" {
			key = "issued"
		}
		scenario, ok := scenarios[key]
		if !ok {
			t.Errorf("no scenario shows the root answer %d %s", row.status, key)
			continue
		}
		used[key] = true
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			for i, x := range scenario(t, newFixture(t)) {
				t.Run(strconv.Itoa(i), func(t *testing.T) { checkAnswer(t, row, x, httpProblemBase) })
			}
		})
	}
	for key := range scenarios {
		if !used[key] {
			t.Errorf("scenario %s matches no row of the root answers table", key)
		}
	}
}

// ---------------------------------------------------------------------------
// Behaviour: the token service's problem types

// failingStore makes transitions fail with err, once set.
type failingStore struct {
	store.TokenStore // the interface: no batch calls that would skip Transition
	live             *memory.TokenStore
	err              atomic.Pointer[error]
}

func (f *failingStore) Transition(ctx context.Context, consume baton.TokenID, create []baton.Token) (bool, error) {
	if e := f.err.Load(); e != nil {
		return false, *e
	}
	return f.TokenStore.Transition(ctx, consume, create)
}

type tokenService struct {
	url                  string
	tokens               *failingStore
	orders, billing, ops string // API keys
}

func newTokenService(t *testing.T) *tokenService {
	t.Helper()
	live := memory.NewTokenStore()
	s := &tokenService{tokens: &failingStore{TokenStore: live, live: live}}
	var ordersHash, billingHash, opsHash string
	s.orders, ordersHash = tokenservice.NewAPIKey()
	s.billing, billingHash = tokenservice.NewAPIKey()
	s.ops, opsHash = tokenservice.NewAPIKey()
	h, err := tokenservice.New(tokenservice.Config{Tokens: s.tokens, Systems: []tokenservice.System{
		{Name: "orders", KeySHA256: ordersHash, IssueRoots: true},
		{Name: "billing", KeySHA256: billingHash},
		{Name: "ops", KeySHA256: opsHash, Observe: true, ExpireRoots: true},
	}})
	must(t, err)
	srv := httptest.NewServer(tokenservice.CheckHost(nil)(h)) // as baton serve checks Host
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

// call sends a request to the token service; body is JSON text.
func (s *tokenService) call(t *testing.T, method, path, key, contentType, body string) exchange {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.url+path, strings.NewReader(body))
	must(t, err)
	if body != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	return do(t, req, "")
}

// rootJSON is a request for a root token addressed to destination; the
// service chooses its id.
func rootJSON(destination string) string {
	return fmt.Sprintf(`{"destination":"%s","type":"t","digest":"%s"}`, destination, baton.DigestOf(nil))
}

func TestTokenServiceProblemsFollowTheSpec(t *testing.T) {
	t.Parallel()
	const js = "application/json"
	issueBody := func(t *testing.T, s *tokenService, body string) baton.TokenID {
		x := s.call(t, "POST", "/v1/roots", s.orders, js, body)
		if x.resp.StatusCode != 201 {
			t.Fatalf("issue: %d %s", x.resp.StatusCode, x.body)
		}
		var tok tokenservice.Token
		must(t, json.Unmarshal(x.body, &tok))
		id, err := baton.ParseTokenID(tok.ID)
		must(t, err)
		return id
	}
	issue := func(t *testing.T, s *tokenService, destination string) baton.TokenID {
		return issueBody(t, s, rootJSON(destination))
	}
	transition := func(consume baton.TokenID) string { return `{"consume":"` + consume.String() + `"}` }
	// Each scenario prepares the service and returns the request that
	// gets the answer, so the store can be counted just before it.
	scenarios := map[string]func(t *testing.T, s *tokenService) func() exchange{
		"invalid-request": func(t *testing.T, s *tokenService) func() exchange {
			return func() exchange { return s.call(t, "POST", "/v1/transitions", s.orders, js, `{"consume":"xyz"}`) }
		},
		"unauthorized": func(t *testing.T, s *tokenService) func() exchange {
			return func() exchange {
				x := s.call(t, "GET", "/v1/tokens/"+baton.NewTokenID().String(), "", "", "")
				if got := x.resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="baton"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
				return x
			}
		},
		"forbidden": func(t *testing.T, s *tokenService) func() exchange {
			return func() exchange { return s.call(t, "POST", "/v1/roots", s.billing, js, rootJSON("billing")) }
		},
		"not-your-token": func(t *testing.T, s *tokenService) func() exchange {
			id := issue(t, s, "orders")
			return func() exchange { return s.call(t, "POST", "/v1/transitions", s.billing, js, transition(id)) }
		},
		"not-a-child": func(t *testing.T, s *tokenService) func() exchange {
			id := issue(t, s, "orders")
			stranger := baton.NewTokenID()
			body := fmt.Sprintf(`{"consume":"%s","create":[{"id":"%s","conversation":"%s","causation":"%s","destination":"billing","type":"t","digest":"%s"}]}`,
				id, baton.NewTokenID(), stranger, id, baton.DigestOf(nil))
			return func() exchange { return s.call(t, "POST", "/v1/transitions", s.orders, js, body) }
		},
		"not-found": func(t *testing.T, s *tokenService) func() exchange {
			return func() exchange { return s.call(t, "GET", "/v1/tokens/"+baton.NewTokenID().String(), s.ops, "", "") }
		},
		"no-such-route": func(t *testing.T, s *tokenService) func() exchange {
			return func() exchange { return s.call(t, "GET", "/v1/nothing", s.ops, "", "") }
		},
		"method-not-allowed": func(t *testing.T, s *tokenService) func() exchange {
			return func() exchange {
				x := s.call(t, "DELETE", "/v1/tokens/"+baton.NewTokenID().String(), s.ops, "", "")
				if x.resp.Header.Get("Allow") != "GET" {
					t.Errorf("Allow %q, want GET", x.resp.Header.Get("Allow"))
				}
				return x
			}
		},
		"token-exists": func(t *testing.T, s *tokenService) func() exchange {
			// A transition that would create a token that is live.
			parent, live := issue(t, s, "orders"), issue(t, s, "orders")
			body := fmt.Sprintf(`{"consume":"%s","create":[{"id":"%s","conversation":"%s","causation":"%s","destination":"billing","type":"t","digest":"%s"}]}`,
				parent, live, parent, parent, baton.DigestOf(nil))
			return func() exchange { return s.call(t, "POST", "/v1/transitions", s.orders, js, body) }
		},
		"expired": func(t *testing.T, s *tokenService) func() exchange {
			id := issueBody(t, s, fmt.Sprintf(`{"destination":"orders","type":"t","expires_at":"%s"}`, tokenservice.FormatTime(time.Now().Add(-time.Minute))))
			return func() exchange { return s.call(t, "POST", "/v1/tokens/"+id.String()+"/claim", s.orders, "", "") }
		},
		"body-too-large": func(t *testing.T, s *tokenService) func() exchange {
			big := `{"consume":"` + strings.Repeat(" ", tokenservice.DefaultMaxBodyBytes) + `"}`
			return func() exchange { return s.call(t, "POST", "/v1/transitions", s.orders, js, big) }
		},
		"unsupported-media-type": func(t *testing.T, s *tokenService) func() exchange {
			return func() exchange {
				return s.call(t, "POST", "/v1/transitions", s.orders, "text/plain", transition(baton.NewTokenID()))
			}
		},
		"wrong-host": func(t *testing.T, s *tokenService) func() exchange {
			body := rootJSON("orders")
			return func() exchange {
				req, err := http.NewRequestWithContext(t.Context(), "POST", s.url+"/v1/roots", strings.NewReader(body))
				must(t, err)
				req.Header.Set("Content-Type", js)
				req.Header.Set("Authorization", "Bearer "+s.orders)
				req.Host = "rebind.attacker.example"
				return do(t, req, "")
			}
		},
		"outcome-unknown": func(t *testing.T, s *tokenService) func() exchange {
			id := issue(t, s, "orders")
			lost := errors.New("connection reset after the request was sent")
			s.tokens.err.Store(&lost)
			return func() exchange { return s.call(t, "POST", "/v1/transitions", s.orders, js, transition(id)) }
		},
		"not-applied": func(t *testing.T, s *tokenService) func() exchange {
			id := issue(t, s, "orders")
			refused := fmt.Errorf("%w: connection refused", store.ErrNotApplied)
			s.tokens.err.Store(&refused)
			return func() exchange { return s.call(t, "POST", "/v1/transitions", s.orders, js, transition(id)) }
		},
	}
	used := map[string]bool{}
	for _, cells := range table(t, "token-service-problems") {
		status, name := atoi(t, cells[0]), tick(t, cells[1])
		retryAfter := strings.Contains(cells[2], "`Retry-After`")
		applied := cells[3]
		scenario, ok := scenarios[name]
		if !ok {
			t.Errorf("no scenario shows the token service's %d %s", status, name)
			continue
		}
		used[name] = true
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newTokenService(t)
			final := scenario(t, s)
			before := s.tokens.live.Len()
			x := final()
			if x.resp.StatusCode != status {
				t.Fatalf("status %d, the specification says %d; body %s", x.resp.StatusCode, status, x.body)
			}
			if ct := x.resp.Header.Get("Content-Type"); ct != tokenservice.ProblemContentType {
				t.Fatalf("Content-Type %q", ct)
			}
			var p tokenservice.Problem
			must(t, json.Unmarshal(x.body, &p))
			if p.Type != tokenProblemBase+name || p.Status != status || p.Title == "" {
				t.Errorf("problem %+v, want type %s%s and status %d", p, tokenProblemBase, name, status)
			}
			if x.resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q", x.resp.Header.Get("Cache-Control"))
			}
			if (x.resp.Header.Get("Retry-After") != "") != retryAfter {
				t.Errorf("Retry-After %q; the specification says present: %v", x.resp.Header.Get("Retry-After"), retryAfter)
			}
			switch applied {
			case "no":
				// Nothing was written: the tokens issued before are all
				// still there and nothing was added.
				if after := s.tokens.live.Len(); after != before {
					t.Errorf("%d tokens before, %d after", before, after)
				}
			case "unknown":
			default:
				t.Errorf("Applied? %q, want no or unknown", applied)
			}
		})
	}
	for name := range scenarios {
		if !used[name] {
			t.Errorf("scenario %s matches no row of the token service problems table", name)
		}
	}
}

// ---------------------------------------------------------------------------
// Behaviour: senders and services that do not take part

// The sender reads each kind of answer as section 5.6 says.
func TestSenderReadsAnswersAsSpecified(t *testing.T) {
	t.Parallel()
	problem := func(w http.ResponseWriter, status int, typ string) {
		w.Header().Set("Content-Type", httpsignal.ProblemContentType)
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"type":%q,"title":"t","status":%d}`, typ, status)
	}
	type answer func(w http.ResponseWriter, r *http.Request)
	status := func(code int) answer {
		return func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(code) }
	}
	ok := status(http.StatusOK)
	cases := []struct {
		name      string
		answers   []answer // one per attempt; the last repeats
		delivered bool
		rejected  bool
		requests  int64
	}{
		{"2xx", []answer{ok}, true, false, 1},
		{"409 duplicate", []answer{func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(httpsignal.HeaderOutcome, httpsignal.OutcomeDuplicate)
			problem(w, 409, httpsignal.ProblemAlreadyProcessed)
		}}, true, false, 1},
		{"409 already-processed behind a proxy that strips headers", []answer{func(w http.ResponseWriter, r *http.Request) {
			problem(w, 409, httpsignal.ProblemAlreadyProcessed)
		}}, true, false, 1},
		{"409 in-progress, then 2xx", []answer{func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(httpsignal.HeaderOutcome, httpsignal.OutcomeInProgress)
			w.Header().Set("Retry-After", "0")
			problem(w, 409, httpsignal.ProblemInProgress)
		}, ok}, true, false, 2},
		{"409 in-progress behind a proxy that strips headers, then 2xx", []answer{func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "0")
			problem(w, 409, httpsignal.ProblemInProgress)
		}, ok}, true, false, 2},
		{"409 in-progress behind a proxy that strips headers, until the last attempt", []answer{func(w http.ResponseWriter, r *http.Request) {
			problem(w, 409, httpsignal.ProblemInProgress)
		}}, false, false, 3},
		{"408, then 2xx", []answer{status(408), ok}, true, false, 2},
		{"429, then 2xx", []answer{status(429), ok}, true, false, 2},
		{"500, then 2xx", []answer{status(500), ok}, true, false, 2},
		{"503 until the last attempt", []answer{status(503)}, false, false, 3},
		{"400", []answer{func(w http.ResponseWriter, r *http.Request) { problem(w, 400, httpsignal.ProblemMalformed) }}, false, true, 1},
		{"404", []answer{status(404)}, false, true, 1},
		{"422", []answer{func(w http.ResponseWriter, r *http.Request) { problem(w, 422, httpsignal.ProblemDigestMismatch) }}, false, true, 1},
		{"3xx is not followed", []answer{func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		}}, false, true, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var requests, redirected atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/elsewhere" {
					redirected.Add(1)
					return
				}
				n := requests.Add(1)
				c.answers[min(int(n), len(c.answers))-1](w, r)
			}))
			t.Cleanup(srv.Close)
			tr, err := httpsignal.NewTransport(httpsignal.TransportConfig{MaxAttempts: 3,
				Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }})
			must(t, err)
			p, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{Endpoints: map[string]string{"billing": srv.URL}, Transport: tr})
			must(t, err)
			sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "billing", Type: "charge"}
			err = p.Publish(t.Context(), sig)
			if (err == nil) != c.delivered || errors.Is(err, engine.ErrRejected) != c.rejected {
				t.Errorf("Publish = %v; want delivered %v, refused for good %v", err, c.delivered, c.rejected)
			}
			if n := requests.Load(); n != c.requests {
				t.Errorf("%d requests, want %d", n, c.requests)
			}
			if redirected.Load() != 0 {
				t.Error("the sender followed a redirect")
			}
		})
	}
}

// A service that ignores Idempotency-Key sees a signal twice when a
// response is lost: the hop is at least once, and every attempt carries
// the same key.
func TestNonParticipantSeesOneKeyOnEveryAttempt(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var keys, bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		bodies = append(bodies, string(body))
		first := len(keys) == 1
		mu.Unlock()
		if first { // the work is done, the response is lost
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		io.WriteString(w, "sent")
	}))
	t.Cleanup(srv.Close)
	tr, err := httpsignal.NewTransport(httpsignal.TransportConfig{
		Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }})
	must(t, err)
	p, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{Endpoints: map[string]string{"mailer": srv.URL}, Transport: tr})
	must(t, err)
	sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "mailer", Type: "mail", Payload: []byte("hi")}
	reply, outcome, err := p.Call(t.Context(), sig)
	must(t, err)
	if string(reply) != "sent" || outcome != "" {
		t.Errorf("Call = %q, outcome %q", reply, outcome)
	}
	mu.Lock()
	defer mu.Unlock()
	want := `"` + sig.ID.String() + `"`
	if len(keys) != 2 || keys[0] != want || keys[1] != want || bodies[0] != "hi" || bodies[1] != "hi" {
		t.Errorf("the service saw keys %q and bodies %q; want the signal twice with key %s", keys, bodies, want)
	}
}

// ---------------------------------------------------------------------------
// Behaviour: a participant written from the specification alone

// foreignBilling is the destination "billing" as a service in another
// language would write it from sections 3, 5 and 8: plain HTTP and JSON,
// its own entity store with an outbox, and the token service. It uses no
// baton package.
type foreignBilling struct {
	tokenService, apiKey, shippingURL string

	mu       sync.Mutex
	entities map[string]*foreignEntity
	charged  map[string]int // token id -> times applied, committed with the entity
}

type foreignEntity struct {
	version int
	charges int
	outbox  map[string]foreignEntry
}

type foreignEntry struct {
	signals []foreignSignal
	reply   string
}

type foreignSignal struct {
	id, conversation, causation, destination, typ string
	payload                                       []byte
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func newID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// answerProblem writes an RFC 9457 problem of section 5.2.
func answerProblem(w http.ResponseWriter, token string, status int, name, outcome string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	if token != "" {
		w.Header().Set("Baton-Token", token)
	}
	if outcome != "" {
		w.Header().Set("Baton-Outcome", outcome)
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": httpProblemBase + name, "title": name, "status": status, "token": token})
}

func (f *foreignBilling) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		answerProblem(w, "", 405, "method-not-allowed", "")
		return
	}
	one := func(name string) (string, bool) {
		v := r.Header.Values(name)
		return strings.Join(v, ""), len(v) == 1
	}
	token, ok1 := one("Baton-Token")
	conversation, ok2 := one("Baton-Conversation")
	typ, ok3 := one("Baton-Type")
	destination, ok4 := one("Baton-Destination")
	causation, _ := one("Baton-Causation")
	key, hasKey := one("Idempotency-Key")
	if !ok1 || !ok2 || !ok3 || !ok4 || !hexID.MatchString(token) || !hexID.MatchString(conversation) ||
		(causation != "" && !hexID.MatchString(causation)) || (hasKey && strings.Trim(key, `"`) != token) {
		answerProblem(w, "", 400, "malformed-signal", "")
		return
	}
	payload, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil || len(payload) > 1<<20 {
		answerProblem(w, token, 413, "payload-too-large", "")
		return
	}
	if destination != "billing" {
		answerProblem(w, token, 403, "misaddressed", "")
		return
	}
	if typ != "charge" {
		answerProblem(w, token, 404, "unknown-type", "")
		return
	}
	sig := foreignSignal{token, conversation, causation, destination, typ, payload}
	reply, outcome, status, problem := f.process(r.Context(), sig)
	if problem != "" {
		if status == 503 {
			w.Header().Set("Retry-After", "1")
		}
		answerProblem(w, token, status, problem, outcome)
		return
	}
	w.Header().Set("Baton-Token", token)
	w.Header().Set("Baton-Outcome", outcome)
	w.Header().Set("Cache-Control", "no-store")
	io.WriteString(w, reply)
}

// process runs section 3.2 for sig. The entity is keyed by the
// conversation (R0).
func (f *foreignBilling) process(ctx context.Context, sig foreignSignal) (reply, outcome string, status int, problem string) {
	key := "invoice-" + sig.conversation
	for {
		// Step 1: load.
		f.mu.Lock()
		ent := f.entities[key]
		if ent == nil {
			ent = &foreignEntity{outbox: map[string]foreignEntry{}}
		}
		version := ent.version
		entry, done := ent.outbox[sig.id]
		f.mu.Unlock()
		// Step 2: the activity already happened.
		if done {
			if err := f.finish(ctx, key, sig.id, entry); err != nil {
				return "", "", 503, "unavailable"
			}
			return entry.reply, "replayed", 200, ""
		}
		// Step 3: read the token, after the entity.
		var tok map[string]string
		switch code := f.api(ctx, "GET", "/v1/tokens/"+sig.id, nil, &tok); code {
		case 200:
		case 404:
			return "", "duplicate", 409, "already-processed"
		case 403:
			return "", "", 403, "misaddressed"
		default:
			return "", "", 503, "unavailable"
		}
		switch {
		case tok["destination"] != "billing":
			return "", "", 403, "misaddressed"
		case tok["type"] != sig.typ || tok["conversation"] != sig.conversation || tok["causation"] != sig.causation:
			return "", "", 422, "rejected"
		case tok["digest"] != sha256Hex(sig.payload):
			return "", "", 422, "digest-mismatch"
		case tok["expires_at"] != "":
			if at, err := time.Parse(time.RFC3339Nano, tok["expires_at"]); err != nil || !time.Now().Before(at) {
				return "", "", 410, "expired"
			}
		}
		// Step 4: run the activity and commit it with its outbox entry,
		// conditional on the version loaded.
		child := foreignSignal{newID(), sig.conversation, sig.id, "shipping", "ship", []byte(`{"invoice":"INV-` + sig.conversation[:8] + `"}`)}
		entry = foreignEntry{signals: []foreignSignal{child}, reply: "invoiced " + string(sig.payload)}
		f.mu.Lock()
		current := f.entities[key]
		if (current == nil && version != 0) || (current != nil && current.version != version) {
			f.mu.Unlock()
			continue // a version conflict: load again
		}
		next := &foreignEntity{version: version + 1, charges: ent.charges + 1, outbox: map[string]foreignEntry{}}
		for k, v := range ent.outbox {
			next.outbox[k] = v
		}
		next.outbox[sig.id] = entry
		f.entities[key] = next
		f.charged[sig.id]++
		f.mu.Unlock()
		if err := f.finish(ctx, key, sig.id, entry); err != nil {
			return "", "", 503, "unavailable"
		}
		return entry.reply, "applied", 200, ""
	}
}

// finish runs steps 5 to 7 for an outbox entry.
func (f *foreignBilling) finish(ctx context.Context, key, token string, entry foreignEntry) error {
	// Step 5: the transition.
	var create []map[string]string
	for _, s := range entry.signals {
		create = append(create, map[string]string{"id": s.id, "conversation": s.conversation, "causation": s.causation,
			"destination": s.destination, "type": s.typ, "digest": sha256Hex(s.payload)})
	}
	var consumed map[string]bool
	if code := f.api(ctx, "POST", "/v1/transitions", map[string]any{"consume": token, "create": create}, &consumed); code != 200 {
		return fmt.Errorf("transition: %d", code)
	}
	// Step 6: dispatch, until delivered.
	for _, s := range entry.signals {
		req, err := http.NewRequestWithContext(ctx, "POST", f.shippingURL, bytes.NewReader(s.payload))
		if err != nil {
			return err
		}
		req.Header.Set("Baton-Token", s.id)
		req.Header.Set("Baton-Conversation", s.conversation)
		req.Header.Set("Baton-Causation", s.causation)
		req.Header.Set("Baton-Type", s.typ)
		req.Header.Set("Baton-Destination", s.destination)
		req.Header.Set("Idempotency-Key", `"`+s.id+`"`)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		delivered := resp.StatusCode/100 == 2 || (resp.StatusCode == 409 && resp.Header.Get("Baton-Outcome") == "duplicate")
		if !delivered {
			return fmt.Errorf("shipping answered %d", resp.StatusCode)
		}
	}
	// Step 7: remove the entry.
	f.mu.Lock()
	defer f.mu.Unlock()
	if ent := f.entities[key]; ent != nil {
		if _, ok := ent.outbox[token]; ok {
			next := &foreignEntity{version: ent.version + 1, charges: ent.charges, outbox: map[string]foreignEntry{}}
			for k, v := range ent.outbox {
				if k != token {
					next.outbox[k] = v
				}
			}
			f.entities[key] = next
		}
	}
	return nil
}

// api calls the token service and decodes a 2xx answer into out.
func (f *foreignBilling) api(ctx context.Context, method, path string, body, out any) int {
	var reader io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.tokenService+path, reader)
	if err != nil {
		return 0
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+f.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 && out != nil {
		if json.NewDecoder(resp.Body).Decode(out) != nil {
			return 0
		}
	}
	return resp.StatusCode
}

// A Go shop, a foreign billing service written from this document, and a
// Go shipping service run one conversation over HTTP and the token
// service, with a failed dispatch, a retried request and a duplicate; each
// activity is applied once and no token is left.
func TestParticipantFromSpecAlone(t *testing.T) {
	t.Parallel()
	tokens := memory.NewTokenStore()
	keys, hashes := map[string]string{}, map[string]string{}
	for _, name := range []string{"shop", "billing", "shipping"} {
		keys[name], hashes[name] = tokenservice.NewAPIKey()
	}
	ts, err := tokenservice.New(tokenservice.Config{Tokens: tokens, Systems: []tokenservice.System{
		{Name: "shop", KeySHA256: hashes["shop"], IssueRoots: true},
		{Name: "billing", KeySHA256: hashes["billing"]},
		{Name: "shipping", KeySHA256: hashes["shipping"]},
	}})
	must(t, err)
	tsSrv := httptest.NewServer(ts)
	t.Cleanup(tsSrv.Close)
	tokenClient := func(system string) store.TokenStore {
		c, err := client.New(tsSrv.URL, keys[system], client.Options{})
		must(t, err)
		return c
	}

	// shipping: a Go engine; its first signal request fails, so billing's
	// dispatch fails once after its transition.
	shipEntities := memory.NewEntityStore()
	shipping, err := engine.New(engine.Config{Destination: "shipping", Tokens: tokenClient("shipping"),
		Entities: shipEntities, Dispatch: engine.Routes{}, RetryDelay: time.Millisecond})
	must(t, err)
	var shipped atomic.Int64
	must(t, engine.Register(shipping, engine.Activity[ledger]{Type: "ship",
		Entity: func(sig baton.Signal) (string, error) { return "parcel-" + sig.Conversation.String(), nil },
		Handle: func(_ context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			l.record(sig)
			return engine.Effects{}, nil
		}}))
	shipServer, err := httpsignal.NewServer(shipping, httpsignal.Options{})
	must(t, err)
	var shipRequests atomic.Int64
	shipSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if shipRequests.Add(1) == 1 {
			http.Error(w, "shipping is starting", http.StatusServiceUnavailable)
			return
		}
		shipServer.ServeHTTP(w, r)
	}))
	t.Cleanup(shipSrv.Close)

	// billing: the foreign service.
	foreign := &foreignBilling{tokenService: tsSrv.URL, apiKey: keys["billing"], shippingURL: shipSrv.URL,
		entities: map[string]*foreignEntity{}, charged: map[string]int{}}
	billingSrv := httptest.NewServer(foreign)
	t.Cleanup(billingSrv.Close)

	// shop: a Go engine that sends "charge" to billing over HTTP.
	tr, err := httpsignal.NewTransport(httpsignal.TransportConfig{BaseDelay: time.Millisecond,
		Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }})
	must(t, err)
	publisher, err := httpsignal.NewPublisher(httpsignal.PublisherConfig{Endpoints: map[string]string{"billing": billingSrv.URL}, Transport: tr})
	must(t, err)
	shop, err := engine.New(engine.Config{Destination: "shop", Tokens: tokenClient("shop"), Entities: memory.NewEntityStore(),
		Dispatch: publisher, RetryDelay: time.Millisecond})
	must(t, err)
	must(t, engine.Register(shop, engine.Activity[ledger]{Type: "order",
		Entity: func(sig baton.Signal) (string, error) { return "order-" + sig.Conversation.String(), nil },
		Handle: func(_ context.Context, sig baton.Signal, l *ledger) (engine.Effects, error) {
			l.record(sig)
			return engine.Effects{Emit: []baton.Emit{{Destination: "billing", Type: "charge", Payload: []byte(`{"amount":12}`)}}}, nil
		}}))

	root, err := shop.IssueRoot(t.Context(), baton.Emit{Destination: "shop", Type: "order"}, 0)
	must(t, err)
	res, err := shop.Process(t.Context(), root)
	must(t, err)
	if len(res.Emitted) != 1 {
		t.Fatalf("shop emitted %d signals", len(res.Emitted))
	}
	charge := res.Emitted[0]

	// A duplicate of the charge signal is answered as already processed.
	reply, outcome, err := publisher.Call(t.Context(), charge)
	must(t, err)
	if outcome != httpsignal.OutcomeDuplicate || reply != nil {
		t.Errorf("duplicate charge: outcome %q reply %q", outcome, reply)
	}
	foreign.mu.Lock()
	charged, entities := foreign.charged[charge.ID.String()], foreign.entities
	var pending int
	for _, e := range entities {
		pending += len(e.outbox)
	}
	foreign.mu.Unlock()
	if charged != 1 || pending != 0 {
		t.Errorf("billing charged %d times with %d outbox entries left; want 1 and 0", charged, pending)
	}
	for _, key := range shipEntities.Keys() {
		ent, err := shipEntities.Load(t.Context(), key)
		must(t, err)
		var l ledger
		must(t, json.Unmarshal(ent.State, &l))
		for _, n := range l.Applied {
			shipped.Add(int64(n))
		}
	}
	if shipped.Load() != 1 || shipRequests.Load() < 2 {
		t.Errorf("shipped %d times after %d requests; want once, after a failed first request", shipped.Load(), shipRequests.Load())
	}
	if n := tokens.Len(); n != 0 {
		t.Errorf("%d tokens left in the token service; every signal was processed", n)
	}
}

// ---------------------------------------------------------------------------
// Behaviour: messages from a foreign broker producer

// A message published with a plain NATS client to the subject and with the
// headers of section 6 is delivered as the signal; the stream and consumer
// are as section 6.3 says; a message with misspelt headers is parked.
func TestForeignNATSMessageIsASignal(t *testing.T) {
	t.Parallel()
	emb, err := natstransport.StartEmbedded(natstransport.EmbeddedConfig{DataDir: t.TempDir()})
	must(t, err)
	t.Cleanup(emb.Shutdown)
	const stream, prefix = "DOCS", "docs"
	tr, err := emb.NewTransport(t.Context(), natstransport.Config{Stream: stream, Prefix: prefix, AckWait: 5 * time.Second})
	must(t, err)
	t.Cleanup(func() { tr.Close() })
	nc, err := emb.Connect()
	must(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	must(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	publish := func(subject string, header natsgo.Header, body []byte, msgID string) {
		t.Helper()
		msg := natsgo.NewMsg(subject)
		msg.Header, msg.Data = header, body
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID)); err != nil {
			t.Fatal(err)
		}
	}
	for _, row := range table(t, "destination-encoding") {
		destination, encoded := tick(t, row[0]), tick(t, row[1])
		sub, err := tr.Subscribe(ctx, destination)
		must(t, err)
		sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Causation: baton.NewTokenID(),
			Destination: destination, Type: "charge", Payload: []byte(`{"amount":12}`),
			Trace: baton.TraceContext{Parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", State: "congo=t61rcWkgMzE"}}
		publish(prefix+".sig."+encoded, natsgo.Header{
			"Baton-Token":        {sig.ID.String()},
			"Baton-Conversation": {sig.Conversation.String()},
			"Baton-Causation":    {sig.Causation.String()},
			"Baton-Type":         {sig.Type},
			"traceparent":        {sig.Trace.Parent},
			"tracestate":         {sig.Trace.State},
		}, sig.Payload, sig.ID.String())
		rowCtx, cancelRow := context.WithTimeout(ctx, 5*time.Second)
		d, err := sub.Next(rowCtx)
		cancelRow()
		if err != nil {
			t.Fatalf("%s: the message published to %s.sig.%s was not delivered: %v", destination, prefix, encoded, err)
		}
		got := d.Signal()
		if got.ID != sig.ID || got.Conversation != sig.Conversation || got.Causation != sig.Causation || got.Destination != destination ||
			got.Type != sig.Type || string(got.Payload) != string(sig.Payload) || got.Trace != sig.Trace || d.Attempt() != 1 {
			t.Errorf("%s: delivered %+v (attempt %d), published %+v", destination, got, d.Attempt(), sig)
		}
		must(t, d.Ack(ctx))
		// The durable consumer is named by the encoded destination.
		cons, err := js.Consumer(ctx, stream, encoded)
		if err != nil {
			t.Errorf("%s: no consumer %s: %v", destination, encoded, err)
		} else if info := cons.CachedInfo(); info.Config.AckPolicy != jetstream.AckExplicitPolicy ||
			info.Config.FilterSubject != prefix+".sig."+encoded {
			t.Errorf("%s: consumer %+v", destination, info.Config)
		}
		sub.Close()
	}

	// The stream of section 6.3.
	s, err := js.Stream(ctx, stream)
	must(t, err)
	cfg := s.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy || cfg.Storage != jetstream.FileStorage || cfg.Discard != jetstream.DiscardNew ||
		cfg.MaxAge != 0 || cfg.MaxMsgSize != int32(baton.MaxPayloadBytes+16<<10) ||
		!slices.Equal(cfg.Subjects, []string{prefix + ".sig.>", prefix + ".parked.>"}) {
		t.Errorf("stream config %+v", cfg)
	}

	// Header names are case-sensitive: a message whose headers are in
	// lower case carries no token, and is parked, not delivered.
	sub, err := tr.Subscribe(ctx, "billing")
	must(t, err)
	defer sub.Close()
	bad := baton.NewTokenID().String()
	publish(prefix+".sig.billing", natsgo.Header{"baton-token": {bad}, "baton-conversation": {bad}, "baton-type": {"charge"}}, nil, bad)
	// A good one after it, which a receiver parks with a reason.
	good := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: "billing", Type: "charge", Payload: []byte("p")}
	publish(prefix+".sig.billing", natsgo.Header{"Baton-Token": {good.ID.String()}, "Baton-Conversation": {good.Conversation.String()},
		"Baton-Type": {"charge"}}, good.Payload, good.ID.String())
	d, err := sub.Next(ctx)
	must(t, err)
	if d.Signal().ID != good.ID {
		t.Fatalf("delivered %s, want %s: the malformed message must not be delivered", d.Signal().ID, good.ID)
	}
	malformed, err := s.GetLastMsgForSubject(ctx, prefix+".parked.billing")
	must(t, err)
	if malformed.Header.Get("baton-token") != bad || malformed.Header.Get(natstransport.HeaderParkReason) == "" ||
		malformed.Header.Get("Baton-Park-Attempt") != "1" {
		t.Errorf("parked malformed message headers %v", malformed.Header)
	}
	must(t, d.Park(ctx, "refused:\nfor good"))
	waitFor(t, "the parked copy", func() bool {
		m, err := s.GetLastMsgForSubject(ctx, prefix+".parked.billing")
		return err == nil && m.Header.Get("Baton-Token") == good.ID.String()
	})
	parked, err := s.GetLastMsgForSubject(ctx, prefix+".parked.billing")
	must(t, err)
	if parked.Header.Get("Baton-Park-Reason") != "refused: for good" || parked.Header.Get("Baton-Park-Attempt") != "1" ||
		parked.Header.Get("Baton-Conversation") != good.Conversation.String() || string(parked.Data) != "p" {
		t.Errorf("parked copy: headers %v, body %q", parked.Header, parked.Data)
	}
}

// The same for RabbitMQ, against a real broker (BATON_TEST_RABBITMQ):
// queue arguments, publishing as section 6.4 says, a delayed redelivery
// and parking.
func TestForeignRabbitMQMessageIsASignal(t *testing.T) {
	t.Parallel()
	url := testenv.Addr(t, testenv.RabbitMQ)
	prefix := "docs-" + newID()[:12]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tr, err := rabbitmq.New(ctx, rabbitmq.Config{URL: url, Prefix: prefix, AckWait: 5 * time.Second})
	must(t, err)
	t.Cleanup(func() { tr.Close() })
	conn, err := amqp.Dial(url)
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	const destination, encoded = "eu.billing", "eu~2Ebilling"
	signalQueue, parkedQueue := prefix+".sig."+encoded, prefix+".parked."+encoded
	t.Cleanup(func() {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		for _, q := range []string{signalQueue, parkedQueue, prefix + ".delay.16ms"} {
			ch.QueueDelete(q, false, false, false)
		}
		ch.ExchangeDelete(prefix+".delay.16ms", false, false)
	})
	var sub transport.Subscription
	sub, err = tr.Subscribe(ctx, destination)
	must(t, err)
	defer sub.Close()

	// The queues exist with the arguments of section 6.4: declaring them
	// again with those arguments succeeds (the broker refuses a
	// redeclaration with other arguments).
	ch, err := conn.Channel()
	must(t, err)
	_, err = ch.QueueDeclare(signalQueue, true, false, false, false, amqp.Table{
		"x-queue-type": "quorum", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": parkedQueue,
		"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
	must(t, err)
	_, err = ch.QueueDeclare(parkedQueue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	must(t, err)

	// Publish as a foreign producer: default exchange, mandatory,
	// persistent, confirmed.
	must(t, ch.Confirm(false))
	sig := baton.Signal{ID: baton.NewTokenID(), Conversation: baton.NewTokenID(), Destination: destination, Type: "charge",
		Payload: []byte(`{"amount":12}`)}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", signalQueue, true, false, amqp.Publishing{
		Headers: amqp.Table{"Baton-Token": sig.ID.String(), "Baton-Conversation": sig.Conversation.String(), "Baton-Type": sig.Type},
		Body:    sig.Payload, DeliveryMode: amqp.Persistent, MessageId: sig.ID.String(), AppId: "baton"})
	must(t, err)
	if ok, err := dc.WaitContext(ctx); err != nil || !ok {
		t.Fatalf("publish not confirmed: %v %v", ok, err)
	}
	d, err := sub.Next(ctx)
	must(t, err)
	if got := d.Signal(); got.ID != sig.ID || got.Conversation != sig.Conversation || got.Type != sig.Type ||
		got.Destination != destination || string(got.Payload) != string(sig.Payload) || d.Attempt() != 1 {
		t.Fatalf("delivered %+v attempt %d, published %+v", got, d.Attempt(), sig)
	}
	// A delayed redelivery goes through the 16 ms delay bucket.
	must(t, d.Nack(ctx, 10*time.Millisecond))
	d, err = sub.Next(ctx)
	must(t, err)
	if d.Signal().ID != sig.ID || d.Attempt() != 2 {
		t.Errorf("redelivered %s attempt %d, want %s attempt 2", d.Signal().ID, d.Attempt(), sig.ID)
	}
	if err := ch.ExchangeDeclarePassive(prefix+".delay.16ms", amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		t.Errorf("no delay exchange %s.delay.16ms: %v", prefix, err)
		ch, err = conn.Channel()
		must(t, err)
	}
	// Parking copies the message to the parked queue with the reason.
	must(t, d.Park(ctx, "refused for good"))
	var parked amqp.Delivery
	waitFor(t, "the parked copy", func() bool {
		m, ok, err := ch.Get(parkedQueue, true)
		if err == nil && ok {
			parked = m
		}
		return ok
	})
	if parked.Headers["Baton-Park-Reason"] != "refused for good" || parked.Headers["Baton-Token"] != sig.ID.String() ||
		parked.MessageId != sig.ID.String() || string(parked.Body) != string(sig.Payload) {
		t.Errorf("parked copy: headers %v, message id %q, body %q", parked.Headers, parked.MessageId, parked.Body)
	}
	if n, ok := parked.Headers["Baton-Park-Attempt"].(int64); !ok || n != 2 {
		t.Errorf("Baton-Park-Attempt %#v, want 2", parked.Headers["Baton-Park-Attempt"])
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

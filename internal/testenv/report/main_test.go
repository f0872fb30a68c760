package main

import (
	"strings"
	"testing"
)

// Events as `go test -json` writes them (Go 1.26): a pass, a skip with its
// reason, a failure, and a package that does not build.
const sample = `{"Action":"start","Package":"a"}
{"Action":"output","Package":"b","Output":"?   \tb\t[no test files]\n"}
{"Action":"skip","Package":"b","Elapsed":0}
{"Action":"run","Package":"a","Test":"TestPass"}
{"Action":"output","Package":"a","Test":"TestPass","Output":"=== RUN   TestPass\n"}
{"Action":"output","Package":"a","Test":"TestPass","Output":"--- PASS: TestPass (0.00s)\n"}
{"Action":"pass","Package":"a","Test":"TestPass","Elapsed":0}
{"Action":"run","Package":"a","Test":"TestRoot"}
{"Action":"output","Package":"a","Test":"TestRoot","Output":"=== RUN   TestRoot\n"}
{"Action":"output","Package":"a","Test":"TestRoot","Output":"    x_test.go:12: needs root: creates network namespaces\n"}
{"Action":"output","Package":"a","Test":"TestRoot","Output":"--- SKIP: TestRoot (0.00s)\n"}
{"Action":"skip","Package":"a","Test":"TestRoot","Elapsed":0}
{"Action":"run","Package":"a","Test":"TestRoot2"}
{"Action":"output","Package":"a","Test":"TestRoot2","Output":"    y_test.go:3: needs root: creates network namespaces\n"}
{"Action":"skip","Package":"a","Test":"TestRoot2","Elapsed":0}
{"Action":"run","Package":"a","Test":"TestBad"}
{"Action":"output","Package":"a","Test":"TestBad","Output":"    z_test.go:9: got 1, want 2\n"}
{"Action":"fail","Package":"a","Test":"TestBad","Elapsed":0}
{"Action":"output","Package":"a","Output":"FAIL\ta\t0.01s\n"}
{"Action":"fail","Package":"a","Elapsed":0.01}
`

func TestReport_CountsAndGroupsSkipsByReason(t *testing.T) {
	var out strings.Builder
	s, err := run(strings.NewReader(sample), &out)
	if err != nil {
		t.Fatal(err)
	}
	if s.passed != 1 || s.failed != 1 || len(s.skipped["needs root: creates network namespaces"]) != 2 || !s.broken {
		t.Fatalf("summary %+v", s)
	}
	for _, want := range []string{
		"4 tests and subtests: 1 passed, 1 failed, 2 skipped",
		"skipped 2, needs root: creates network namespaces:\n    TestRoot TestRoot2",
		"--- FAIL: TestBad (a)\n    z_test.go:9: got 1, want 2",
		"FAIL\ta\t0.01s",
		"?   \tb\t[no test files]",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestReport_NoEvents_IsAnError(t *testing.T) {
	var out strings.Builder
	if _, err := run(strings.NewReader("# a\nsyntax error\n"), &out); err == nil {
		t.Fatal("no events accepted")
	}
	if !strings.Contains(out.String(), "syntax error") {
		t.Errorf("go test's own words were dropped: %q", out.String())
	}
}

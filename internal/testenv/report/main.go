// Command report reads `go test -json` on stdin, passes the usual one line per
// package through, prints the output of every failed test, and ends with how
// many tests passed, failed and were skipped, the skipped ones grouped by
// their reason. It exits 1 if anything failed (a test, a package, a build).
// `make unit` pipes its tests through it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// reasonRe finds the message of a t.Skip in a test's output: the text after
// the file:line prefix the testing package writes.
var reasonRe = regexp.MustCompile(`^\s+\S+\.go:\d+: (.*)$`)

type summary struct {
	passed, failed int
	skipped        map[string][]string // reason → tests
	broken         bool                // a package or build failed
}

func main() {
	s, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
	if s.failed > 0 || s.broken {
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) (summary, error) {
	s := summary{skipped: map[string][]string{}}
	outputs := map[string][]string{} // package + test → its output lines
	events := 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not an event: go test's own words, such as a build error.
			fmt.Fprintln(out, sc.Text())
			continue
		}
		events++
		key := e.Package + " " + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Fprint(out, e.Output)
		case e.Action == "build-fail":
			s.broken = true
		case e.Test == "" && e.Action == "output":
			// Package lines: ok, FAIL, "no test files", panics outside a test.
			if !strings.HasPrefix(e.Output, "PASS") && !strings.HasPrefix(e.Output, "FAIL\n") && !strings.HasPrefix(e.Output, "=== ") {
				fmt.Fprint(out, e.Output)
			}
		case e.Test == "" && e.Action == "fail":
			s.broken = true
		case e.Test == "":
			// start, pass, or skip of a package without tests.
		case e.Action == "output":
			outputs[key] = append(outputs[key], strings.TrimRight(e.Output, "\n"))
		case e.Action == "pass":
			s.passed++
			delete(outputs, key)
		case e.Action == "fail":
			s.failed++
			fmt.Fprintf(out, "--- FAIL: %s (%s)\n%s\n", e.Test, e.Package, strings.Join(outputs[key], "\n"))
			delete(outputs, key)
		case e.Action == "skip":
			reason := "no reason given"
			for _, l := range outputs[key] {
				if m := reasonRe.FindStringSubmatch(l); m != nil {
					reason = m[1]
				}
			}
			s.skipped[reason] = append(s.skipped[reason], e.Test)
			delete(outputs, key)
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if events == 0 {
		return s, fmt.Errorf("no test events on stdin: pipe `go test -json` into it")
	}
	skipped := 0
	reasons := make([]string, 0, len(s.skipped))
	for r, tests := range s.skipped {
		skipped += len(tests)
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool { return len(s.skipped[reasons[i]]) > len(s.skipped[reasons[j]]) })
	fmt.Fprintf(out, "\n%d tests and subtests: %d passed, %d failed, %d skipped\n", s.passed+s.failed+skipped, s.passed, s.failed, skipped)
	for _, r := range reasons {
		tests := s.skipped[r]
		sort.Strings(tests)
		fmt.Fprintf(out, "skipped %d, %s:\n    %s\n", len(tests), r, strings.Join(tests, " "))
	}
	return s, nil
}

package checks

import (
	"encoding/xml"
	"fmt"
	"io"
)

// JUnit writes results as a JUnit XML report, one testcase per result, so a
// CI system shows each check with what it saw.
func JUnit(w io.Writer, suite string, rs []Result) error {
	type failure struct {
		Message string `xml:"message,attr"`
		Text    string `xml:",chardata"`
	}
	type testcase struct {
		Name      string   `xml:"name,attr"`
		ClassName string   `xml:"classname,attr"`
		Time      string   `xml:"time,attr"`
		Failure   *failure `xml:"failure,omitempty"`
		SystemOut string   `xml:"system-out"`
	}
	type testsuite struct {
		XMLName  xml.Name   `xml:"testsuite"`
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	s := testsuite{Name: suite, Tests: len(rs)}
	for _, r := range rs {
		tc := testcase{Name: r.Check, ClassName: "emu." + suite, Time: fmt.Sprintf("%.3f", r.Duration.Seconds()), SystemOut: r.Evidence}
		if !r.Passed {
			s.Failures++
			tc.Failure = &failure{Message: "check failed", Text: r.Evidence}
		}
		s.Cases = append(s.Cases, tc)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(s); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

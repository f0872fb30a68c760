package checks

import (
	"encoding/xml"
	"fmt"
	"io"
)

// JUnit writes results as a JUnit XML report, one testcase per result, so a
// CI system shows each check with what it saw: a failed check is a
// <failure>, an inconclusive one an <error message="inconclusive">.
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
		Error     *failure `xml:"error,omitempty"`
		SystemOut string   `xml:"system-out"`
	}
	type testsuite struct {
		XMLName  xml.Name   `xml:"testsuite"`
		Name     string     `xml:"name,attr"`
		Tests    int        `xml:"tests,attr"`
		Failures int        `xml:"failures,attr"`
		Errors   int        `xml:"errors,attr"`
		Cases    []testcase `xml:"testcase"`
	}
	s := testsuite{Name: suite, Tests: len(rs)}
	for _, r := range rs {
		tc := testcase{Name: r.Check, ClassName: "emu." + suite, Time: fmt.Sprintf("%.3f", r.Duration.Seconds()), SystemOut: r.Evidence}
		switch r.Outcome() {
		case OutcomeFail:
			s.Failures++
			tc.Failure = &failure{Message: "check failed", Text: r.Evidence}
		case OutcomeInconclusive:
			// JUnit's <error> is "could not be judged", which CI shows
			// as red, unlike <skipped>: an unproven property is not a pass.
			s.Errors++
			tc.Error = &failure{Message: "inconclusive", Text: r.Evidence}
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

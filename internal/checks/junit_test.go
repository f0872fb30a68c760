package checks_test

import (
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/checks"
)

func TestJUnit_OneTestcasePerResult_FailuresCarryEvidence_InconclusiveIsAnError(t *testing.T) {
	var b strings.Builder
	err := checks.JUnit(&b, "static", []checks.Result{
		{Check: "ping client → ecs", Passed: true, Evidence: "echo reply", Duration: time.Millisecond},
		{Check: "encryption", Passed: false, Evidence: "marker in 3 frames <clear>"},
		{Check: "path", Inconclusive: true, Evidence: "the capture lost 12 frames"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Errors   int `xml:"errors,attr"`
		Cases    []struct {
			Name    string `xml:"name,attr"`
			Failure *struct {
				Text string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
			} `xml:"error"`
		} `xml:"testcase"`
	}
	if err := xml.Unmarshal([]byte(b.String()), &parsed); err != nil {
		t.Fatalf("not XML: %v\n%s", err, b.String())
	}
	if parsed.Tests != 3 || parsed.Failures != 1 || parsed.Errors != 1 || parsed.Cases[2].Failure != nil || parsed.Cases[2].Error == nil || parsed.Cases[2].Error.Message != "inconclusive" || parsed.Cases[1].Failure == nil || parsed.Cases[1].Failure.Text != "marker in 3 frames <clear>" || parsed.Cases[0].Failure != nil {
		t.Fatalf("wrong report: %+v\n%s", parsed, b.String())
	}
}

// Package checktest runs checks from tests, where an inconclusive result
// (a capture that lost frames on a busy machine) is no verdict at all.
package checktest

import (
	"context"
	"testing"

	"github.com/emu-lab/emu/internal/checks"
)

// Attempts bounds Run: a machine so busy that three captures in a row lose
// frames fails the test, inconclusive, rather than hiding it.
const Attempts = 3

// Run runs cs on l as checks.Run does and runs them again, up to Attempts
// times in all, while some result is inconclusive and none failed: an
// inconclusive result says the check could not observe enough to judge and
// must be re-run (`emu check` says so and exits 4), so a re-run is its
// meaning, not a retry of a failure. A failure is returned at once, never
// given a second chance; each inconclusive result is logged. What Run
// returns is judged by the caller exactly as checks.Run's would be.
func Run(t testing.TB, l checks.Lab, cs ...checks.Check) []checks.Result {
	t.Helper()
	var rs []checks.Result
	for attempt := 1; attempt <= Attempts; attempt++ {
		rs = checks.Run(context.Background(), l, cs)
		inconclusive, failed := false, false
		for _, r := range rs {
			switch r.Outcome() {
			case checks.OutcomeInconclusive:
				inconclusive = true
				t.Logf("attempt %d of %d: %s inconclusive: %s", attempt, Attempts, r.Check, r.Evidence)
			case checks.OutcomeFail:
				failed = true
			}
		}
		if !inconclusive || failed {
			break
		}
	}
	return rs
}

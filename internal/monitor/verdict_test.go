package monitor

import "testing"

// The provider's health check with 3 retries, probe by probe: a connection
// goes down on the third probe lost in a row, not before, and comes back on
// the first answer.
func TestVerdict_DownAfterRetriesLostInARow_UpOnFirstAnswer(t *testing.T) {
	v := verdict{retries: 3, up: true}
	for i, c := range []struct {
		answered, up bool
	}{
		{false, true}, {false, true}, {true, true}, // two lost, then an answer: the count restarts
		{false, true}, {false, true}, {false, false}, // three lost in a row: down
		{false, false},               // stays down
		{true, true},                 // one answer: up
		{false, true}, {false, true}, // fresh count
	} {
		if got := v.probe(c.answered); got != c.up {
			t.Fatalf("probe %d (answered %v): up = %v, want %v", i+1, c.answered, got, c.up)
		}
	}
}

func TestVerdict_OneRetry_DownOnFirstLoss(t *testing.T) {
	v := verdict{retries: 1, up: true}
	if v.probe(false) {
		t.Fatal("still up after the only allowed probe was lost")
	}
}

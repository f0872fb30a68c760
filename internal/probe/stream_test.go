package probe

import (
	"testing"
	"time"
)

// A busy machine makes the sender miss ticks: 3 lost probes may span 3 s.
// The outage is the time from the first lost probe to the next answered
// one, and the trailing run lasts to the end of the stream.
func TestStream_OutageIsWallTime_WhenTheSenderMissesTicks(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	r := &StreamResult{Interval: 10 * time.Millisecond, start: t0,
		got:  []bool{true, false, false, false, true, false, false},
		sent: []time.Time{at(0), at(10), at(1500), at(2500), at(3010), at(3020), at(4000)},
		end:  at(5020)}
	r.summarise()
	if r.Sent != 7 || r.Received != 2 {
		t.Errorf("sent %d received %d, want 7 and 2", r.Sent, r.Received)
	}
	if r.Outage != 3*time.Second {
		t.Errorf("outage %s, want 3s (10 ms → 3010 ms)", r.Outage)
	}
	if r.Trailing != 2*time.Second {
		t.Errorf("trailing %s, want 2s (3020 ms → the end at 5020 ms)", r.Trailing)
	}
	if !r.LastLoss.Equal(at(4000)) {
		t.Errorf("last loss at %s, want 4000 ms", r.LastLoss.Sub(t0))
	}
}

package esp

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestReplayWindow_RandomArrivals_MatchesNaiveModel drives the ring bitmap
// with reordered, duplicated and far-jumping sequence numbers and compares
// every verdict with the definition in RFC 4303 §3.4.3 applied to a set.
func TestReplayWindow_RandomArrivals_MatchesNaiveModel(t *testing.T) {
	for _, size := range []int{1, 32, 63, 64, 65, 128, 1000, 1024, MaxReplayWindow} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(size), 1))
			w := newReplayWindow(size)
			seen := map[uint64]bool{}
			var top uint64
			for range 200000 {
				var seq uint64
				switch r := rng.IntN(100); {
				case r < 60: // near the top, either side
					seq = top + uint64(rng.IntN(8)) - min(top, uint64(rng.IntN(size+64)))
				case r < 70: // a jump far ahead
					seq = top + uint64(rng.IntN(3*size+200))
				case r < 90: // a duplicate of something recent
					seq = top - uint64(rng.IntN(min(size, int(top))+1))
				default:
					seq = uint64(rng.IntN(int(top) + 2))
				}
				want := seq != 0 && !seen[seq] && (seq > top || top-seq < uint64(size))
				if got := w.check(seq); got != want {
					t.Fatalf("check(%d) with top %d = %v, want %v", seq, top, got, want)
				}
				if rng.IntN(10) == 0 {
					continue // a packet that failed its ICV: checked, never accepted
				}
				if got := w.accept(seq); got != want {
					t.Fatalf("accept(%d) with top %d = %v, want %v", seq, top, got, want)
				}
				if want {
					seen[seq] = true
					top = max(top, seq)
				}
			}
			if w.highest() != top {
				t.Fatalf("highest %d, want %d", w.highest(), top)
			}
		})
	}
}

func TestReplayWindow_Resumed_RefusesEverythingUpToHighestAcceptsNext(t *testing.T) {
	w := newReplayWindow(64)
	w.accept(5)
	w.resume(1000)
	for _, seq := range []uint64{5, 937, 999, 1000} {
		if w.check(seq) {
			t.Errorf("seq %d accepted after resuming at 1000", seq)
		}
	}
	if !w.accept(1001) || !w.accept(1003) || !w.accept(1002) {
		t.Error("numbers above the resumed top refused")
	}
	w.resume(10) // never backwards
	if w.highest() != 1003 {
		t.Errorf("resume moved the window back to %d", w.highest())
	}
}

package esp

import "sync"

// replayWindow is the RFC 4303 §3.4.3 sliding window. The bitmap is a ring of
// 64-bit words indexed by sequence number, so sliding the window clears
// words instead of shifting the whole bitmap; one spare word keeps the
// oldest and newest positions of a full window in distinct words.
type replayWindow struct {
	mu   sync.Mutex
	size uint64
	top  uint64 // highest accepted sequence number; 0 before the first
	bits []uint64
}

func newReplayWindow(size int) *replayWindow {
	return &replayWindow{size: uint64(size), bits: make([]uint64, (size+63)/64+1)}
}

func (w *replayWindow) check(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fresh(seq)
}

// accept marks seq as seen if it still is fresh.
func (w *replayWindow) accept(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.fresh(seq) {
		return false
	}
	n := uint64(len(w.bits))
	if seq > w.top {
		for i, cur := uint64(0), w.top/64; i < min(seq/64-cur, n); i++ {
			w.bits[(cur+1+i)%n] = 0
		}
		w.top = seq
	}
	w.bits[(seq/64)%n] |= 1 << (seq % 64)
	return true
}

func (w *replayWindow) fresh(seq uint64) bool {
	switch {
	case seq == 0: // never sent without ESN (RFC 4303 §3.3.3)
		return false
	case seq > w.top:
		return true
	case w.top-seq >= w.size:
		return false
	}
	return w.bits[(seq/64)%uint64(len(w.bits))]&(1<<(seq%64)) == 0
}

func (w *replayWindow) highest() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.top
}

// resume moves the window so that its top is highest and every number in it
// counts as seen; it never moves the window back.
func (w *replayWindow) resume(highest uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if highest <= w.top {
		return
	}
	w.top = highest
	for i := range w.bits {
		w.bits[i] = ^uint64(0)
	}
	// In the top's word only the numbers up to it are seen: accept does
	// not clear the word it is already in.
	w.bits[(highest/64)%uint64(len(w.bits))] = ^uint64(0) >> (63 - highest%64)
}

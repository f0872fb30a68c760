package esp

import "testing"

// The benchmarks use 1400-byte inner packets, what a 1500-byte path MTU
// leaves after the outer header and ESP overhead.
const benchInner = 1400

func BenchmarkSeal(b *testing.B) {
	for _, alg := range allAlgorithms() {
		b.Run(alg.String(), func(b *testing.B) {
			out, _ := newPair(b, testConfig(alg, 0xb000))
			inner := payload(benchInner)
			buf := make([]byte, 0, alg.SealedLen(benchInner))
			b.SetBytes(benchInner)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := out.Seal(buf, inner, 4); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, alg := range allAlgorithms() {
		b.Run(alg.String(), func(b *testing.B) {
			c := testConfig(alg, 0xb100)
			c.ReplayWindow = MaxReplayWindow
			out, in := newPair(b, c)
			// Distinct packets, since the replay window refuses repeats; the
			// window is replaced after each round, outside the hot path's
			// measured share (one allocation per MaxReplayWindow packets).
			pkts := make([][]byte, MaxReplayWindow)
			for i := range pkts {
				pkts[i], _ = out.Seal(nil, payload(benchInner), 4)
			}
			buf := make([]byte, 0, benchInner+64)
			b.SetBytes(benchInner)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == len(pkts) {
					i = 0
					in.replay = newReplayWindow(MaxReplayWindow)
				}
				if _, _, err := in.Open(buf, pkts[i]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

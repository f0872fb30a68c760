package esp

import (
	"bytes"
	"testing"
)

// FuzzOpen feeds arbitrary bytes to the decapsulation path of every
// algorithm, which faces the network and must never panic. Each input is also
// sealed as an inner packet and opened again, so the fuzzer explores
// lengths and padding on the authentic path too, which forged bytes alone
// never reach.
func FuzzOpen(f *testing.F) {
	for i, alg := range allAlgorithms() {
		out, _ := newPair(f, testConfig(alg, fuzzSPI))
		for _, n := range []int{0, 1, 13, 14, 15, 16, 17, 100, 1400} {
			pkt, err := out.Seal(nil, payload(n), 4)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), pkt)
		}
	}
	f.Add(uint8(0), []byte{})
	f.Add(uint8(1), make([]byte, 8))
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		algs := allAlgorithms()
		c := testConfig(algs[int(which)%len(algs)], fuzzSPI)
		out, in := newPair(t, c)

		inner, _, err := in.Open(nil, data)
		if err == nil {
			if len(inner) >= len(data) {
				t.Fatalf("inner %d bytes from a %d-byte packet", len(inner), len(data))
			}
			if _, _, err := in.Open(nil, data); err != ErrReplay {
				t.Fatalf("second Open of an accepted packet: %v", err)
			}
		}

		pkt, err := out.Seal(nil, data, which)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := NewInbound(c)
		if err != nil {
			t.Fatal(err)
		}
		got, gotNH, err := fresh.Open(nil, pkt)
		if err != nil || !bytes.Equal(got, data) || gotNH != which {
			t.Fatalf("round trip of %d bytes: err %v, next header %d", len(data), err, gotNH)
		}
	})
}

const fuzzSPI = 0xf00d

package checks

import (
	"testing"
)

// FuzzIsBGP feeds the encryption check's port test arbitrary frames, as any
// host on a captured link may send them: it must never panic, and it only
// says BGP for an IPv4 TCP header with port 179 on either side.
func FuzzIsBGP(f *testing.F) {
	bgp := make([]byte, 14+20+20)
	bgp[14], bgp[14+9], bgp[14+20+3] = 0x45, 6, 179
	f.Add(bgp)
	f.Add(bgp[:14+20+2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		if !isBGP(frame) {
			return
		}
		ihl := int(frame[14]&0x0f) * 4
		tcp := frame[14+ihl:]
		src, dst := int(tcp[0])<<8|int(tcp[1]), int(tcp[2])<<8|int(tcp[3])
		if frame[14]>>4 != 4 || frame[14+9] != 6 || src != 179 && dst != 179 {
			t.Fatalf("called BGP: % x", frame)
		}
	})
}

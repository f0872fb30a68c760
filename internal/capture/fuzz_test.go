package capture

import (
	"testing"
)

// FuzzDecode feeds arbitrary frames, as any host on a captured link can
// send them, to the decoder the encryption and path checks rely on. It
// must never panic, and a frame it accepts as IP has both outer addresses.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 14))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := Packet{Data: data}
		h, err := p.Decode()
		if err == nil && (!h.Src.IsValid() || !h.Dst.IsValid()) {
			t.Fatalf("decoded as IP without both addresses: %+v", h)
		}
		if !p.ContainsBytes(nil) {
			t.Fatal("every frame contains the empty marker")
		}
	})
}

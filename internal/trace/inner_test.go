package trace

import (
	"net/netip"
	"testing"
)

func TestInnerAddrs_IPv4AndIPv6Inner(t *testing.T) {
	v4 := make([]byte, 20)
	v4[0] = 0x45
	copy(v4[12:], []byte{10, 1, 0, 10, 172, 16, 2, 10})
	v6 := make([]byte, 40)
	v6[0] = 0x60
	src, dst := netip.MustParseAddr("fd00:1::10"), netip.MustParseAddr("fd00:172:2::10")
	s16, d16 := src.As16(), dst.As16()
	copy(v6[8:], s16[:])
	copy(v6[24:], d16[:])
	for _, c := range []struct {
		pkt  []byte
		want string
	}{
		{v4, "10.1.0.10 172.16.2.10"},
		{v6, "fd00:1::10 fd00:172:2::10"},
	} {
		got, ok := innerAddrs(c.pkt)
		if !ok || got[0].String()+" "+got[1].String() != c.want {
			t.Errorf("innerAddrs = %v %v, want %s", got, ok, c.want)
		}
	}
	if _, ok := innerAddrs(v6[:39]); ok {
		t.Error("a truncated IPv6 header was accepted")
	}
}

// Decrypted inner packets are bytes a remote gateway chose.
func FuzzInnerAddrs(f *testing.F) {
	f.Add([]byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 0, 10, 172, 16, 2, 10})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if a, ok := innerAddrs(pkt); ok && (!a[0].IsValid() || a[0].Is4() != a[1].Is4()) {
			t.Fatalf("inconsistent addresses %v", a)
		}
	})
}

package trace

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// FuzzCarries feeds the trace's frame decoder arbitrary frames (as any host
// on a link can send them) and frames whose ESP is authentic and carries
// inner of the fuzzer's choosing, which forged bytes never reach: it must
// never panic, and an authentic frame whose inner packet holds the marker
// and an IPv4 or IPv6 header's worth of bytes is always recognised.
func FuzzCarries(f *testing.F) {
	key := make([]byte, 20)
	c := ipsec.Conn{Name: "fuzz", Local: netip.MustParseAddr("10.0.0.1"), Remote: netip.MustParseAddr("172.16.1.10"), Cipher: "aes-gcm-128",
		Out: ipsec.SA{SPI: 0x3001, EncKey: key}, In: ipsec.SA{SPI: 0x3002, EncKey: key}}
	cfg, err := c.Outbound()
	if err != nil {
		f.Fatal(err)
	}
	out, err := esp.NewOutbound(cfg)
	if err != nil {
		f.Fatal(err)
	}
	marker := []byte("emu-marker-fuzz")
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, 34), append([]byte{0x45, 19: 0}, marker...))
	f.Add([]byte{}, append([]byte{0x60, 39: 0}, marker...))
	f.Fuzz(func(t *testing.T, frame, inner []byte) {
		carries(capture.Packet{Data: frame}, marker, []ipsec.Conn{c})

		wire, err := out.Seal(espFrame(c), inner, 4)
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint16(wire[14+2:], uint16(len(wire)-14))
		f, ok := carries(capture.Packet{Data: wire}, marker, []ipsec.Conn{c})
		ipHeader := len(inner) >= 20 && inner[0]>>4 == 4 || len(inner) >= 40 && inner[0]>>4 == 6
		if want := ipHeader && bytes.Contains(inner, marker); ok != want || ok && !f.encrypted {
			t.Fatalf("authentic frame with a %d-byte inner packet: carried %v (encrypted %v), want %v", len(inner), ok, f.encrypted, want)
		}
	})
}

// espFrame is an Ethernet and IPv4 header for an ESP packet of c, to be
// followed by the ESP bytes and its total length set.
func espFrame(c ipsec.Conn) []byte {
	b := make([]byte, 14+20, 2048)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 50
	copy(ip[12:], c.Local.AsSlice())
	copy(ip[16:], c.Remote.AsSlice())
	return b
}

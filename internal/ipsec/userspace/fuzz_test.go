package userspace

import (
	"io"
	"log"
	"net"
	"net/netip"
	"testing"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// FuzzReceive feeds the receive path of a dataplane (outer IP header,
// SPI lookup, ESP decapsulation, GRO coalescing and the write into a real
// TUN interface) one batch: raw as received, forged, and p1..p3 sealed by
// the peer, so the fuzzer reaches the merge with authentic packets of its
// choosing, such as the TCP segments with data offset < 5 of issue 9.
// Needs root: the TUN interface lives in a fresh namespace.
func FuzzReceive(f *testing.F) {
	ns := newTestNS(f)
	local, remote := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	key := make([]byte, 20)
	c := ipsec.Conn{Name: "fuzz", Interface: "ipsec0", Address: tunnelA, Local: local, Remote: remote, Cipher: "aes-gcm-128", MTU: ipsec.TunnelMTU,
		Out: ipsec.SA{SPI: 0x2001, EncKey: key}, In: ipsec.SA{SPI: 0x2002, EncKey: key}}
	var d *Dataplane
	var err error
	ns.do(func() { d, err = open([]ipsec.Conn{c}, log.New(io.Discard, "", 0)) })
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	cfg, err := c.Inbound()
	if err != nil {
		f.Fatal(err)
	}
	peer, err := esp.NewOutbound(cfg) // what the other end seals with
	if err != nil {
		f.Fatal(err)
	}
	r := d.newReceiver(d.socks[local])
	from := &net.IPAddr{IP: remote.AsSlice()}

	// testdata/fuzz/FuzzReceive holds the segments with data offset < 5.
	f.Add([]byte{}, rawTCP(1, 5, 100), rawTCP(101, 5, 100), rawTCP(201, 5, 100))
	f.Add(make([]byte, 28), rawTCP(1, 15, 100), []byte{}, []byte{0x60})
	f.Fuzz(func(t *testing.T, raw, p1, p2, p3 []byte) {
		before := d.Stats()[0].In.Packets
		msgs := r.msgs[:4]
		msgs[0].N = copy(msgs[0].Buffers[0], raw)
		for i, p := range [][]byte{p1, p2, p3} {
			if len(p) > ipsec.TunnelMTU {
				p = p[:ipsec.TunnelMTU]
			}
			b := msgs[i+1].Buffers[0]
			hdr := b[:20]
			clear(hdr)
			hdr[0], hdr[9] = 0x45, 50
			copy(hdr[12:], remote.AsSlice())
			copy(hdr[16:], local.AsSlice())
			wire, err := peer.Seal(b[:20], p, 4)
			if err != nil {
				t.Fatal(err)
			}
			msgs[i+1].N = len(wire)
		}
		for i := range msgs {
			msgs[i].Addr = from
		}
		r.handle(len(msgs))
		if got := d.Stats()[0].In.Packets - before; got != 3 {
			t.Fatalf("%d of the 3 authentic packets decrypted", got)
		}
	})
}

package userspace

import (
	"io"
	"log"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// receiveBench is a dataplane with one tunnel, opened in a fresh namespace
// (a real TUN, a raw socket that never sees traffic) but not started, and
// its receive path driven by hand: what recvmmsg would have filled in is
// written straight into the receiver's messages.
type receiveBench struct {
	ns       *testNS
	d        *Dataplane
	r        *receiver
	peer     *esp.Outbound // seals what the tunnel's inbound SA accepts
	from     *net.IPAddr
	outerHdr [20]byte
}

func newReceiveBench(tb testing.TB) *receiveBench {
	ns := newTestNS(tb)
	local, remote := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	key := make([]byte, 20)
	c := ipsec.Conn{Name: "bench", Interface: "ipsec0", Address: tunnelA, Local: local, Remote: remote, Cipher: "aes-gcm-128", MTU: ipsec.TunnelMTU,
		Out: ipsec.SA{SPI: 0x2001, EncKey: key}, In: ipsec.SA{SPI: 0x2002, EncKey: key}}
	rb := &receiveBench{ns: ns, from: &net.IPAddr{IP: remote.AsSlice()}}
	var err error
	ns.do(func() { rb.d, err = newDataplane([]ipsec.Conn{c}, log.New(io.Discard, "", 0)) })
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rb.d.Close() })
	cfg, err := c.Inbound()
	if err != nil {
		tb.Fatal(err)
	}
	cfg.ReplayWindow = esp.MaxReplayWindow
	if rb.peer, err = esp.NewOutbound(cfg); err != nil {
		tb.Fatal(err)
	}
	rb.r = rb.d.newReceiver(rb.d.socks[local])
	h := rb.outerHdr[:]
	h[0], h[9] = 0x45, 50
	copy(h[12:], remote.AsSlice())
	copy(h[16:], local.AsSlice())
	return rb
}

// seal puts inner, sealed by the peer behind an outer IPv4 header, into
// message i as recvmmsg would have.
func (rb *receiveBench) seal(tb testing.TB, i int, inner []byte) {
	m := &rb.r.msgs[i]
	b := m.Buffers[0]
	copy(b, rb.outerHdr[:])
	wire, err := rb.peer.Seal(b[:len(rb.outerHdr)], inner, 4)
	if err != nil {
		tb.Fatal(err)
	}
	m.N, m.Addr = len(wire), rb.from
}

// FuzzReceive feeds the receive path of a dataplane (outer IP header,
// SPI lookup, ESP decapsulation, GRO coalescing and the write into a real
// TUN interface) one batch: raw as received, forged, and p1..p3 sealed by
// the peer, so the fuzzer reaches the merge with authentic packets of its
// choosing, such as the TCP segments with data offset < 5 of issue 9
// (testdata/fuzz/FuzzReceive). Needs root: the TUN lives in a fresh
// namespace.
func FuzzReceive(f *testing.F) {
	rb := newReceiveBench(f)
	f.Add([]byte{}, rawTCP(1, 5, 100), rawTCP(101, 5, 100), rawTCP(201, 5, 100))
	f.Add(make([]byte, 28), rawTCP(1, 15, 100), []byte{}, []byte{0x60})
	f.Fuzz(func(t *testing.T, raw, p1, p2, p3 []byte) {
		before := rb.d.Stats()[0].In.Packets
		m := &rb.r.msgs[0]
		m.N, m.Addr = copy(m.Buffers[0], raw), rb.from
		for i, p := range [][]byte{p1, p2, p3} {
			rb.seal(t, i+1, p[:min(len(p), ipsec.TunnelMTU)])
		}
		rb.r.handle(4)
		if got := rb.d.Stats()[0].In.Packets - before; got != 3 {
			t.Fatalf("%d of the 3 authentic packets decrypted", got)
		}
	})
}

// tcpSegment is an IPv4 TCP segment from A's tunnel address to B's with
// valid checksums (gopacket computes them), which GRO requires to merge.
func tcpSegment(tb testing.TB, seq uint32, payload []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
		SrcIP: tunnelA.Addr().AsSlice(), DstIP: tunnelB.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5201, Seq: seq, Ack: 1, ACK: true, Window: 512}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(payload)); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkReceiveBatch is the receive path after recvmmsg for one full
// batch of in-sequence TCP segments of 1400 bytes: decryption, GRO and the
// TUN write. It allocates nothing per packet.
func BenchmarkReceiveBatch(b *testing.B) {
	rb := newReceiveBench(b)
	segs := make([][]byte, batchSize)
	const payload = ipsec.TunnelMTU - 40
	for i := range segs {
		segs[i] = tcpSegment(b, uint32(1+i*payload), make([]byte, payload))
	}
	b.SetBytes(int64(len(segs) * ipsec.TunnelMTU))
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i, s := range segs {
			rb.seal(b, i, s)
		}
		b.StartTimer()
		rb.r.handle(len(segs))
	}
	b.StopTimer()
	var st *netlink.LinkStatistics
	var err error
	rb.ns.do(func() { st, err = tunStats() })
	if err != nil {
		b.Fatal(err)
	}
	if st.RxPackets*4 > uint64(b.N*len(segs)) {
		b.Errorf("%d packets written into the TUN for %d segments: GRO merged too little", st.RxPackets, b.N*len(segs))
	}
}

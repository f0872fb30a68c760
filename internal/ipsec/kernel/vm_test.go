package kernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// The tests below need a kernel with ESP and XFRM interfaces, which the
// development machines lack: vmtest/kernel.sh boots one and sets EMU_VMTEST=1.
func requireVM(t *testing.T) {
	t.Helper()
	if os.Getenv("EMU_VMTEST") != "1" {
		t.Skip("kernel ESP: runs inside the QEMU VM (vmtest/kernel.sh); EMU_VMTEST=1 runs it on any kernel with ESP")
	}
	requireRoot(t)
}

// gateways are two namespaces joined by veth ec0, the outer addresses set,
// nothing of IPsec yet.
type gateways struct {
	nsA, nsB string
	a, b     *Dataplane
}

func newGateways(t *testing.T) gateways {
	t.Helper()
	w := wiring.New()
	t.Cleanup(w.Close)
	g := gateways{nsA: namespace(t, w, "a"), nsB: namespace(t, w, "b")}
	if err := w.AddVeth(g.nsA, "ec0", g.nsB, "ec0", 0); err != nil {
		t.Fatal(err)
	}
	if err := w.AddAddress(g.nsA, "ec0", prefix(outerA, outerBits)); err != nil {
		t.Fatal(err)
	}
	if err := w.AddAddress(g.nsB, "ec0", prefix(outerB, outerBits)); err != nil {
		t.Fatal(err)
	}
	g.a, g.b = open(t, g.nsA), open(t, g.nsB)
	return g
}

func (g gateways) up(t *testing.T, a, b ipsec.Conn) {
	t.Helper()
	start := time.Now()
	if err := g.a.Up(a, testIfID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.a.Down(a, testIfID) })
	if err := g.b.Up(b, testIfID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.b.Down(b, testIfID) })
	t.Logf("Up on both ends took %v", time.Since(start))
}

// pingCaptured pings dst from namespace a while capturing on a:ec0.
func (g gateways) pingCaptured(t *testing.T, dst ipsec.Conn) []capture.Packet {
	t.Helper()
	c, err := capture.Start(context.Background(), g.nsA, "ec0", capture.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	rtt, err := probe.Ping(g.nsA, dst.Address.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Let the reply's frames reach the ring.
	time.Sleep(50 * time.Millisecond)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := c.Dropped(); n > 0 {
		t.Fatalf("capture dropped %d frames: no verdict on what crossed ec0", n)
	}
	t.Logf("echo reply from %v in %v; %d frames on a:ec0", dst.Address.Addr(), rtt, len(c.Packets()))
	return c.Packets()
}

// markerPrefix starts every probe payload: a ping in clear shows it on the wire.
var markerPrefix = []byte("emu-marker-")

func leaks(pkts []capture.Packet) int {
	n := 0
	for _, p := range pkts {
		if p.ContainsBytes(markerPrefix) {
			n++
		}
	}
	return n
}

func TestUp_PingCrossesTunnelAsESP_EachCipher(t *testing.T) {
	requireVM(t)
	for _, cipher := range topology.Ciphers {
		t.Run(cipher, func(t *testing.T) {
			g := newGateways(t)
			a, b := connPair(t, cipher)

			// Negative control: the same ping in clear, over the plain
			// route to b's outer address, must show the marker, or the
			// check below could never fail.
			plain := ipsec.Conn{Address: prefixOf(outerB)}
			if n := leaks(g.pingCaptured(t, plain)); n == 0 {
				t.Fatal("control: a ping in clear did not show the marker on ec0: the capture cannot prove encryption")
			} else {
				t.Logf("control: marker seen in clear in %d frames before Up", n)
			}

			g.up(t, a, b)
			pkts := g.pingCaptured(t, b)
			if n := leaks(pkts); n > 0 {
				t.Errorf("the ping's marker crossed ec0 in clear in %d frames", n)
			}
			spis := map[uint32]int{}
			for _, p := range pkts {
				h, err := p.Decode()
				if err != nil {
					continue
				}
				switch {
				case h.ESP:
					spis[h.SPI]++
					if !(h.Src == outerA && h.Dst == outerB || h.Src == outerB && h.Dst == outerA) {
						t.Errorf("ESP between %v and %v, want the endpoints", h.Src, h.Dst)
					}
				case h.Protocol == layers.IPProtocolICMPv4:
					t.Errorf("ICMP crossed ec0 in clear: %v→%v", h.Src, h.Dst)
				}
			}
			for _, want := range []struct {
				dir string
				spi uint32
			}{{"a→b", a.Out.SPI}, {"b→a", a.In.SPI}} {
				t.Logf("%s: %d ESP frames with SPI %#x", want.dir, spis[want.spi], want.spi)
				if spis[want.spi] == 0 {
					t.Errorf("no ESP frame %s with SPI %#x (seen: %v)", want.dir, want.spi, spis)
				}
			}
			requireUserspaceOpens(t, a, pkts)
		})
	}
}

// requireUserspaceOpens opens every ESP frame the kernels sealed with emu's
// userspace ESP engine and the same keys: the cross-check that both
// backends agree on the algorithm's key layout, IV, padding and ICV
// truncation, which a kernel-to-kernel ping alone cannot show.
func requireUserspaceOpens(t *testing.T, a ipsec.Conn, pkts []capture.Packet) {
	t.Helper()
	alg, err := a.Algorithm()
	if err != nil {
		t.Fatal(err)
	}
	opened := map[uint32]int{}
	for _, sa := range []ipsec.SA{a.Out, a.In} {
		in, err := esp.NewInbound(esp.Config{SPI: sa.SPI, Algorithm: alg, EncKey: sa.EncKey, AuthKey: sa.AuthKey})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			ip, ok := gopacket.NewPacket(p.Data, layers.LayerTypeEthernet, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if !ok || ip.Protocol != layers.IPProtocolESP || len(ip.Payload) < 4 || binary.BigEndian.Uint32(ip.Payload) != sa.SPI {
				continue
			}
			inner, _, err := in.Open(nil, ip.Payload)
			if err != nil {
				t.Errorf("userspace %v cannot open the kernel's ESP spi %#x: %v", alg, sa.SPI, err)
				continue
			}
			if !bytes.Contains(inner, markerPrefix) {
				t.Errorf("userspace %v opened spi %#x but the inner packet lacks the ping's marker: %x", alg, sa.SPI, inner)
			}
			opened[sa.SPI]++
		}
	}
	t.Logf("userspace %v opened the kernel's ESP: %v frames by SPI", alg, opened)
	if opened[a.Out.SPI] == 0 || opened[a.In.SPI] == 0 {
		t.Errorf("userspace opened %v, want frames of both SPIs %#x and %#x", opened, a.Out.SPI, a.In.SPI)
	}
}

func TestDown_LeavesNoStatePolicyOrInterface(t *testing.T) {
	requireVM(t)
	g := newGateways(t)
	a, b := connPair(t, topology.Ciphers[0])
	g.up(t, a, b)
	for _, end := range []struct {
		d *Dataplane
		c ipsec.Conn
	}{{g.a, a}, {g.b, b}} {
		if left := leftovers(t, end.d); len(left) != 1+2+6 {
			t.Errorf("%s after Up: want 1 interface, 2 states, 6 policies (in, out, fwd for inner IPv4 and IPv6); have %v", end.c.Name, left)
		}
		start := time.Now()
		if err := end.d.Down(end.c, testIfID); err != nil {
			t.Fatal(err)
		}
		t.Logf("Down took %v", time.Since(start))
		if left := leftovers(t, end.d); len(left) > 0 {
			t.Errorf("Down left: %v", left)
		}
		if err := end.d.Down(end.c, testIfID); err != nil {
			t.Errorf("second Down: %v", err)
		}
	}
}

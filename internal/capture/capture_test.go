package capture

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/testenv"
)

const ipTool = "/usr/sbin/ip"

// pair is two fresh namespaces joined by one veth: a (vA, 192.0.2.1) and
// b (vB, 192.0.2.2). Nothing is created in the host's namespace.
type pair struct {
	a, b         string
	addrA, addrB netip.Addr
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "capture tests create network namespaces and open AF_PACKET sockets")
	_, err := os.Stat(ipTool)
	testenv.Require(t, err, "capture tests set up namespaces with "+ipTool+" (scripts/setup.sh installs iproute2)")
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(ipTool, args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// addNS creates a namespace and, before anything else can fail, registers its
// removal and a check that it is really gone.
func addNS(t *testing.T, name string) {
	t.Helper()
	ip(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command(ipTool, "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("remove namespace %s: %v: %s", name, err, out)
		}
		if _, err := os.Stat(netnsx.Path(name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s leaked: %s still exists", name, netnsx.Path(name))
		}
	})
}

func newPair(t *testing.T) pair {
	t.Helper()
	requireRoot(t)
	id := randomHex(t, 3)
	p := pair{
		a: "emu-test-cap-" + id + "-a", b: "emu-test-cap-" + id + "-b",
		addrA: netip.MustParseAddr("192.0.2.1"), addrB: netip.MustParseAddr("192.0.2.2"),
	}
	addNS(t, p.a)
	addNS(t, p.b)
	ip(t, "-n", p.a, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", p.b)
	ip(t, "-n", p.a, "addr", "add", p.addrA.String()+"/24", "dev", "vA")
	ip(t, "-n", p.b, "addr", "add", p.addrB.String()+"/24", "dev", "vB")
	for _, ns := range []string{p.a, p.b} {
		ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	ip(t, "-n", p.a, "link", "set", "vA", "up")
	ip(t, "-n", p.b, "link", "set", "vB", "up")
	return p
}

func newMarker(t *testing.T) []byte { return []byte("emu-marker-" + randomHex(t, 8)) }

// datagram is the payload of the i-th datagram: the marker, then its number,
// so a frame can be matched to the datagram it carries.
func datagram(marker []byte, i int) []byte { return fmt.Appendf(bytes.Clone(marker), "#%d;", i) }

// sendUDP sends n datagrams from a to b with sockets opened inside the
// namespaces, and returns once b has received all of them, so every frame
// has crossed the veth before the caller stops its captures. b listens so it
// sends no ICMP port-unreachable quoting the marker back.
func sendUDP(t *testing.T, p pair, n int, marker []byte) {
	t.Helper()
	dst := netip.AddrPortFrom(p.addrB, 40000)
	var rx, tx *net.UDPConn
	if err := netnsx.Do(p.b, func() (err error) {
		rx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := netnsx.Do(p.a, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for i := range n {
		if _, err := tx.Write(datagram(marker, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := rx.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for range n {
		if _, err := rx.Read(buf); err != nil {
			t.Fatalf("namespace %s did not receive every datagram: %v", p.b, err)
		}
	}
}

func withMarker(pkts []Packet, marker []byte) []Packet {
	var out []Packet
	for _, p := range pkts {
		if p.ContainsBytes(marker) {
			out = append(out, p)
		}
	}
	return out
}

func only(pkts []Packet, ns string) []Packet {
	var out []Packet
	for _, p := range pkts {
		if p.NS == ns {
			out = append(out, p)
		}
	}
	return out
}

func waitOrFail(t *testing.T, wait func() error, within time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("capture did not end by itself within %v", within)
		return nil
	}
}

func TestCapture_BothEndsOfVeth_SeeMarkerWithDirectionAndOrder(t *testing.T) {
	p := newPair(t)
	marker := newMarker(t)
	const n = 5
	before := time.Now()
	g, err := StartMany(context.Background(), []Endpoint{{p.a, "vA"}, {p.b, "vB"}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, p, n, marker)
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if d := g.Dropped(); d != 0 {
		t.Errorf("kernel dropped %d frames", d)
	}

	all := g.Packets()
	for i := 1; i < len(all); i++ {
		if all[i].Time.Before(all[i-1].Time) {
			t.Fatalf("merged timeline out of order at %d: %v after %v", i, all[i].Time, all[i-1].Time)
		}
	}
	for _, side := range []struct {
		ns, ifname string
		outgoing   bool
	}{{p.a, "vA", true}, {p.b, "vB", false}} {
		got := withMarker(only(all, side.ns), marker)
		if len(got) != n {
			t.Fatalf("%s:%s saw %d marker frames, want %d", side.ns, side.ifname, len(got), n)
		}
		for _, f := range got {
			if f.Interface != side.ifname || f.Outgoing != side.outgoing {
				t.Errorf("%s frame on %q outgoing=%v, want %q outgoing=%v", side.ns, f.Interface, f.Outgoing, side.ifname, side.outgoing)
			}
			if f.Time.Before(before) || f.Time.After(after) {
				t.Errorf("%s frame time %v outside the test's %v..%v", side.ns, f.Time, before, after)
			}
			h, err := f.Decode()
			if err != nil {
				t.Fatal(err)
			}
			if h.Src != p.addrA || h.Dst != p.addrB || h.Protocol != layers.IPProtocolUDP || h.ESP {
				t.Errorf("%s frame decoded as %+v, want UDP %v -> %v", side.ns, h, p.addrA, p.addrB)
			}
		}
	}
	// Each datagram leaves a before it enters b.
	for i := range n {
		d := datagram(marker, i)
		sent, got := withMarker(only(all, p.a), d), withMarker(only(all, p.b), d)
		if len(sent) != 1 || len(got) != 1 {
			t.Fatalf("datagram %d: %d frames on a, %d on b, want 1 and 1", i, len(sent), len(got))
		}
		if got[0].Time.Before(sent[0].Time) {
			t.Errorf("datagram %d entered b at %v, before it left a at %v", i, got[0].Time, sent[0].Time)
		}
	}
}

// Negative control: the datagrams for b arrive on vB, never on b's loopback,
// so a capture there must hold no marker, while a capture on vB at the same
// time proves the traffic really flowed.
func TestCapture_InterfaceTrafficDoesNotCross_ZeroMarkerFrames(t *testing.T) {
	p := newPair(t)
	marker := newMarker(t)
	idle, err := Start(context.Background(), p.b, "lo", Options{})
	if err != nil {
		t.Fatal(err)
	}
	busy, err := Start(context.Background(), p.b, "vB", Options{})
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, p, 5, marker)
	if err := errors.Join(idle.Stop(), busy.Stop()); err != nil {
		t.Fatal(err)
	}
	if got := withMarker(idle.Packets(), marker); len(got) != 0 {
		t.Errorf("loopback of %s saw %d marker frames, want 0", p.b, len(got))
	}
	if got := withMarker(busy.Packets(), marker); len(got) != 5 {
		t.Errorf("positive control: vB saw %d marker frames, want 5", len(got))
	}
}

func TestCapture_MaxPackets_EndsByItself(t *testing.T) {
	p := newPair(t)
	c, err := Start(context.Background(), p.b, "vB", Options{MaxPackets: 3})
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, p, 10, newMarker(t))
	if err := waitOrFail(t, c.Wait, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := len(c.Packets()); got != 3 {
		t.Errorf("kept %d frames, want 3", got)
	}
}

func TestCapture_Duration_EndsByItself(t *testing.T) {
	p := newPair(t)
	start := time.Now()
	c, err := Start(context.Background(), p.a, "vA", Options{Duration: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitOrFail(t, c.Wait, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("capture ended after %v, before its 300ms", took)
	}
}

func TestCapture_ContextCancelled_Ends(t *testing.T) {
	p := newPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, p.a, "vA", Options{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := waitOrFail(t, c.Wait, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestCapture_Stop_LeavesNoGoroutineAndIsIdempotent(t *testing.T) {
	p := newPair(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 10 {
		c, err := Start(ctx, p.a, "vA", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if now := runtime.NumGoroutine(); now > before {
		t.Errorf("%d goroutines before, %d after ten Start/Stop", before, now)
	}
}

func TestCapture_Snaplen_CutsFramesAndKeepsWireLength(t *testing.T) {
	p := newPair(t)
	c, err := Start(context.Background(), p.b, "vB", Options{Snaplen: 40})
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, p, 1, newMarker(t))
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	var udp int
	for _, f := range c.Packets() {
		if len(f.Data) > 40 {
			t.Errorf("kept %d bytes, snaplen 40", len(f.Data))
		}
		if h, err := f.Decode(); err == nil && h.Protocol == layers.IPProtocolUDP {
			udp++
			if f.Length <= 40 {
				t.Errorf("UDP frame wire length %d, want the full length", f.Length)
			}
		}
	}
	if udp != 1 {
		t.Errorf("saw %d UDP frames, want 1", udp)
	}
}

func TestCapture_UnknownInterface_NamesTheOnesThatExist(t *testing.T) {
	p := newPair(t)
	_, err := Start(context.Background(), p.a, "eth9", Options{})
	if err == nil || !strings.Contains(err.Error(), `has no interface "eth9"`) || !strings.Contains(err.Error(), "vA") {
		t.Fatalf("error %v, want one naming eth9 and the interfaces present (lo, vA)", err)
	}
}

// ESP frames built by hand and sent on a raw IP socket (protocol 50) between
// the namespaces: the capture must read the SPI and sequence number back.
func TestCapture_ESPOnTheWire_DecodesSPIAndSequence(t *testing.T) {
	p := newPair(t)
	c, err := Start(context.Background(), p.b, "vB", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var conn net.PacketConn
	if err := netnsx.Do(p.a, func() (err error) {
		conn, err = net.ListenPacket("ip4:50", p.addrA.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	esp := make([]byte, 64)
	binary.BigEndian.PutUint32(esp[0:4], 0xc0ffee01)
	binary.BigEndian.PutUint32(esp[4:8], 7)
	if _, err := conn.WriteTo(esp, &net.IPAddr{IP: p.addrB.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var h Headers
	for !h.ESP && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		for _, f := range c.Packets() {
			if d, err := f.Decode(); err == nil && d.ESP {
				h = d
			}
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	want := Headers{Src: p.addrA, Dst: p.addrB, Protocol: layers.IPProtocolESP, ESP: true, SPI: 0xc0ffee01, Seq: 7}
	if h != want {
		t.Errorf("decoded %+v, want %+v", h, want)
	}
}

// The streaming writer and WritePcap both round-trip through pcapgo.Reader
// with nanosecond timestamps intact.
func TestPcap_StreamedAndWrittenFiles_RoundTrip(t *testing.T) {
	p := newPair(t)
	marker := newMarker(t)
	path := filepath.Join(t.TempDir(), "vB.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pw, err := NewPcapWriter(f, DefaultSnaplen)
	if err != nil {
		t.Fatal(err)
	}
	var streamed []Packet
	g, err := StartMany(context.Background(), []Endpoint{{p.b, "vB"}}, Options{OnPacket: func(pkt Packet) error {
		streamed = append(streamed, pkt)
		return pw.Write(pkt)
	}})
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, p, 4, marker)
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	if kept := g.Packets(); len(kept) != 0 {
		t.Errorf("streaming capture kept %d frames, want none", len(kept))
	}
	if got := withMarker(streamed, marker); len(got) != 4 {
		t.Fatalf("streamed %d marker frames, want 4", len(got))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	assertPcap(t, f, streamed)

	var buf bytes.Buffer
	if err := WritePcap(&buf, streamed); err != nil {
		t.Fatal(err)
	}
	assertPcap(t, &buf, streamed)
}

func assertPcap(t *testing.T, r io.Reader, want []Packet) {
	t.Helper()
	pr, err := pcapgo.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	if pr.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v, want Ethernet", pr.LinkType())
	}
	for i, w := range want {
		data, ci, err := pr.ReadPacketData()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(data, w.Data) || !ci.Timestamp.Equal(w.Time) || ci.Length != w.Length {
			t.Errorf("frame %d read back as %d bytes at %v (wire %d), want %d bytes at %v (wire %d)",
				i, len(data), ci.Timestamp, ci.Length, len(w.Data), w.Time, w.Length)
		}
	}
	if _, _, err := pr.ReadPacketData(); err != io.EOF {
		t.Errorf("after %d frames: %v, want EOF", len(want), err)
	}
}

// More frames than the ring holds at once: the reader must give blocks back
// and follow the kernel around the ring without reordering frames or losing
// any the kernel does not count as dropped.
// floodUDP returns a socket in a sending to b, where a socket listens
// without reading: once its buffer is full it drops quietly, where a closed
// port would answer with ICMP and fail the sender. Both close with the test.
func floodUDP(t *testing.T, p pair) *net.UDPConn {
	t.Helper()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.addrB, 40001))
	var rx, tx *net.UDPConn
	if err := netnsx.Do(p.b, func() (err error) {
		rx, err = net.ListenUDP("udp4", dst)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	if err := netnsx.Do(p.a, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, dst)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close() })
	return tx
}

func TestCapture_MoreFramesThanTheRing_NoSilentLossNoReorder(t *testing.T) {
	p := newPair(t)
	marker := newMarker(t)
	c, err := Start(context.Background(), p.a, "vA", Options{})
	if err != nil {
		t.Fatal(err)
	}
	tx := floodUDP(t, p)
	const n = 6000 // about 6.5 MB of frames through a 4 MB ring
	pad := bytes.Repeat([]byte{'.'}, 1000)
	for i := range n {
		if _, err := tx.Write(append(datagram(marker, i), pad...)); err != nil {
			t.Fatal(err)
		}
		// Bursts of half a block leave the reader time to keep up
		// while the ring wraps.
		if i%500 == 499 {
			time.Sleep(3 * retireTimeout)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	// On a loaded machine the reader may still fall a ring behind; then
	// every missing frame must be in the kernel's drop count, and the rest
	// must still come in sending order.
	next, seen, last := 0, 0, time.Time{}
	for _, f := range withMarker(c.Packets(), marker) {
		if !f.Outgoing {
			continue
		}
		for next < n && !f.ContainsBytes(datagram(marker, next)) {
			next++
		}
		if next == n {
			t.Fatal("frames out of sending order")
		}
		if f.Time.Before(last) {
			t.Fatalf("datagram %d stamped before its predecessor", next)
		}
		last = f.Time
		seen++
		next++
	}
	if missing := n - seen; missing > int(c.Dropped()) {
		t.Errorf("saw %d of %d datagrams, kernel reports only %d drops", seen, n, c.Dropped())
	}
}

func TestCapture_ReaderFallsBehind_IncompleteNamesTheLoss(t *testing.T) {
	p := newPair(t)
	marker := newMarker(t)
	release := make(chan struct{})
	// The reader blocks on the first frame, so the 4 MB ring fills and the
	// kernel drops the rest of a 6.5 MB burst.
	g, err := StartMany(context.Background(), []Endpoint{{NS: p.a, Interface: "vA"}}, Options{OnPacket: func(Packet) error {
		<-release
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	tx := floodUDP(t, p)
	frame := append(marker, bytes.Repeat([]byte{'.'}, 1000)...)
	for range 6000 {
		if _, err := tx.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	var lost *LostFramesError
	if err := g.Incomplete(); !errors.As(err, &lost) {
		t.Fatalf("ring overflowed, Incomplete() = %v, want a *LostFramesError", err)
	}
	if lost.Dropped == 0 || len(lost.Where) != 1 || !strings.HasPrefix(lost.Where[0], p.a+":vA (") {
		t.Errorf("loss not attributed: %+v", lost)
	}
	t.Log(lost)
}

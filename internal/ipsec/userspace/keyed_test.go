package userspace

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/ike"
)

// An IKE-keyed tunnel starts without SAs and drops (and counts) what routing
// sends into it; SAs installed at runtime carry traffic, a rekey to another
// algorithm (a longer ESP header and IV: the send loop encrypts in place at
// the new SA's offset) takes over, and once its last SA is removed the
// tunnel drops again.
func TestDataplane_IKEKeyedTunnel_SendsOnlyWhileItHasAnSA(t *testing.T) {
	e := startKeyedEnds(t)

	e.wantDroppedWithoutSA(t)

	// install gives both ends a CHILD SA pair of alg, as IKE would.
	install := func(alg esp.Algorithm, spiAB, spiBA uint32) {
		t.Helper()
		ab, ba := saPair(t, alg, spiAB, spiBA)
		if err := e.dpA.Install("to-b", ab, ba, nil, 0, false); err != nil {
			t.Fatalf("install on A: %v", err)
		}
		if err := e.dpB.Install("to-a", ba, ab, nil, 0, false); err != nil {
			t.Fatalf("install on B: %v", err)
		}
	}
	install(esp.AESGCM128, 0x3001, 0x3002)
	if !e.udpThrough(t, "first SA") {
		t.Fatalf("no datagram crossed with the first SA installed; log:\n%s", e.logBuf)
	}

	install(esp.AESCBCSHA256, 0x3011, 0x3012)
	// The previous inbound SAs go, as IKE deletes them after a rekey.
	e.dpA.Remove("to-b", 0x3002)
	e.dpB.Remove("to-a", 0x3001)
	if !e.udpThrough(t, "rekeyed") {
		t.Fatalf("no datagram crossed after the rekey; log:\n%s", e.logBuf)
	}
	a, b := e.dpA.Stats()[0], e.dpB.Stats()[0]
	if a.OutSPI != 0x3011 || a.Out.Packets == 0 || b.InSPI != 0x3011 || b.In.Packets == 0 {
		t.Fatalf("the datagram did not cross on the new SA 0x3011: A %+v, B %+v", a, b)
	}

	// The CHILD SA goes down: its last inbound SA is removed.
	e.dpA.Remove("to-b", 0x3012)
	e.wantDroppedWithoutSA(t)
}

// A rekey this end answered (ike.ChildSA.SendAfterOldDeleted): the peer
// installs the new inbound SA only when the answer arrives, so this end
// keeps sending on the old pair until the peer deletes it, then moves to
// the new one. CI saw an echo lost at a rekey when the answering end
// switched at once.
func TestDataplane_RekeyAnswered_SendsOnTheOldSAUntilThePeerDeletesIt(t *testing.T) {
	e := startKeyedEnds(t)
	pair := func(spiAB, spiBA uint32) (ab, ba esp.Config) { return saPair(t, esp.AESGCM128, spiAB, spiBA) }
	ab, ba := pair(0x4001, 0x4002)
	if err := e.dpA.Install("to-b", ab, ba, nil, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := e.dpB.Install("to-a", ba, ab, nil, 0, false); err != nil {
		t.Fatal(err)
	}
	// A answers B's rekey: its new pair is in, B's is not yet.
	ab2, ba2 := pair(0x4011, 0x4012)
	if err := e.dpA.Install("to-b", ab2, ba2, nil, 0, true); err != nil {
		t.Fatal(err)
	}
	if !e.udpThrough(t, "answered, not yet deleted") {
		t.Fatalf("A sent on the new SA before B could know it; A %+v, B drops %+v", e.dpA.Stats()[0], e.dpB.Drops())
	}
	if a := e.dpA.Stats()[0]; a.OutSPI != 0x4001 {
		t.Fatalf("A sends on 0x%08x before B deleted the old pair, want the old 0x4001", a.OutSPI)
	}
	// B gets the answer, installs the new pair and deletes the old one.
	if err := e.dpB.Install("to-a", ba2, ab2, nil, 0, false); err != nil {
		t.Fatal(err)
	}
	e.dpB.Remove("to-a", 0x4001)
	e.dpA.Remove("to-b", 0x4002)
	if !e.udpThrough(t, "after the delete") {
		t.Fatalf("nothing crossed after the old pair went; log:\n%s", e.logBuf)
	}
	if a, b := e.dpA.Stats()[0], e.dpB.Stats()[0]; a.OutSPI != 0x4011 || b.InSPI != 0x4011 || b.In.Packets == 0 {
		t.Fatalf("after the delete A must send on the new SA 0x4011: A %+v, B %+v", a, b)
	}
}

// startKeyedEnds starts the two ends with IKE-keyed tunnels, without SAs:
// the test installs them as IKE would. No Cipher: the algorithm is the
// negotiated SA's.
func startKeyedEnds(t *testing.T) *tunnelEnds {
	t.Helper()
	connA := ipsec.Conn{Name: "to-b", Interface: "ipsec0", Address: tunnelA, Local: outerA, Remote: outerB, MTU: ipsec.TunnelMTU, IKE: &ike.Config{Name: "to-b"}}
	connB := ipsec.Conn{Name: "to-a", Interface: "ipsec0", Address: tunnelB, Local: outerB, Remote: outerA, MTU: ipsec.TunnelMTU, IKE: &ike.Config{Name: "to-a"}}
	return startEnds(t, connA, connB)
}

// saPair is a CHILD SA pair of alg with fresh keys: ab from A to B, ba back.
func saPair(t *testing.T, alg esp.Algorithm, spiAB, spiBA uint32) (ab, ba esp.Config) {
	t.Helper()
	c := ipsec.Conn{Local: outerA, Remote: outerB, Cipher: alg.String(), Out: randomSA(alg, spiAB), In: randomSA(alg, spiBA)}
	ab, err := c.Outbound()
	if err != nil {
		t.Fatal(err)
	}
	if ba, err = c.Inbound(); err != nil {
		t.Fatal(err)
	}
	return ab, ba
}

// An SA takes only the encapsulation it was negotiated for, as XFRM drops
// a packet whose encapsulation is not its state's (XfrmInStateMismatch):
// raw IP protocol 50 ESP for an SA negotiated for ESP in UDP (RFC 3948), and
// ESP in UDP for one negotiated for raw ESP, are counted in
// Drops.WrongEncap and never decrypted; each in its own encapsulation is.
func TestDataplane_EncapMismatch_DroppedAndCountedAsWrongEncap(t *testing.T) {
	e := startKeyedEnds(t)
	// B's NAT-T socket, as its IKE endpoint would own it.
	var natt *net.UDPConn
	var err error
	e.b.do(func() { natt, err = net.ListenUDP("udp4", &net.UDPAddr{IP: outerB.AsSlice(), Port: 4500}) })
	if err != nil {
		t.Fatal(err)
	}
	defer natt.Close()
	// nattRx is B's receiver of ESP in UDP, which the IKE endpoint's NAT-T
	// socket hands its ESP to.
	nattRx := e.dpB.newReceiver(nil)
	fromA := netip.AddrPortFrom(outerA, 4500)
	seal := func(cfg esp.Config) []byte {
		t.Helper()
		out, err := esp.NewOutbound(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wire, err := out.Seal(nil, rawTCP(1, 5, 10), 4)
		if err != nil {
			t.Fatal(err)
		}
		return wire
	}

	// A sends raw ESP on an SA that B negotiated for ESP in UDP.
	ab, ba := saPair(t, esp.AESGCM128, 0x5001, 0x5002)
	if err := e.dpA.Install("to-b", ab, ba, nil, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := e.dpB.Install("to-a", ba, ab, &Encap{Conn: natt}, 4500, false); err != nil {
		t.Fatal(err)
	}
	var c *net.UDPConn
	e.a.do(func() { c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: tunnelB.Addr().AsSlice(), Port: 9}) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("raw ESP")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); e.dpB.Drops().WrongEncap == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("B did not count raw ESP for its ESP-in-UDP SA: drops %+v, A %+v, B %+v; log:\n%s",
				e.dpB.Drops(), e.dpA.Stats()[0], e.dpB.Stats()[0], e.logBuf)
		}
	}
	if a, b := e.dpA.Stats()[0], e.dpB.Stats()[0]; a.Out.Packets == 0 || b.In.Packets != 0 {
		t.Fatalf("B decrypted %d raw ESP packets of the %d A sent on its ESP-in-UDP SA", b.In.Packets, a.Out.Packets)
	}
	// The same SA takes the peer's ESP in UDP.
	nattRx.ESP(fromA, seal(ab))
	nattRx.Flush()
	if b := e.dpB.Stats()[0]; b.In.Packets != 1 {
		t.Fatalf("B's ESP-in-UDP SA decrypted %d packets in UDP, want 1", b.In.Packets)
	}

	// ESP in UDP on an SA that B negotiated for raw ESP.
	ab2, ba2 := saPair(t, esp.AESGCM128, 0x5011, 0x5012)
	if err := e.dpB.Install("to-a", ba2, ab2, nil, 0, false); err != nil {
		t.Fatal(err)
	}
	before := e.dpB.Drops().WrongEncap
	nattRx.ESP(fromA, seal(ab2))
	nattRx.Flush()
	if d := e.dpB.Drops(); d.WrongEncap != before+1 {
		t.Fatalf("B counted %d ESP-in-UDP packets for its raw SA as wrong encap, want 1 (drops %+v)", d.WrongEncap-before, d)
	}
	if b := e.dpB.Stats()[0]; b.InSPI != 0x5011 || b.In.Packets != 0 {
		t.Fatalf("B's raw SA 0x5011 decrypted ESP in UDP: %+v", b)
	}
}

// wantDroppedWithoutSA sends a datagram into A's tunnel and waits for A to
// count it as dropped for want of an SA; B must not have seen any ESP.
func (e *tunnelEnds) wantDroppedWithoutSA(t *testing.T) {
	t.Helper()
	before := e.dpA.Stats()[0].NoSA
	bIn, bDrops := e.dpB.Stats()[0].In.Packets, e.dpB.Drops()
	var c *net.UDPConn
	var err error
	e.a.do(func() { c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: tunnelB.Addr().AsSlice(), Port: 9}) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("no SA")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); e.dpA.Stats()[0].NoSA == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("A did not count the datagram as dropped without an SA: %+v; log:\n%s", e.dpA.Stats()[0], e.logBuf)
		}
	}
	if in, drops := e.dpB.Stats()[0].In.Packets, e.dpB.Drops(); in != bIn || drops != bDrops {
		t.Fatalf("B saw ESP although A has no SA: %d packets decrypted, drops %+v", in-bIn, drops)
	}
}

// ESP in UDP between two emu gateways (force-encap, no NAT) carries a TCP
// stream intact, with the offloads of wireguard-go's conn in effect: the
// sender hands the kernel UDP GSO super-datagrams of ESP packets, the
// receiver's NAT-T socket gets them coalesced (UDP GRO) and splits them.
func TestESPInUDP_EmuToEmu_TCPStreamIntact_SentAsGSOReceivedAsGRO(t *testing.T) {
	cfg := func(name string, local, remote netip.Addr) *ike.Config {
		return &ike.Config{
			Name: name, Local: local, Remote: remote, PSK: []byte("s3cret-psk-16chr"),
			IKE:  ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196, PRF: ike.PRFHMACSHA1, DH: 2},
			ESP:  ike.Suite{Encr: ike.EncrAESGCM16, KeyBits: 128},
			NATT: true, ForceEncap: true,
		}
	}
	connA := ipsec.Conn{Name: "to-b", Interface: "ipsec0", Address: tunnelA, Local: outerA, Remote: outerB, MTU: ipsec.TunnelMTU, IKE: cfg("to-b", outerA, outerB)}
	connB := ipsec.Conn{Name: "to-a", Interface: "ipsec0", Address: tunnelB, Local: outerB, Remote: outerA, MTU: ipsec.TunnelMTU, IKE: cfg("to-a", outerB, outerA)}
	connA.IKE.Initiate = true
	e := startEnds(t, connA, connB)
	var ikeA, ikeB *ike.Endpoint
	var err error
	logger := slog.New(slog.NewTextHandler(e.logBuf, nil))
	e.b.do(func() { ikeB, err = e.dpB.ListenIKE(ike.Options{Addr: outerB, Log: logger}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ikeB.Close() })
	e.a.do(func() { ikeA, err = e.dpA.ListenIKE(ike.Options{Addr: outerA, Log: logger}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ikeA.Close() })
	if err := ikeB.Add(*connB.IKE); err != nil {
		t.Fatal(err)
	}
	if err := ikeA.Add(*connA.IKE); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st := ikeA.Status(); len(st) > 0 && st[0].Phase2 == ike.StateEstablished && st[0].Encap && e.dpB.Stats()[0].OutSPI != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CHILD SA in UDP not established: %+v; log:\n%s", ikeA.Status(), e.logBuf)
		}
	}

	e.streamIntact(t, 8<<20)

	a, b := e.dpA.Stats()[0], e.dpB.Stats()[0]
	if b.In.Packets == 0 || b.In.Packets < a.Out.Packets*9/10 {
		t.Fatalf("B decrypted %d of the %d ESP packets A sealed", b.In.Packets, a.Out.Packets)
	}
	if d := e.dpB.Drops(); d != (Drops{}) {
		t.Errorf("B refused ESP in UDP before any SA: %+v", d)
	}
	gso := e.dpA.UDPOffload()
	if gso.GSOOff || gso.GSORefused > 0 || gso.GSOSends == 0 || gso.GSOSegments < a.Out.Packets/2 {
		t.Errorf("A sent %d ESP packets, only %d of them in %d UDP GSO super-datagrams (%+v)", a.Out.Packets, gso.GSOSegments, gso.GSOSends, gso)
	}
	gro := ikeB.Counters()
	if gro.GROReceived == 0 || gro.GROSegments < b.In.Packets/2 {
		t.Errorf("B decrypted %d ESP packets, only %d of them in %d GRO-coalesced reads", b.In.Packets, gro.GROSegments, gro.GROReceived)
	}
	t.Logf("A sealed %d ESP packets, %d in %d GSO sends; B opened %d, %d in %d GRO reads", a.Out.Packets, gso.GSOSegments, gso.GSOSends, b.In.Packets, gro.GROSegments, gro.GROReceived)
}

// A send loop's batch becomes UDP GSO super-datagrams: runs of equal-sized
// ESP packets to one peer, each closed by a shorter packet, a longer one,
// a 64th segment or another destination, in their order.
func TestUDPWriter_Coalesce_RunsOfEqualSizeBecomeSuperDatagrams(t *testing.T) {
	peer, other := &net.UDPAddr{Port: 4500}, &net.UDPAddr{Port: 4501}
	var ms []ipv4.Message
	add := func(size int, to net.Addr) {
		b := make([]byte, size, 1<<16)
		for i := range b {
			b[i] = byte(len(ms))
		}
		ms = append(ms, ipv4.Message{Buffers: [][]byte{b}, Addr: to})
	}
	for _, size := range []int{100, 100, 100, 60, 100, 200, 200} {
		add(size, peer)
	}
	add(200, other)
	for range 70 {
		add(50, peer)
	}
	w := &udpWriter{e: &Encap{}, maxPayload: maxIPv4UDPPayload}
	n := w.coalesce(ms)
	type dgram struct {
		len, gso int
		to       net.Addr
	}
	want := []dgram{{360, 100, peer}, {100, 0, peer}, {400, 200, peer}, {200, 0, other}, {64 * 50, 50, peer}, {6 * 50, 50, peer}}
	var got []dgram
	for _, m := range w.out[:n] {
		d := dgram{len(m.Buffers[0]), 0, m.Addr}
		if len(m.OOB) > 0 {
			d.gso = int(binary.NativeEndian.Uint16(m.OOB[unix.CmsgLen(0):]))
		}
		got = append(got, d)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("super-datagrams %v, want %v", got, want)
	}
	// The bytes are the packets' in order: each packet's bytes hold its index.
	if b := w.out[0].Buffers[0]; b[0] != 0 || b[100] != 1 || b[200] != 2 || b[300] != 3 || b[359] != 3 {
		t.Fatalf("first super-datagram does not hold packets 0..3 in order")
	}
	if o := (UDPOffload{GSOSends: w.e.gsoSends.Load(), GSOSegments: w.e.gsoSegments.Load()}); o.GSOSends != 4 || o.GSOSegments != 4+2+64+6 {
		t.Fatalf("counted %+v, want 4 super-datagrams of 76 packets", o)
	}
}

// refusingConn is a socket whose kernel refuses UDP_SEGMENT sends with err
// after accepting the first okGSO of them; it records every datagram sent.
type refusingConn struct {
	err   error
	okGSO int
	sent  [][]byte
}

func (c *refusingConn) ReadBatch([]ipv4.Message, int) (int, error) { return 0, nil }

func (c *refusingConn) WriteBatch(ms []ipv4.Message, _ int) (int, error) {
	for i, m := range ms {
		if len(m.OOB) > 0 {
			if c.okGSO == 0 {
				return i, c.err
			}
			c.okGSO--
		}
		c.sent = append(c.sent, slices.Clone(m.Buffers[0]))
	}
	return len(ms), nil
}

// A super-datagram the kernel refuses is sent again packet by packet, from
// the first packet it held on, each packet once: GSO stays off after EIO
// (no checksum offload), and is tried again at the next batch after EINVAL.
func TestUDPWriter_GSORefused_PacketsSentOnceEachInOrder(t *testing.T) {
	for _, tc := range []struct {
		err     error
		gsoOffs bool
	}{{unix.EIO, true}, {unix.EINVAL, false}} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			peer := &net.UDPAddr{Port: 4500}
			var ms []ipv4.Message
			for i, size := range []int{100, 100, 60, 200, 200, 200} {
				b := make([]byte, size, 1<<16)
				b[0] = byte(i)
				ms = append(ms, ipv4.Message{Buffers: [][]byte{b}, Addr: peer})
			}
			c := &refusingConn{err: tc.err, okGSO: 1}
			w := &udpWriter{e: &Encap{}, c: c, maxPayload: maxIPv4UDPPayload}
			if err := w.writeAll(ms, true); err != nil {
				t.Fatal(err)
			}
			// The first super-datagram (packets 0..2) went whole; the second
			// was refused, and its packets 3..5 went one by one.
			var got []int
			for _, d := range c.sent {
				got = append(got, len(d))
			}
			if want := []int{260, 200, 200, 200}; !slices.Equal(got, want) {
				t.Fatalf("datagrams of %v bytes, want %v", got, want)
			}
			if c.sent[1][0] != 3 {
				t.Fatalf("the resent packets start at packet %d, want 3", c.sent[1][0])
			}
			if o := w.e; o.noGSO.Load() != tc.gsoOffs || o.gsoRefused.Load() != 1 {
				t.Fatalf("GSO off %v, refused %d; want off %v, refused 1", o.noGSO.Load(), o.gsoRefused.Load(), tc.gsoOffs)
			}
		})
	}
}

// The reviewer's F2: under load, thousands of packets were lost at each
// CHILD SA rekey with raw ESP. IKE's DELETE of the old SA arrives by UDP
// and was handled while packets for that SA still waited in the raw ESP
// socket's receive buffer; Remove dropped the SA at once, and they were
// counted as unknown SPIs. A deleted SA now drains: what was queued for it
// is still authenticated, replay-checked and delivered, counted apart from
// the current SA; after drainGrace its packets are unknown SPIs.
func TestDataplane_RekeyDelete_PacketsQueuedForTheOldSADelivered_UnknownAfterTheGrace(t *testing.T) {
	a, b := connectedPair(t, outerA.String(), outerB.String())
	logBuf := &bytes.Buffer{}
	connB := ipsec.Conn{Name: "to-a", Interface: "ipsec0", Address: tunnelB, Local: outerB, Remote: outerA, MTU: ipsec.TunnelMTU, IKE: &ike.Config{Name: "to-a"}}
	// B's sockets and interface, but no loops yet: what A sends waits in
	// B's raw ESP socket, as it does behind a busy receive loop.
	var dpB *Dataplane
	var err error
	b.do(func() { dpB, err = newDataplane([]ipsec.Conn{connB}, log.New(logBuf, "", 0)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dpB.Close() })
	ab1, ba1 := saPair(t, esp.AESGCM128, 0x6001, 0x6002)
	ab2, ba2 := saPair(t, esp.AESGCM128, 0x6011, 0x6012)
	for _, p := range [][2]esp.Config{{ba1, ab1}, {ba2, ab2}} { // the first pair, then its rekey
		if err := dpB.Install("to-a", p[0], p[1], nil, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	var srv *net.UDPConn
	var raw net.PacketConn
	b.do(func() { srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: tunnelB.Addr().AsSlice()}) })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	a.do(func() { raw, err = net.ListenPacket("ip4:50", outerA.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	old, err := esp.NewOutbound(ab1) // A's end of the pair being deleted
	if err != nil {
		t.Fatal(err)
	}
	port := srv.LocalAddr().(*net.UDPAddr).Port
	send := func(wire []byte) {
		t.Helper()
		if _, err := raw.WriteTo(wire, &net.IPAddr{IP: outerB.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	innerBytes := 0 // of the datagrams sealed
	seal := func(payload string) []byte {
		t.Helper()
		inner := udpDatagram(t, port, []byte(payload))
		innerBytes += len(inner)
		wire, err := old.Seal(nil, inner, 4)
		if err != nil {
			t.Fatal(err)
		}
		return wire
	}

	const queued = 40
	var first []byte
	for i := range queued {
		wire := seal(fmt.Sprintf("queued %d", i))
		if i == 0 {
			first = wire
		}
		send(wire)
	}
	want := DrainStats{Packets: queued, Bytes: uint64(innerBytes), AuthFailures: 1, ReplayDrops: 1}
	send(first) // a replay
	forged := seal("forged")
	forged[len(forged)-1] ^= 1
	send(forged)
	waitRawQueueSettled(t, b)

	dpB.Remove("to-a", 0x6001)
	removed := time.Now()
	if s := dpB.Stats()[0]; s.InSPI != 0x6011 {
		t.Fatalf("after the delete B shows inbound SA 0x%08x as current, want the rekey's 0x6011", s.InSPI)
	}
	b.do(dpB.start)

	got := map[string]bool{}
	buf := make([]byte, 1500)
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < queued {
		n, err := srv.Read(buf)
		if err != nil {
			t.Fatalf("%d of the %d datagrams queued for the deleted SA delivered (%v); drops %+v, log:\n%s", len(got), queued, err, dpB.Drops(), logBuf)
		}
		got[string(buf[:n])] = true
	}
	var s TunnelStats
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if s = dpB.Stats()[0]; s.InAfterDelete == want || time.Now().After(deadline) {
			break
		}
	}
	if s.InAfterDelete != want || s.In.Packets != 0 {
		t.Fatalf("counted after the delete %+v, on the current SA %+v; want %+v and nothing on the current SA", s.InAfterDelete, s.In, want)
	}
	if d := dpB.Drops(); d != (Drops{}) {
		t.Fatalf("packets queued for the deleted SA refused before it: %+v", d)
	}

	time.Sleep(time.Until(removed.Add(drainGrace + 100*time.Millisecond)))
	send(seal("after the grace"))
	for deadline := time.Now().Add(2 * time.Second); dpB.Drops().UnknownSPI != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("a packet for the SA deleted %s ago: drops %+v, want 1 unknown SPI", time.Since(removed).Round(time.Millisecond), dpB.Drops())
		}
	}
	srv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := srv.Read(buf); err == nil {
		t.Fatalf("delivered %q after the grace", buf[:n])
	}
	if s := dpB.Stats()[0]; s.InAfterDelete != want {
		t.Fatalf("counted after the delete %+v once the grace was over, want %+v", s.InAfterDelete, want)
	}
}

// udpDatagram is an IPv4 UDP datagram from A's tunnel address to B's port,
// checksums computed.
func udpDatagram(t *testing.T, port int, payload []byte) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: tunnelA.Addr().AsSlice(), DstIP: tunnelB.Addr().AsSlice()}
	udp := &layers.UDP{SrcPort: 40000, DstPort: layers.UDPPort(port)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// waitRawQueueSettled waits until the raw sockets of ns hold something and
// their receive queues stopped growing: what was sent to them has arrived.
func waitRawQueueSettled(t *testing.T, ns *testNS) {
	t.Helper()
	last := -1
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var total int
		var err error
		ns.do(func() { total, err = rawRxQueued() })
		if err != nil {
			t.Fatal(err)
		}
		if total > 0 && total == last {
			return
		}
		last = total
	}
	t.Fatalf("the raw sockets' queues never settled (last %d bytes)", last)
}

// rawRxQueued sums the receive queues of the raw sockets of the calling
// thread's namespace (/proc/self/net would be the process's).
func rawRxQueued() (int, error) {
	data, err := os.ReadFile("/proc/thread-self/net/raw")
	if err != nil {
		return 0, err
	}
	total := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseUint(rx, 16, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/net/raw: %q: %w", line, err)
		}
		total += int(n)
	}
	return total, nil
}

// Only a rekey's old inbound SA drains; a tunnel going down takes its SAs,
// draining ones too, at once, and a draining SA gives its SPI up to a new
// SA. (No sockets: the SPI table alone.)
func TestRemove_OldSADrains_TunnelDownTakesEverySAAtOnce(t *testing.T) {
	d := &Dataplane{}
	d.bySPI.Store(&map[uint32]*inboundSA{})
	tn := &tunnel{conn: ipsec.Conn{Name: "to-b"}}
	d.tunnels = []*tunnel{tn}
	install := func(spiOut, spiIn uint32) {
		t.Helper()
		out, in := saPair(t, esp.AESGCM128, spiOut, spiIn)
		if err := d.install(tn, out, in, nil, nil, false); err != nil {
			t.Fatal(err)
		}
	}
	table := func() (live, draining []uint32) {
		for spi, sa := range *d.bySPI.Load() {
			if sa.drainUntil.IsZero() {
				live = append(live, spi)
			} else {
				draining = append(draining, spi)
			}
		}
		slices.Sort(live)
		slices.Sort(draining)
		return live, draining
	}
	install(0x7001, 0x7002)
	install(0x7011, 0x7012)
	d.Remove("to-b", 0x7002)
	d.Remove("to-b", 0x7002) // a second DELETE changes nothing
	if live, draining := table(); !slices.Equal(live, []uint32{0x7012}) || !slices.Equal(draining, []uint32{0x7002}) {
		t.Fatalf("after the rekey's delete: current %x, draining %x; want current [7012], draining [7002]", live, draining)
	}
	if until := (*d.bySPI.Load())[0x7002].drainUntil; time.Until(until) > drainGrace || time.Until(until) < drainGrace-time.Second {
		t.Fatalf("0x7002 drains until %s from now, want %s", time.Until(until).Round(time.Millisecond), drainGrace)
	}
	install(0x7021, 0x7002) // the draining SA's SPI, chosen again
	if live, draining := table(); !slices.Equal(live, []uint32{0x7002, 0x7012}) || len(draining) != 0 {
		t.Fatalf("after a new SA took the draining SA's SPI: current %x, draining %x", live, draining)
	}
	d.Remove("to-b", 0x7012)
	d.Remove("to-b", 0x7002) // the newest: the tunnel goes down
	if live, draining := table(); len(live)+len(draining) != 0 || tn.tx.Load() != nil || tn.in.Load() != nil {
		t.Fatalf("after the tunnel went down: current %x, draining %x, sending %v", live, draining, tn.tx.Load() != nil)
	}
}

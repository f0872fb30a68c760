package userspace

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

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
	// No Cipher: the algorithm is the negotiated SA's.
	connA := ipsec.Conn{Name: "to-b", Interface: "ipsec0", Address: tunnelA, Local: outerA, Remote: outerB, MTU: ipsec.TunnelMTU, IKE: &ike.Config{Name: "to-b"}}
	connB := ipsec.Conn{Name: "to-a", Interface: "ipsec0", Address: tunnelB, Local: outerB, Remote: outerA, MTU: ipsec.TunnelMTU, IKE: &ike.Config{Name: "to-a"}}
	e := startEnds(t, connA, connB)

	e.wantDroppedWithoutSA(t)

	// install gives both ends a CHILD SA pair of alg, as IKE would.
	install := func(alg esp.Algorithm, spiAB, spiBA uint32) {
		t.Helper()
		c := ipsec.Conn{Local: outerA, Remote: outerB, Cipher: alg.String(), Out: randomSA(alg, spiAB), In: randomSA(alg, spiBA)}
		ab, err := c.Outbound()
		if err != nil {
			t.Fatal(err)
		}
		ba, err := c.Inbound()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.dpA.Install("to-b", ab, ba, nil, 0); err != nil {
			t.Fatalf("install on A: %v", err)
		}
		if err := e.dpB.Install("to-a", ba, ab, nil, 0); err != nil {
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
	if gso.GSOOff || gso.GSOSends == 0 || gso.GSOSegments < a.Out.Packets/2 {
		t.Errorf("A sent %d ESP packets, only %d of them in %d UDP GSO super-datagrams (GSO off: %v)", a.Out.Packets, gso.GSOSegments, gso.GSOSends, gso.GSOOff)
	}
	gro := ikeB.Counters()
	if gro.GROReceived == 0 || gro.GROSegments < b.In.Packets/2 {
		t.Errorf("B decrypted %d ESP packets, only %d of them in %d GRO-coalesced reads", b.In.Packets, gro.GROSegments, gro.GROReceived)
	}
	t.Logf("A sealed %d ESP packets, %d in %d GSO sends; B opened %d, %d in %d GRO reads", a.Out.Packets, gso.GSOSegments, gso.GSOSends, b.In.Packets, gro.GROSegments, gro.GROReceived)
}

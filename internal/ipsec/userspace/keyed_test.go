package userspace

import (
	"net"
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

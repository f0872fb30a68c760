package kernel

import (
	"log"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/netnsx"
)

// ikeConnPair is one IKE-keyed connection between the gateways, a
// initiating, with esp as its CHILD SA suite.
func ikeConnPair(esp ike.Suite, forceEncap bool) (a, b ipsec.Conn) {
	cfg := ike.Config{Name: "vpn", Local: outerA, Remote: outerB, PSK: []byte("kernel-ike-test"),
		IKE: ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196, PRF: ike.PRFHMACSHA1, DH: 2},
		ESP: esp, Initiate: true, NATT: forceEncap, ForceEncap: forceEncap}
	cfgB := cfg
	cfgB.Local, cfgB.Remote, cfgB.Initiate = outerB, outerA, false
	a = ipsec.Conn{Name: "vpn", Interface: "ipsec0", Address: innerA, Local: outerA, Remote: outerB, MTU: ipsec.TunnelMTU, IKE: &cfg}
	b = ipsec.Conn{Name: "vpn", Interface: "ipsec0", Address: innerB, Local: outerB, Remote: outerA, MTU: ipsec.TunnelMTU, IKE: &cfgB}
	return a, b
}

// listenIKE runs an IKE endpoint in namespace ns keying d's tunnel c; the
// function returned closes it (DELETE to the peer), also at cleanup.
func listenIKE(t *testing.T, ns string, d *Dataplane, c ipsec.Conn) (*ike.Endpoint, func()) {
	t.Helper()
	k, err := NewIKE(d, []Tunnel{{Conn: c, IfID: testIfID}}, log.New(testWriter{t}, ns+": ", 0))
	if err != nil {
		t.Fatal(err)
	}
	var e *ike.Endpoint
	if err := netnsx.Do(ns, func() (err error) {
		e, err = k.ListenIKE(ike.Options{Addr: c.Local, RetransmitBase: 300 * time.Millisecond})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	closeIt := sync.OnceFunc(func() { e.Close() })
	t.Cleanup(closeIt)
	if err := e.Add(*c.IKE); err != nil {
		t.Fatal(err)
	}
	return e, closeIt
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func established(t *testing.T, es ...*ike.Endpoint) []ike.ChildSA {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var out []ike.ChildSA
		for _, e := range es {
			out = append(out, e.ChildSAs()...)
		}
		if len(out) == len(es) {
			return out
		}
		if time.Now().After(deadline) {
			for _, e := range es {
				t.Logf("%+v", e.Status())
			}
			t.Fatal("no CHILD SA on both ends within 15 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIKE_EachNegotiatedTransform_PingCrossesAsXFRMESP_DeleteRemovesStates:
// for each ESP transform IKE negotiates, with plain ESP and with ESP in UDP,
// the CHILD SA is put into XFRM on both ends (the kernel-name mapping is
// right if and only if the kernel of each side decrypts the other's ESP), a
// ping crosses the veth only as ESP with the negotiated SPIs, and closing
// the endpoints (DELETE) leaves no state behind.
func TestIKE_EachNegotiatedTransform_PingCrossesAsXFRMESP_DeleteRemovesStates(t *testing.T) {
	requireVM(t)
	for _, tc := range []struct {
		name string
		esp  ike.Suite
	}{
		{"AES_GCM_16_128", ike.Suite{Encr: ike.EncrAESGCM16, KeyBits: 128}},
		{"AES_CBC_128-HMAC_SHA1_96", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196}},
		{"AES_CBC_128-HMAC_SHA2_256_128", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA256128}},
		// Every other cipher and HMAC the provider allows, each at least once.
		{"AES_CBC_192-HMAC_MD5_96", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 192, Integ: ike.IntegHMACMD596}},
		{"AES_CBC_256-HMAC_SHA2_384_192", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 256, Integ: ike.IntegHMACSHA384192}},
		{"3DES-HMAC_SHA2_512_256", ike.Suite{Encr: ike.Encr3DES, Integ: ike.IntegHMACSHA512256}},
		{"DES-HMAC_SHA1_96", ike.Suite{Encr: ike.EncrDES, Integ: ike.IntegHMACSHA196}},
	} {
		for _, encap := range []bool{false, true} {
			name := tc.name
			if encap {
				name += "/ESPInUDP"
			}
			t.Run(name, func(t *testing.T) {
				g := newGateways(t)
				a, b := ikeConnPair(tc.esp, encap)
				g.up(t, a, b)
				if n := len(states(t, g.a)) + len(states(t, g.b)); n != 0 {
					t.Fatalf("Up of an IKE-keyed connection made %d states; the agent makes them", n)
				}
				ea, closeA := listenIKE(t, g.nsA, g.a, a)
				eb, closeB := listenIKE(t, g.nsB, g.b, b)
				child := established(t, ea, eb)[0] // a's
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
					case h.ESP && h.Encap != encap:
						t.Errorf("ESP spi %#x in UDP: %v, want %v", h.SPI, h.Encap, encap)
					case h.ESP:
						spis[h.SPI]++
					case h.Protocol == layers.IPProtocolICMPv4:
						t.Errorf("ICMP crossed ec0 in clear: %v→%v", h.Src, h.Dst)
					}
				}
				t.Logf("ESP frames by SPI: %#x (a out %#x, in %#x)", spis, child.OutSPI, child.InSPI)
				if spis[child.OutSPI] == 0 || spis[child.InSPI] == 0 {
					t.Errorf("want ESP with both negotiated SPIs %#x and %#x, saw %v", child.OutSPI, child.InSPI, spis)
				}
				// a deletes the IKE SA: its CHILD SA goes on both ends.
				closeA()
				time.Sleep(200 * time.Millisecond)
				for _, d := range []*Dataplane{g.a, g.b} {
					if left := states(t, d); len(left) > 0 {
						t.Errorf("after DELETE, states left: %v", left)
					}
				}
				closeB()
			})
		}
	}
}

func states(t *testing.T, d *Dataplane) []string {
	t.Helper()
	var out []string
	for _, l := range leftovers(t, d) {
		if strings.HasPrefix(l, "state") {
			out = append(out, l)
		}
	}
	return out
}

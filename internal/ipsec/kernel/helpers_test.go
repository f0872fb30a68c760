package kernel

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

func TestMain(m *testing.M) {
	// The kernel's own words ("Requested AEAD algorithm not found") in errors.
	nl.EnableErrorMessageReporting = true
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "creates network namespaces")
}

// The two gateways of every test: outer addresses on a veth standing for the
// private line, a /30 on the tunnel interfaces.
var (
	outerA, outerB        = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	innerA, innerB        = netip.MustParsePrefix("169.254.10.1/30"), netip.MustParsePrefix("169.254.10.2/30")
	outerBits             = 24
	testIfID       uint32 = 42
)

// connPair resolves both ends of one connection the way deploy does: one
// Secrets for the whole lab, so "generate" yields one master for the pair.
func connPair(t *testing.T, cipher string) (a, b ipsec.Conn) {
	t.Helper()
	secrets := &ipsec.Secrets{}
	ta := topology.Tunnel{Name: "vpn-" + cipher, Interface: "ipsec0", Address: innerA,
		Local: outerA, Remote: outerB, Cipher: cipher, Key: topology.KeyGenerate}
	tb := ta
	tb.Address, tb.Local, tb.Remote = innerB, outerB, outerA
	var err error
	if a, err = secrets.Resolve(&ta); err != nil {
		t.Fatal(err)
	}
	if b, err = secrets.Resolve(&tb); err != nil {
		t.Fatal(err)
	}
	if a.Out.SPI != b.In.SPI || a.In.SPI != b.Out.SPI {
		t.Fatalf("the ends disagree on SPIs: a out/in %#x/%#x, b out/in %#x/%#x", a.Out.SPI, a.In.SPI, b.Out.SPI, b.In.SPI)
	}
	return a, b
}

// namespace creates a named namespace (capture works on names) that the test
// deletes when it ends, pass or fail.
func namespace(t *testing.T, w *wiring.Net, role string) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	name := fmt.Sprintf("emuk-%s-%s", hex.EncodeToString(b), role)
	err := w.CreateNamespace(name, false, false)
	if !errors.Is(err, wiring.ErrExists) {
		// Also after other errors: creation may stop after the mount.
		t.Cleanup(func() {
			if err := wiring.DeleteNamespace(name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func open(t *testing.T, ns string) *Dataplane {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	d, err := Open(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// leftovers lists every link but lo, every XFRM state and policy in the
// namespace of d: after Down or a failed Up there must be none.
func leftovers(t *testing.T, d *Dataplane) []string {
	t.Helper()
	var left []string
	links, err := d.nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" && l.Type() != "veth" {
			left = append(left, fmt.Sprintf("link %s (%s)", l.Attrs().Name, l.Type()))
		}
	}
	states, err := d.nl.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range states {
		left = append(left, fmt.Sprintf("state %v→%v spi %#x", s.Src, s.Dst, s.Spi))
	}
	policies, err := d.nl.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range policies {
		left = append(left, fmt.Sprintf("policy %s %v→%v if_id %d", p.Dir, p.Src, p.Dst, p.Ifid))
	}
	return left
}

func prefix(a netip.Addr, bits int) *net.IPNet { return prefixNet(netip.PrefixFrom(a, bits)) }

func prefixOf(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

package checks_test

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/checks/checktest"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/wiring"
)

func TestMain(m *testing.M) { labtest.Main(m) }

const staticTopology = "static.yaml"

func TestMethod1Static_TunnelUp_PrivatePathCarriesOnlyESP(t *testing.T) {
	// Dead peer detection off: it would put back, within a second, the
	// tunnel route the negative control below withdraws.
	text := strings.Replace(labtest.Shipped(t, staticTopology), "address: 169.254.10.1/30\n", "address: 169.254.10.1/30\n          dpd: off\n", 1)
	l := labtest.DeployText(t, text)
	requireDataplane(t, l, "onprem", "ipsec0", labtest.Dataplane())
	lab := checks.Lab{Topology: l.Topology}
	requirePassed(t, checktest.Run(t, lab, checks.Connectivity))
	enc := checktest.Run(t, lab, checks.Encryption)
	requirePassed(t, enc)
	for _, want := range []string{"10.0.0.1→172.16.1.10", "172.16.1.10→10.0.0.1", "0 with inner addresses", "marker in 0"} {
		if !strings.Contains(enc[0].Evidence, want) {
			t.Errorf("evidence lacks %q: %s", want, enc[0].Evidence)
		}
	}

	// Negative control, and the guide's manual step of method 1: withdraw
	// the routes into the tunnel; traffic must still flow, now in clear, and
	// the same check must see it.
	w := wiring.New()
	defer w.Close()
	mustDel(t, w.DeleteRoute(l.NS("onprem"), cidr("172.16.2.0/24"), nil, "ipsec0", 0))
	mustDel(t, w.DeleteRoute(l.NS("vpc"), cidr("10.1.0.0/24"), net.ParseIP("172.16.1.10"), "", 10))
	requirePassed(t, checktest.Run(t, lab, checks.Connectivity))
	enc = checktest.Run(t, lab, checks.Encryption)
	if enc[0].Passed {
		t.Fatalf("encryption check passed with the tunnel routes withdrawn: %s", enc[0].Evidence)
	}
	for _, want := range []string{"inner addresses in clear", "0 ESP"} {
		if !strings.Contains(enc[0].Evidence, want) {
			t.Errorf("evidence of the clear path lacks %q: %s", want, enc[0].Evidence)
		}
	}
	if strings.Contains(enc[0].Evidence, "marker in 0") {
		t.Errorf("the marker was not seen in clear: %s", enc[0].Evidence)
	}
}

func requirePassed(t *testing.T, rs []checks.Result) {
	t.Helper()
	for _, r := range rs {
		if !r.Passed {
			t.Fatalf("%s failed: %s", r.Check, r.Evidence)
		}
	}
}

func mustDel(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func cidr(s string) *net.IPNet {
	_, n, _ := net.ParseCIDR(s)
	return n
}

// requireDataplane proves which ESP implementation carried the traffic: the
// kernel's tunnel interface is an XFRM interface, the userspace one a TUN.
func requireDataplane(t *testing.T, l *labtest.Lab, node, ifname, want string) {
	t.Helper()
	var kind string
	err := netnsx.Do(l.NS(node), func() error {
		link, err := netlink.LinkByName(ifname)
		if err == nil {
			kind = link.Type()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	wantType := map[string]string{plan.Kernel: "xfrm", plan.Userspace: "tuntap"}[want]
	if kind != wantType {
		t.Fatalf("%s:%s is a %q interface, want %q (%s dataplane)", node, ifname, kind, wantType, want)
	}
	t.Logf("%s:%s runs on the %s dataplane (%s interface)", node, ifname, want, kind)
}

// TestInterop_KernelESPOnOneGateway_UserspaceOnTheOther runs where the
// kernel has ESP (inside the VM): the two implementations must understand
// each other's packets in both directions, with the default cipher and with
// one of each other CBC cipher's block and IV size and HMAC truncation.
func TestInterop_KernelESPOnOneGateway_UserspaceOnTheOther(t *testing.T) {
	if labtest.Dataplane() != plan.Kernel {
		t.Skip("needs a kernel with ESP: runs inside the VM (vmtest/lab.sh)")
	}
	for _, cipher := range []string{"aes-gcm-128", "aes-cbc-sha1", "aes192-cbc-md5", "aes256-cbc-sha384", "3des-cbc-sha512", "des-cbc-sha256"} {
		t.Run(cipher, func(t *testing.T) {
			text := strings.Replace(labtest.Shipped(t, staticTopology), "kind: onprem-gateway\n", "kind: onprem-gateway\n      ipsec-dataplane: userspace\n", 1)
			text = strings.ReplaceAll(text, "          interface: ipsec0\n", "          interface: ipsec0\n          cipher: "+cipher+"\n")
			l := labtest.DeployText(t, text)
			requireDataplane(t, l, "onprem", "ipsec0", plan.Userspace)
			requireDataplane(t, l, "vpngw", "ipsec0", plan.Kernel)
			for _, n := range []string{"onprem", "vpngw"} {
				if got := l.Topology.Node(n).Tunnels[0].Cipher; got != cipher {
					t.Fatalf("%s tunnel cipher %s, want %s", n, got, cipher)
				}
			}
			lab := checks.Lab{Topology: l.Topology}
			requirePassed(t, checktest.Run(t, lab, checks.Connectivity, checks.Encryption))
		})
	}
}

package userspace

import (
	"net"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/testenv"
)

// testNS is a fresh, unnamed network namespace with only loopback up, held
// by one locked thread that runs whatever do hands it. The test's packets
// never leave it; it vanishes with the thread, which is never handed back
// to the runtime, so a failing test leaves nothing behind either.
type testNS struct {
	work chan func()
	fd   netns.NsHandle
}

func newTestNS(t testing.TB) *testNS {
	t.Helper()
	testenv.RequireRoot(t, "creates network namespaces, TUN devices and raw sockets")
	ns := &testNS{work: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with this goroutine
		err := unix.Unshare(unix.CLONE_NEWNET)
		if err == nil {
			ns.fd, err = netns.Get()
		}
		if err == nil {
			var lo netlink.Link
			if lo, err = netlink.LinkByName("lo"); err == nil {
				err = netlink.LinkSetUp(lo)
			}
		}
		ready <- err
		if err != nil {
			return
		}
		for fn := range ns.work {
			fn()
		}
		ns.fd.Close()
	}()
	if err := <-ready; err != nil {
		t.Fatalf("fresh network namespace: %v", err)
	}
	t.Cleanup(func() { close(ns.work) })
	return ns
}

// do runs fn inside the namespace and waits for it.
func (ns *testNS) do(fn func()) {
	done := make(chan struct{})
	ns.work <- func() { defer close(done); fn() }
	<-done
}

// connectedPair returns two namespaces joined by a veth pair, each end
// named eth0 with its address (a /24) and up.
func connectedPair(t *testing.T, addrA, addrB string) (a, b *testNS) {
	t.Helper()
	a, b = newTestNS(t), newTestNS(t)
	var err error
	a.do(func() {
		err = netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(b.fd)})
	})
	if err != nil {
		t.Fatalf("veth pair: %v", err)
	}
	for _, side := range []struct {
		ns   *testNS
		addr string
	}{{a, addrA}, {b, addrB}} {
		side.ns.do(func() {
			var link netlink.Link
			if link, err = netlink.LinkByName("eth0"); err != nil {
				return
			}
			ip := net.ParseIP(side.addr)
			if err = netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(24, 32)}}); err == nil {
				err = netlink.LinkSetUp(link)
			}
		})
		if err != nil {
			t.Fatalf("veth end %s: %v", side.addr, err)
		}
	}
	return a, b
}

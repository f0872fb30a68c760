// Package wiring creates and removes the kernel objects of a lab over
// netlink: named network namespaces, veth pairs, addresses and routes. It
// holds one netlink handle per namespace, opened once, as gont does.
package wiring

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/netnsx"
)

// Net holds open handles to the namespaces one deploy works on. It is safe for
// concurrent use: calls on different namespaces run in parallel, calls on one
// namespace are serialised (a netlink socket carries one request at a time).
type Net struct {
	mu  sync.Mutex
	nss map[string]*nsHandle
}

type nsHandle struct {
	mu sync.Mutex
	ns netns.NsHandle
	nl *netlink.Handle
}

// New returns an empty Net.
func New() *Net { return &Net{nss: map[string]*nsHandle{}} }

// Close releases every handle; the namespaces stay.
func (w *Net) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, h := range w.nss {
		h.nl.Close()
		h.ns.Close()
		delete(w.nss, name)
	}
}

// handle returns the open handle of a namespace, opening it on first use.
func (w *Net) handle(name string) (*nsHandle, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h := w.nss[name]; h != nil {
		return h, nil
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink in namespace %s: %w", name, err)
	}
	h := &nsHandle{ns: ns, nl: nl}
	w.nss[name] = h
	return h, nil
}

// ErrExists is returned when a namespace of that name is already mounted.
var ErrExists = errors.New("already exists")

// CreateNamespace creates a named namespace, sets its sysctls and brings its
// loopback up. The sysctls are written explicitly because a new namespace
// inherits the host's IPv4 settings (net.core.devconf_inherit_init_net=0),
// and a lab must behave the same on every host.
func (w *Net) CreateNamespace(name string, forwarding, ipv6 bool) error {
	return w.CreateNamespaceRecorded(name, forwarding, ipv6, nil)
}

// CreateNamespaceRecorded is CreateNamespace that first hands record the
// new namespace's identity, before it is given its name (bind-mounted at
// /run/netns/<name>): a journal written there lets destroy tell the
// namespace it made from one that took the name later. An error from
// record aborts the creation.
func (w *Net) CreateNamespaceRecorded(name string, forwarding, ipv6 bool, record func(netnsx.ID) error) error {
	if _, err := os.Stat(netnsx.Path(name)); err == nil {
		return fmt.Errorf("namespace %s: %w", name, ErrExists)
	}
	if err := netnsx.PrepareDir(); err != nil {
		return fmt.Errorf("namespace %s: %w", name, err)
	}
	runtime.LockOSThread()
	origin, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("read current namespace: %w", err)
	}
	defer origin.Close()
	ns, setupErr := newNamed(name, record)
	var nl *netlink.Handle
	if setupErr == nil {
		if setupErr = setupInside(forwarding, ipv6); setupErr == nil {
			nl, setupErr = netlink.NewHandle()
		}
	}
	if err := netns.Set(origin); err != nil {
		// Leave the thread locked: the runtime discards it.
		return fmt.Errorf("return from namespace %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	if setupErr != nil {
		if ns.IsOpen() {
			ns.Close()
		}
		return fmt.Errorf("create namespace %s: %w", name, setupErr)
	}
	w.keep(name, ns, nl)
	return nil
}

// newNamed moves the calling (locked) thread into a new network namespace,
// records its identity, then bind-mounts it at its name, as
// netns.NewNamed does but with the record in between.
func newNamed(name string, record func(netnsx.ID) error) (netns.NsHandle, error) {
	ns, err := netns.New()
	if err != nil {
		return ns, err
	}
	if record != nil {
		id, err := netnsx.IdentityOfFD(int(ns))
		if err == nil {
			err = record(id)
		}
		if err != nil {
			return ns, err
		}
	}
	path := netnsx.Path(name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o444)
	if err != nil {
		return ns, err
	}
	f.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "bind", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return ns, err
	}
	return ns, nil
}

// keep caches the handles of a namespace this Net set up.
func (w *Net) keep(name string, ns netns.NsHandle, nl *netlink.Handle) {
	w.mu.Lock()
	w.nss[name] = &nsHandle{ns: ns, nl: nl}
	w.mu.Unlock()
}

// Adopt configures a namespace someone else created (a container's, linked
// under /run/netns) as CreateNamespace configures its own.
func (w *Net) Adopt(name string, forwarding, ipv6 bool) error {
	var nl *netlink.Handle
	err := netnsx.Do(name, func() (err error) {
		if err = setupInside(forwarding, ipv6); err == nil {
			nl, err = netlink.NewHandle()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("set up namespace %s: %w", name, err)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		nl.Close()
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	w.keep(name, ns, nl)
	return nil
}

// setupInside runs on a thread already inside the new namespace.
func setupInside(forwarding, ipv6 bool) error {
	fwd := "0"
	if forwarding {
		fwd = "1"
	}
	sysctls := [][2]string{
		{"net/ipv4/ip_forward", fwd},
		// Strict reverse-path filtering would drop the asymmetric paths a
		// failover produces; the lab's routers are plain forwarders.
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		// ECMP routes (BGP multipath over several tunnels) spread flows by
		// their 5-tuple, as the provider's transit router does; the kernel's
		// default hashes addresses only, so every flow between two hosts
		// would take one tunnel.
		{"net/ipv4/fib_multipath_hash_policy", "1"},
	}
	if ipv6 {
		sysctls = append(sysctls, [2]string{"net/ipv6/conf/all/forwarding", fwd}, [2]string{"net/ipv6/fib_multipath_hash_policy", "1"},
			// Duplicate address detection would keep every IPv6 address
			// tentative (unusable) for a second after deploy; validation
			// already refuses duplicates, so there is nothing to detect.
			[2]string{"net/ipv6/conf/all/accept_dad", "0"}, [2]string{"net/ipv6/conf/default/accept_dad", "0"})
	}
	for _, s := range sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", s[0]), []byte(s[1]), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", s[0], s[1], err)
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring loopback up: %w", err)
	}
	return nil
}

// DeleteNamespace unmounts a named namespace; its interfaces (and so the other
// end of every veth) go with it. A namespace that is already gone is not an
// error, so destroy can run any number of times. A namespace mounted below a
// later mount of /run/netns over itself cannot be reached: the error is then
// a *netnsx.HiddenError that says how to free it.
func DeleteNamespace(name string) error {
	path := netnsx.Path(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount namespace %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		if errors.Is(err, unix.EBUSY) {
			if herr := netnsx.Hidden(name); herr != nil {
				return herr
			}
		}
		return fmt.Errorf("remove namespace %s: %w", name, err)
	}
	return nil
}

// NamespaceExists reports whether a named namespace is mounted.
func NamespaceExists(name string) bool {
	_, err := os.Stat(netnsx.Path(name))
	return err == nil
}

// AddVeth creates a veth pair with one end in each namespace, both up.
func (w *Net) AddVeth(nsA, ifA, nsB, ifB string, mtu int) error {
	a, err := w.handle(nsA)
	if err != nil {
		return err
	}
	b, err := w.handle(nsB)
	if err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ifA, MTU: mtu, Flags: net.FlagUp},
		PeerName:      ifB,
		PeerNamespace: netlink.NsFd(b.ns),
	}
	a.mu.Lock()
	err = a.nl.LinkAdd(veth)
	a.mu.Unlock()
	if err != nil {
		return fmt.Errorf("veth %s:%s <-> %s:%s: %w", nsA, ifA, nsB, ifB, err)
	}
	// The peer is created down; bring it up inside its own namespace.
	b.mu.Lock()
	defer b.mu.Unlock()
	peer, err := b.nl.LinkByName(ifB)
	if err == nil {
		if mtu > 0 {
			err = b.nl.LinkSetMTU(peer, mtu)
		}
		if err == nil {
			err = b.nl.LinkSetUp(peer)
		}
	}
	if err != nil {
		return fmt.Errorf("bring up %s in %s: %w", ifB, nsB, err)
	}
	return nil
}

// AddAddress adds an address to an interface.
func (w *Net) AddAddress(ns, ifname string, addr *net.IPNet) error {
	h, err := w.handle(ns)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	link, err := h.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifname, ns, err)
	}
	if err := h.nl.AddrAdd(link, &netlink.Addr{IPNet: addr}); err != nil {
		return fmt.Errorf("address %s on %s in %s: %w", addr, ifname, ns, err)
	}
	return nil
}

// LimitRate limits an interface's egress to bitsPerSec, as a provider's
// bandwidth spec limits an element. Without splitESP it is one token bucket
// filter (tbf) root qdisc. Buckets hold 20 ms of traffic (at least 64 KiB,
// one GRO super-packet), so that a qdisc watchdog or a sender the busy host
// runs late can catch up: with 2 ms, a TCP stream through the userspace
// tunnel got 56–62% of a 200 Mbit/s spec on two busy cores (the unshaped
// path carried 400), with 20 ms 93–95%. The average rate stays the spec;
// a burst after an idle moment may exceed it for 20 ms. tbf's queue holds
// 20 ms more, enough for TCP to keep the link full without a standing queue
// of seconds.
//
// With splitESP, ESP and everything else each get bitsPerSec of their own
// (an HTB qdisc with two classes, u32 filters on the IP protocol): a
// one-armed VPN gateway sends both directions of its traffic out of one
// interface, encrypted toward the data center and decrypted into the VPC,
// and its spec limits each direction. The qdiscs go with the namespace.
func (w *Net) LimitRate(ns, ifname string, bitsPerSec uint64, splitESP bool) error {
	h, err := w.handle(ns)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	link, err := h.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifname, ns, err)
	}
	rate := bitsPerSec / 8 // bytes per second
	burst := uint32(max(rate/50, 64<<10))
	if splitESP {
		err = splitRate(h.nl, link.Attrs().Index, bitsPerSec, burst)
	} else {
		err = h.nl.QdiscReplace(&netlink.Tbf{
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
			Rate:       rate,
			Buffer:     netlink.Xmittime(rate, burst),
			Limit:      uint32(rate/50) + burst,
		})
	}
	if err != nil {
		return fmt.Errorf("limit %s in %s to %d bit/s: %w", ifname, ns, bitsPerSec, err)
	}
	return nil
}

// HTB classes of splitRate: 1:10 for ESP, 1:20 (the default) for the rest.
const (
	espClass   = 0x10
	otherClass = 0x20
)

func splitRate(h *netlink.Handle, index int, bitsPerSec uint64, burst uint32) error {
	root := netlink.MakeHandle(1, 0)
	htb := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: index, Handle: root, Parent: netlink.HANDLE_ROOT})
	htb.Defcls = otherClass
	if err := h.QdiscReplace(htb); err != nil {
		return fmt.Errorf("htb qdisc: %w", err)
	}
	for _, minor := range []uint16{espClass, otherClass} {
		class := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: index, Parent: root, Handle: netlink.MakeHandle(1, minor)},
			// The quantum only shares spare rate between classes, and these
			// borrow none; a fixed one spares the kernel's "quantum is big".
			netlink.HtbClassAttrs{Rate: bitsPerSec, Ceil: bitsPerSec, Buffer: burst, Cbuffer: burst, Quantum: 60000})
		if err := h.ClassReplace(class); err != nil {
			return fmt.Errorf("htb class 1:%x: %w", minor, err)
		}
	}
	// The protocol byte: IPv4 header offset 9, IPv6 offset 6 (next header;
	// ESP follows the fixed header directly in the lab's packets).
	// One priority per protocol: the kernel keeps one protocol per priority.
	for i, m := range []struct {
		proto     uint16
		off       int32
		mask, val uint32
	}{
		{unix.ETH_P_IP, 8, 0x00ff0000, unix.IPPROTO_ESP << 16},
		{unix.ETH_P_IPV6, 4, 0x0000ff00, unix.IPPROTO_ESP << 8},
	} {
		f := &netlink.U32{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: index, Parent: root, Priority: uint16(i + 1), Protocol: m.proto},
			ClassId:     netlink.MakeHandle(1, espClass),
			Sel:         &netlink.TcU32Sel{Flags: netlink.TC_U32_TERMINAL, Keys: []netlink.TcU32Key{{Mask: m.mask, Val: m.val, Off: m.off}}},
		}
		if err := h.FilterAdd(f); err != nil {
			return fmt.Errorf("u32 filter for ESP: %w", err)
		}
	}
	return nil
}

// ErrRouteExists and ErrNoRoute let callers that add or remove a route
// twice on purpose (restore, withdraw) treat the second time as done.
var (
	ErrRouteExists = unix.EEXIST
	ErrNoRoute     = unix.ESRCH
)

// AddRoute adds a route to the main table. via may be nil for an on-link
// route through dev; dev may be empty to let the kernel pick it from via.
// A route with the same destination and metric fails with ErrRouteExists.
func (w *Net) AddRoute(ns string, dst *net.IPNet, via net.IP, dev string, metric int) error {
	return w.putRoute(ns, dst, via, dev, metric, false)
}

// SetRoute is AddRoute that replaces a route with the same destination and
// metric instead of failing: the route is as asked afterwards, whoever
// added one first.
func (w *Net) SetRoute(ns string, dst *net.IPNet, via net.IP, dev string, metric int) error {
	return w.putRoute(ns, dst, via, dev, metric, true)
}

func (w *Net) putRoute(ns string, dst *net.IPNet, via net.IP, dev string, metric int, replace bool) error {
	h, err := w.handle(ns)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := &netlink.Route{Dst: dst, Gw: via, Priority: metric}
	if dev != "" {
		link, err := h.nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", dev, ns, err)
		}
		r.LinkIndex = link.Attrs().Index
		if via == nil {
			r.Scope = netlink.SCOPE_LINK
		}
	}
	put := h.nl.RouteAdd
	if replace {
		put = h.nl.RouteReplace
	}
	if err := put(r); err != nil {
		return fmt.Errorf("route %s in %s: %w", dst, ns, err)
	}
	return nil
}

// EnsureRoute adds (present) or removes a route, and reports whether it
// changed anything: a route already as asked (ErrRouteExists, ErrNoRoute)
// is not an error. Withdraw and restore steps that may run twice use it.
func (w *Net) EnsureRoute(ns string, dst *net.IPNet, via net.IP, dev string, metric int, present bool) (bool, error) {
	var err error
	if present {
		err = w.AddRoute(ns, dst, via, dev, metric)
		if errors.Is(err, ErrRouteExists) {
			return false, nil
		}
	} else {
		err = w.DeleteRoute(ns, dst, via, dev, metric)
		if errors.Is(err, ErrNoRoute) {
			return false, nil
		}
	}
	return err == nil, err
}

// DeleteRoute removes a route from the main table; dev and via narrow the
// match as they do for `ip route del`.
func (w *Net) DeleteRoute(ns string, dst *net.IPNet, via net.IP, dev string, metric int) error {
	h, err := w.handle(ns)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	// Scope "nowhere" matches a route of any scope, as `ip route del` does.
	r := &netlink.Route{Dst: dst, Gw: via, Priority: metric, Scope: netlink.SCOPE_NOWHERE}
	if dev != "" {
		link, err := h.nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", dev, ns, err)
		}
		r.LinkIndex = link.Attrs().Index
	}
	if err := h.nl.RouteDel(r); err != nil {
		return fmt.Errorf("delete route %s in %s: %w", dst, ns, err)
	}
	return nil
}

// IPNet converts a prefix for the netlink API.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// IP converts an address for the netlink API; the zero Addr becomes nil.
func IP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

package routing

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fib keeps the kernel's main table in step with the RIB: for every best
// path learned from a neighbor, one route (ECMP with Multipath) of protocol
// RouteProtocol at the configured metric. It also feeds kernel routes into
// BGP when the config redistributes them.
//
// The kernel, not a private list, is the record of what is installed: the
// routes of protocol RouteProtocol in the main table are the speaker's (one
// speaker per namespace), so a route the kernel flushed with its link is
// noticed, and one left behind by a killed agent is removed on the first
// sync instead of black-holing traffic.
type fib struct {
	s      *Speaker
	nl     *netlink.Handle
	metric int
	kicks  chan struct{}
	done   chan struct{}

	// Touched only by the sync loop.
	skipped       map[netip.Prefix]string
	redistributed map[netip.Prefix][]byte // path UUIDs in GoBGP

	mu        sync.Mutex
	installed map[netip.Prefix][]netip.Addr // for Routes(), as of the last sync
}

func newFIB(s *Speaker, metric uint32) (*fib, error) {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("bgp: netlink: %w", err)
	}
	f := &fib{
		s: s, nl: nl, metric: int(metric),
		kicks:         make(chan struct{}, 1),
		done:          make(chan struct{}),
		skipped:       map[netip.Prefix]string{},
		redistributed: map[netip.Prefix][]byte{},
	}
	if err := f.subscribe(); err != nil {
		f.close()
		return nil, err
	}
	f.kick()
	return f, nil
}

// subscribe kicks a sync on every link, address or route change: a nexthop
// that becomes reachable, a static route an operator withdraws, a connected
// subnet that appears. The speaker's own route changes are ignored, or each
// sync would schedule another.
func (f *fib) subscribe() error {
	links := make(chan netlink.LinkUpdate)
	addrs := make(chan netlink.AddrUpdate)
	routes := make(chan netlink.RouteUpdate)
	if err := netlink.LinkSubscribe(links, f.done); err != nil {
		return fmt.Errorf("bgp: watch links: %w", err)
	}
	if err := netlink.AddrSubscribe(addrs, f.done); err != nil {
		return fmt.Errorf("bgp: watch addresses: %w", err)
	}
	err := netlink.RouteSubscribeWithOptions(routes, f.done, netlink.RouteSubscribeOptions{
		ErrorCallback: func(err error) { f.s.log.Printf("bgp: watch routes: %v", err) },
	})
	if err != nil {
		return fmt.Errorf("bgp: watch routes: %w", err)
	}
	go func() {
		for {
			select {
			case <-f.done:
				return
			case <-links:
			case <-addrs:
			case u := <-routes:
				if u.Protocol == RouteProtocol {
					continue
				}
			}
			f.kick()
		}
	}()
	return nil
}

// kick asks for a sync; kicks that arrive during one collapse into one.
func (f *fib) kick() {
	select {
	case f.kicks <- struct{}{}:
	default:
	}
}

func (f *fib) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kicks:
			f.sync(ctx)
		}
	}
}

func (f *fib) sync(ctx context.Context) {
	if len(f.s.cfg.Redistribute) > 0 {
		f.syncRedistribute(ctx)
	}
	best, err := f.s.bestPaths(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.s.log.Printf("bgp: read RIB: %v", err)
		}
		return
	}
	want := map[netip.Prefix][]netip.Addr{}
	local := map[netip.Prefix]bool{}
	for _, p := range best {
		if p.local {
			local[p.Prefix] = true
			continue
		}
		if reason := f.unreachable(p.NextHop); reason != "" {
			f.skip(p.Prefix, fmt.Sprintf("nexthop %s %s", p.NextHop, reason))
			continue
		}
		if !slices.Contains(want[p.Prefix], p.NextHop) {
			want[p.Prefix] = append(want[p.Prefix], p.NextHop)
		}
	}
	// The node reaches what it originates by its own routes.
	for p := range local {
		delete(want, p)
	}
	for p, nhs := range want {
		slices.SortFunc(nhs, netip.Addr.Compare)
		want[p] = nhs
	}
	for p := range f.skipped {
		if !slices.ContainsFunc(best, func(b ribPath) bool { return b.Prefix == p }) {
			delete(f.skipped, p) // gone from the RIB: log again if it returns
		}
	}
	have, err := f.kernelRoutes()
	if err != nil {
		f.s.log.Printf("bgp: read FIB: %v", err)
		return
	}
	for _, r := range have {
		p := prefixOf(r.Dst)
		if r.Priority == f.metric && slices.Equal(nexthops(r), want[p]) {
			delete(want, p) // already right
			continue
		}
		if _, keep := want[p]; keep && r.Priority == f.metric {
			continue // RouteReplace below rewrites it in place
		}
		if err := f.nl.RouteDel(&r); err != nil {
			f.s.log.Printf("bgp: fib: remove %s: %v", p, err)
			continue
		}
		f.s.log.Printf("bgp: fib: removed %s via %v", p, nexthops(r))
	}
	for p, nhs := range want {
		if err := f.nl.RouteReplace(f.route(p, nhs)); err != nil {
			f.skip(p, fmt.Sprintf("install via %v: %v", nhs, err))
			continue
		}
		delete(f.skipped, p)
		f.s.log.Printf("bgp: fib: installed %s via %v metric %d", p, nhs, f.metric)
	}
	f.record()
}

// unreachable says why a nexthop cannot be installed, or "" if it is on a
// connected subnet. The kernel would accept a gateway only reachable through
// another route on some setups; BGP's nexthop must be the neighbor itself.
func (f *fib) unreachable(nh netip.Addr) string {
	if !nh.Is4() {
		return "is not an IPv4 address"
	}
	rs, err := f.nl.RouteGet(nh.AsSlice())
	switch {
	case err != nil:
		return fmt.Sprintf("is unreachable (%v)", err)
	case len(rs) == 0:
		return "is unreachable"
	case rs[0].Type != unix.RTN_UNICAST:
		return "is a local address"
	case rs[0].Gw != nil:
		return fmt.Sprintf("is not directly connected (reached via %s)", rs[0].Gw)
	}
	return ""
}

// skip logs why a prefix is not installed, once per distinct reason.
func (f *fib) skip(p netip.Prefix, reason string) {
	if f.skipped[p] != reason {
		f.skipped[p] = reason
		f.s.log.Printf("bgp: fib: not installing %s: %s", p, reason)
	}
}

func (f *fib) route(p netip.Prefix, nhs []netip.Addr) *netlink.Route {
	r := &netlink.Route{
		Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		Protocol: RouteProtocol,
		Priority: f.metric,
		Table:    unix.RT_TABLE_MAIN,
	}
	if len(nhs) == 1 {
		r.Gw = nhs[0].AsSlice()
		return r
	}
	for _, nh := range nhs {
		r.MultiPath = append(r.MultiPath, &netlink.NexthopInfo{Gw: nh.AsSlice()})
	}
	return r
}

// kernelRoutes lists the speaker's routes in the main table.
func (f *fib) kernelRoutes() ([]netlink.Route, error) {
	return f.nl.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
}

func (f *fib) record() {
	have, err := f.kernelRoutes()
	if err != nil {
		return
	}
	m := map[netip.Prefix][]netip.Addr{}
	for _, r := range have {
		m[prefixOf(r.Dst)] = nexthops(r)
	}
	f.mu.Lock()
	f.installed = m
	f.mu.Unlock()
}

func (f *fib) snapshot() map[netip.Prefix][]netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.installed)
}

// syncRedistribute announces exactly the kernel routes the config asks for.
// Routes whose link lost carrier are left out, as a router withdraws the
// subnet of an interface that went down.
func (f *fib) syncRedistribute(ctx context.Context) {
	routes, err := f.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		f.s.log.Printf("bgp: redistribute: read routes: %v", err)
		return
	}
	connected := slices.Contains(f.s.cfg.Redistribute, Connected)
	static := slices.Contains(f.s.cfg.Redistribute, Static)
	want := map[netip.Prefix]bool{}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Flags&unix.RTNH_F_LINKDOWN != 0 {
			continue
		}
		isConnected := r.Protocol == unix.RTPROT_KERNEL && r.Scope == netlink.SCOPE_LINK
		isStatic := r.Protocol == unix.RTPROT_BOOT || r.Protocol == unix.RTPROT_STATIC
		if (connected && isConnected) || (static && isStatic) {
			want[prefixOf(r.Dst)] = true
		}
	}
	for _, p := range f.s.cfg.Networks {
		delete(want, p) // originated anyway
	}
	for p, uuid := range f.redistributed {
		if want[p] {
			delete(want, p)
			continue
		}
		if err := f.s.deletePath(ctx, uuid); err != nil {
			f.s.log.Printf("bgp: redistribute: withdraw %s: %v", p, err)
			continue
		}
		delete(f.redistributed, p)
		f.s.log.Printf("bgp: redistribute: withdrew %s", p)
	}
	for p := range want {
		uuid, err := f.s.addPath(ctx, p)
		if err != nil {
			f.s.log.Printf("bgp: redistribute: announce %s: %v", p, err)
			continue
		}
		f.redistributed[p] = uuid
		f.s.log.Printf("bgp: redistribute: announced %s", p)
	}
}

// close stops the watches and removes every route the speaker installed.
func (f *fib) close() {
	close(f.done)
	have, err := f.kernelRoutes()
	if err != nil {
		f.s.log.Printf("bgp: fib: read routes to remove: %v", err)
	}
	for _, r := range have {
		if err := f.nl.RouteDel(&r); err != nil {
			f.s.log.Printf("bgp: fib: remove %s: %v", prefixOf(r.Dst), err)
		}
	}
	if len(have) > 0 {
		f.s.log.Printf("bgp: fib: removed %d route(s)", len(have))
	}
	f.nl.Close()
}

func prefixOf(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0) // the default route
	}
	a, _ := netip.AddrFromSlice(n.IP)
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits)
}

func nexthops(r netlink.Route) []netip.Addr {
	var out []netip.Addr
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	if r.Gw != nil {
		add(r.Gw)
	}
	for _, nh := range r.MultiPath {
		add(nh.Gw)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

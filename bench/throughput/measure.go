package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/wiring"
)

// ecs is where the stream goes: the ECS instance, behind the VPN gateway.
var ecs = netip.AddrPortFrom(netip.MustParseAddr("172.16.2.10"), 5201)

// route is a route of the lab that steers client↔ECS traffic into a tunnel.
type route struct {
	node   string
	dst    *net.IPNet
	via    net.IP
	dev    string
	metric int
}

// The routes that steer client↔ECS traffic into the tunnel. Withdrawn on
// onprem and the VPC, the traffic takes the plain private path (method 1 of
// the guide, as internal/checks tests it); moved from ipsec0 to wg0 on both
// gateways, it takes wireguard-go's tunnel.
var (
	onpremIntoTunnel = route{node: "onprem", dst: mustCIDR("172.16.2.0/24"), dev: "ipsec0"}
	vpcToGateway     = route{node: "vpc", dst: mustCIDR("10.1.0.0/24"), via: net.ParseIP("172.16.1.10"), metric: 10}
	vpngwIntoTunnel  = route{node: "vpngw", dst: mustCIDR("10.1.0.0/24"), dev: "ipsec0"}
)

// mode is one way for the stream to cross the lab: a row of the table.
type mode struct {
	name string
	lab  *benchLab
	// through is the tunnel interface on onprem the stream must use ("" for
	// plain, which must not use ipsec0).
	through string
	// without and with are routes taken away and added for the stream and
	// put back after it.
	without, with []route
	// ceiling runs rawIPCeiling instead of a TCP stream.
	ceiling bool
}

// sample is one stream: its rate in bit/s and what was lost on the way.
type sample struct {
	bps   float64
	drops drops
}

// stream runs one TCP stream client → ECS in m's lab with m's routes.
func (m mode) stream(ctx context.Context, d time.Duration) (s sample, err error) {
	if m.ceiling {
		s.bps, err = rawIPCeiling(ctx, m.lab, d)
		return s, err
	}
	w := wiring.New()
	defer w.Close()
	undo, err := m.setRoutes(w)
	defer func() {
		if uerr := undo(); uerr != nil && err == nil {
			err = fmt.Errorf("%s: put the routes back: %w", m.name, uerr)
		}
	}()
	if err != nil {
		return s, fmt.Errorf("%s: %w", m.name, err)
	}
	l := m.lab
	tunIf := m.through
	if tunIf == "" {
		tunIf = "ipsec0"
	}
	before, err := l.drops(tunIf)
	if err != nil {
		return s, err
	}
	carriedBefore, err := l.txBytes("onprem", tunIf)
	if err != nil {
		return s, err
	}
	if s.bps, err = probe.Throughput(ctx, l.ns("client"), l.ns("ecs"), ecs, d); err != nil {
		return s, fmt.Errorf("%s stream: %w", m.name, err)
	}
	after, err := l.drops(tunIf)
	if err != nil {
		return s, err
	}
	carriedAfter, err := l.txBytes("onprem", tunIf)
	if err != nil {
		return s, err
	}
	s.drops = after.minus(before)
	carried := carriedAfter - carriedBefore
	switch {
	case m.through == "" && carried > 1<<20:
		return s, fmt.Errorf("plain: %d bytes entered onprem's ipsec0 with its routes withdrawn: something put them back", carried)
	case m.through != "" && float64(carried)*8 < s.bps*d.Seconds()/2:
		return s, fmt.Errorf("%s: onprem's %s carried only %d bytes of the stream: it took another path", m.name, m.through, carried)
	}
	return s, nil
}

// setRoutes applies m's route changes and returns what reverts them, also
// after a partial failure.
func (m mode) setRoutes(w *wiring.Net) (undo func() error, err error) {
	var done []func() error
	undo = func() error {
		var errs []error
		for i := len(done) - 1; i >= 0; i-- {
			errs = append(errs, done[i]())
		}
		return errors.Join(errs...)
	}
	l := m.lab
	for _, r := range m.without {
		if err := w.DeleteRoute(l.ns(r.node), r.dst, r.via, r.dev, r.metric); err != nil {
			return undo, fmt.Errorf("withdraw route %s on %s: %w", r.dst, r.node, err)
		}
		done = append(done, func() error { return ignoreExists(w.AddRoute(l.ns(r.node), r.dst, r.via, r.dev, r.metric)) })
	}
	for _, r := range m.with {
		if err := w.AddRoute(l.ns(r.node), r.dst, r.via, r.dev, r.metric); err != nil {
			return undo, fmt.Errorf("route %s on %s: %w", r.dst, r.node, err)
		}
		done = append(done, func() error { return w.DeleteRoute(l.ns(r.node), r.dst, r.via, r.dev, r.metric) })
	}
	return undo, nil
}

func ignoreExists(err error) error {
	if errors.Is(err, wiring.ErrRouteExists) {
		return nil
	}
	return err
}

// onDev is routes moved to dev.
func onDev(dev string, routes ...route) []route {
	out := slices.Clone(routes)
	for i := range out {
		out[i].dev = dev
	}
	return out
}

// drops are losses the ESP counters cannot see: socket drops on both
// gateways (raw ESP sockets, wireguard's UDP sockets: no room in the
// receive buffer), drops at their tunnel interfaces (TUN queue full, or a
// write refused), and, for every loss anywhere on the path, the sender's
// TCP retransmissions.
type drops struct{ socket, tun, retrans uint64 }

func (a drops) minus(b drops) drops {
	return drops{a.socket - b.socket, a.tun - b.tun, a.retrans - b.retrans}
}

// drops reads the counters, with tunIf the gateways' tunnel interface.
func (l *benchLab) drops(tunIf string) (drops, error) {
	var sum drops
	err := netnsx.Do(l.ns("client"), func() (err error) {
		sum.retrans, err = tcpRetransmits()
		return err
	})
	if err != nil {
		return sum, fmt.Errorf("TCP counters of client: %w", err)
	}
	for _, node := range gateways {
		err := netnsx.Do(l.ns(node), func() error {
			for _, table := range []string{"raw", "udp"} {
				n, err := socketDrops(table)
				if err != nil {
					return err
				}
				sum.socket += n
			}
			return nil
		})
		if err == nil {
			var st *netlink.LinkStatistics
			if st, err = l.linkStats(node, tunIf); err == nil {
				sum.tun += st.RxDropped + st.TxDropped
			}
		}
		if err != nil {
			return sum, fmt.Errorf("drop counters of %s: %w", node, err)
		}
	}
	return sum, nil
}

// socketDrops sums the drops column of /proc/net/<table> (raw, udp) of the
// calling thread's namespace (thread-self: netnsx switches a thread, not
// the process).
func socketDrops(table string) (uint64, error) {
	f, err := os.Open("/proc/thread-self/net/" + table)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var sum uint64
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if n, err := strconv.ParseUint(fields[len(fields)-1], 10, 64); err == nil {
			sum += n
		}
	}
	return sum, sc.Err()
}

// linkStats reads an interface's counters over netlink (sysfs shows the
// namespace it was mounted in, not the node's).
func (l *benchLab) linkStats(node, ifname string) (*netlink.LinkStatistics, error) {
	nl, err := wiring.Open(l.ns(node))
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	link, err := nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", ifname, node, err)
	}
	if link.Attrs().Statistics == nil {
		return nil, fmt.Errorf("%s of %s has no counters", ifname, node)
	}
	return link.Attrs().Statistics, nil
}

// txBytes counts what routing sent into an interface of node.
func (l *benchLab) txBytes(node, ifname string) (uint64, error) {
	st, err := l.linkStats(node, ifname)
	if err != nil {
		return 0, err
	}
	return st.TxBytes, nil
}

// tcpRetransmits is RetransSegs of the calling thread's namespace.
func tcpRetransmits() (uint64, error) {
	data, err := os.ReadFile("/proc/thread-self/net/snmp")
	if err != nil {
		return 0, err
	}
	var names []string
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "RetransSegs" && i < len(fields) {
				return strconv.ParseUint(fields[i], 10, 64)
			}
		}
	}
	return 0, errors.New("no Tcp RetransSegs in /proc/net/snmp")
}

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

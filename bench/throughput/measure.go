package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/wiring"
)

// ecs is where the stream goes: the ECS instance, behind the VPN gateway.
var ecs = netip.AddrPortFrom(netip.MustParseAddr("172.16.2.10"), 5201)

// tunnelRoute is a route that steers client↔ECS traffic into the tunnel;
// withdrawn, the traffic takes the plain private path (method 1 of the
// guide, as internal/checks tests it).
type tunnelRoute struct {
	node   string
	dst    *net.IPNet
	via    net.IP
	dev    string
	metric int
}

var tunnelRoutes = []tunnelRoute{
	{node: "onprem", dst: mustCIDR("172.16.2.0/24"), dev: "ipsec0"},
	{node: "vpc", dst: mustCIDR("10.1.0.0/24"), via: net.ParseIP("172.16.1.10"), metric: 10},
}

// row is one repetition: both rates in bit/s and what the kernel dropped
// on the gateways during the encrypted stream.
type row struct {
	plain, encrypted float64
	drops            drops
}

// measure runs the encrypted stream with the tunnel routes in place, then
// the plain one with them withdrawn, and puts the routes back.
func (l *benchLab) measure(ctx context.Context, d time.Duration) (row, error) {
	var r row
	before, err := l.drops()
	if err != nil {
		return r, err
	}
	if r.encrypted, err = probe.Throughput(ctx, l.ns("client"), l.ns("ecs"), ecs, d); err != nil {
		return r, fmt.Errorf("encrypted stream: %w", err)
	}
	after, err := l.drops()
	if err != nil {
		return r, err
	}
	r.drops = after.minus(before)
	w := wiring.New()
	defer w.Close()
	for _, t := range tunnelRoutes {
		if err := w.DeleteRoute(l.ns(t.node), t.dst, t.via, t.dev, t.metric); err != nil {
			return r, fmt.Errorf("withdraw tunnel route: %w", err)
		}
	}
	tunnelBefore, terr := l.tunnelPackets()
	r.plain, err = probe.Throughput(ctx, l.ns("client"), l.ns("ecs"), ecs, d)
	tunnelAfter, aerr := l.tunnelPackets()
	if err == nil && terr == nil && aerr == nil && tunnelAfter-tunnelBefore > 1000 {
		err = fmt.Errorf("%d packets entered onprem's tunnel with its routes withdrawn: something put them back", tunnelAfter-tunnelBefore)
	}
	for _, t := range tunnelRoutes {
		if rerr := w.AddRoute(l.ns(t.node), t.dst, t.via, t.dev, t.metric); rerr != nil && !errors.Is(rerr, wiring.ErrRouteExists) {
			return r, fmt.Errorf("restore tunnel route: %w", rerr)
		}
	}
	if err != nil {
		return r, fmt.Errorf("plain stream: %w", err)
	}
	return r, nil
}

// drops are kernel-side losses on both gateways that the ESP counters
// cannot see: ESP packets the raw socket had no room for, and inner packets
// the TUN queue dropped (not read fast enough, or refused on write).
type drops struct{ raw, tun, retrans uint64 }

func (a drops) minus(b drops) drops {
	return drops{a.raw - b.raw, a.tun - b.tun, a.retrans - b.retrans}
}

func (l *benchLab) drops() (drops, error) {
	var sum drops
	// Every loss anywhere on the path costs the sender a retransmission.
	err := netnsx.Do(l.ns("client"), func() (err error) {
		sum.retrans, err = tcpRetransmits()
		return err
	})
	if err != nil {
		return sum, fmt.Errorf("TCP counters of client: %w", err)
	}
	for _, node := range gateways {
		err := netnsx.Do(l.ns(node), func() error {
			raw, err := rawSocketDrops()
			sum.raw += raw
			return err
		})
		if err == nil {
			err = addTunDrops(&sum, l.ns(node))
		}
		if err != nil {
			return sum, fmt.Errorf("drop counters of %s: %w", node, err)
		}
	}
	return sum, nil
}

// rawSocketDrops sums the drops column of the raw sockets of the calling
// thread's namespace (thread-self: netnsx switches a thread, not the process).
func rawSocketDrops() (uint64, error) {
	f, err := os.Open("/proc/thread-self/net/raw")
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

// tunnelPackets counts what routing sent into onprem's tunnel interface.
func (l *benchLab) tunnelPackets() (uint64, error) {
	nl, err := wiring.Open(l.ns("onprem"))
	if err != nil {
		return 0, err
	}
	defer nl.Close()
	link, err := nl.LinkByName("ipsec0")
	if err != nil || link.Attrs().Statistics == nil {
		return 0, fmt.Errorf("tunnel interface of onprem: %v", err)
	}
	return link.Attrs().Statistics.TxPackets, nil
}

// addTunDrops reads the tunnel interface's counters over netlink (sysfs
// shows the namespace it was mounted in, not the node's).
func addTunDrops(sum *drops, ns string) error {
	nl, err := wiring.Open(ns)
	if err != nil {
		return err
	}
	defer nl.Close()
	link, err := nl.LinkByName("ipsec0")
	if err != nil {
		return err
	}
	if st := link.Attrs().Statistics; st != nil {
		sum.tun += st.RxDropped + st.TxDropped
	}
	return nil
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

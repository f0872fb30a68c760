package wiring

import (
	"fmt"
	"sort"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Open returns a netlink handle inside a named namespace, for one-off
// reads and changes; close it after use.
func Open(ns string) (*netlink.Handle, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink in namespace %s: %w", ns, err)
	}
	return nl, nil
}

// InterfaceState is what inspect shows of one interface.
type InterfaceState struct {
	Name  string   `json:"name"`
	State string   `json:"state"` // kernel operational state: up, down, lowerlayerdown...
	MAC   string   `json:"mac,omitempty"`
	Addrs []string `json:"addresses,omitempty"`
}

// Interfaces lists the interfaces of a namespace with their global addresses,
// loopback last unless it carries an address.
func Interfaces(ns string) ([]InterfaceState, error) {
	nl, err := Open(ns)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces in %s: %w", ns, err)
	}
	var out []InterfaceState
	for _, l := range links {
		a := l.Attrs()
		st := InterfaceState{Name: a.Name, State: a.OperState.String()}
		if len(a.HardwareAddr) > 0 {
			st.MAC = a.HardwareAddr.String()
		}
		addrs, err := nl.AddrList(l, unix.AF_UNSPEC)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s in %s: %w", a.Name, ns, err)
		}
		for _, ad := range addrs {
			if ad.Scope == unix.RT_SCOPE_UNIVERSE {
				st.Addrs = append(st.Addrs, ad.IPNet.String())
			}
		}
		if a.Name == "lo" && len(st.Addrs) == 0 {
			continue
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RouteState is one route of a namespace's main table, as inspect shows it.
type RouteState struct {
	Dst      string   `json:"dst"`
	Via      []string `json:"via,omitempty"`
	Dev      []string `json:"dev,omitempty"`
	Protocol string   `json:"protocol"` // kernel, static (boot), bgp, ...
	Metric   int      `json:"metric,omitempty"`
}

// Routes lists the IPv4 main table of a namespace.
func Routes(ns string) ([]RouteState, error) {
	nl, err := Open(ns)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	routes, err := nl.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("routes of %s: %w", ns, err)
	}
	names := map[int]string{}
	if links, err := nl.LinkList(); err == nil {
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
	}
	var out []RouteState
	for _, r := range routes {
		rs := RouteState{Dst: "default", Protocol: protocolName(int(r.Protocol)), Metric: r.Priority}
		if r.Dst != nil {
			rs.Dst = r.Dst.String()
		}
		hops := r.MultiPath
		if len(hops) == 0 {
			hops = []*netlink.NexthopInfo{{LinkIndex: r.LinkIndex, Gw: r.Gw}}
		}
		for _, nh := range hops {
			if nh.Gw != nil {
				rs.Via = append(rs.Via, nh.Gw.String())
			}
			rs.Dev = append(rs.Dev, names[nh.LinkIndex])
		}
		out = append(out, rs)
	}
	return out, nil
}

// protocolName spells a route's origin as iproute2 does.
func protocolName(p int) string {
	switch p {
	case unix.RTPROT_KERNEL:
		return "kernel"
	case unix.RTPROT_BOOT:
		return "static"
	case unix.RTPROT_STATIC:
		return "static"
	case 186:
		return "bgp"
	}
	return fmt.Sprint(p)
}

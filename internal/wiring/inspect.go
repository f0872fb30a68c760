package wiring

import (
	"fmt"
	"sort"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

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
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("netlink in namespace %s: %w", ns, err)
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

// Package fault breaks and repairs a running lab the way the guide's failure
// cases need: an IPsec tunnel whose ESP no longer gets through, or a link
// that goes down. Each fault lives in the namespace it affects, so destroying
// the lab removes it too.
package fault

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/wiring"
)

// tablePrefix names the nftables tables of the user's faults (`emu fault`);
// one per broken connection.
const tablePrefix = "emu-fault-"

// Owner is who made a tunnel fault, which names its nftables table: the
// user's faults (`emu fault`, ByUser: emu-fault-<conn>) and those `emu check
// --failover` makes for itself (ByCheck: emu-check-<conn>) live side by side,
// so repairing one never removes the other.
type Owner string

// The owners of tunnel faults: the value is the prefix of the table name.
const (
	ByUser  Owner = tablePrefix
	ByCheck Owner = "emu-check-"
)

// TunnelDown drops, between local and remote in and out of namespace ns (the
// gateway holding one end), every packet of the tunnel: ESP (IP protocol 50),
// ESP in UDP and IKE (UDP port 4500 or 500 at either end, RFC 3948 §2, RFC
// 7296 §2), as a broken private line or a dead peer would. The tunnel stays
// configured, nothing of it crosses, so DPD and IKE see the peer gone (and
// strongSwan's kernel-libipsec, which sends ESP in UDP only, is cut too).
// Breaking a tunnel that is already broken is not an error.
func TunnelDown(ns, conn string, local, remote netip.Addr) error {
	return TunnelDownBy(ByUser, ns, conn, local, remote)
}

// TunnelDownBy is TunnelDown for a fault of owner o, in o's own table.
func TunnelDownBy(o Owner, ns, conn string, local, remote netip.Addr) error {
	if !local.Is4() || !remote.Is4() {
		return fmt.Errorf("tunnel %s: only IPv4 endpoints can be broken yet", conn)
	}
	c, closeNS, err := open(ns)
	if err != nil {
		return err
	}
	defer closeNS()
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: string(o) + conn}
	// Delete and recreate in one batch: idempotent, and atomic.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	for _, hook := range []struct {
		name     string
		hook     *nftables.ChainHook
		src, dst netip.Addr
	}{
		{"output", nftables.ChainHookOutput, local, remote},
		{"input", nftables.ChainHookInput, remote, local},
	} {
		ch := c.AddChain(&nftables.Chain{Name: hook.name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter})
		for _, exprs := range dropTunnel(hook.src, hook.dst) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("break tunnel %s in %s: nftables: %w", conn, ns, err)
	}
	return nil
}

// TunnelUp removes what TunnelDown added; repairing a healthy tunnel is not
// an error.
func TunnelUp(ns, conn string) error { return TunnelUpBy(ByUser, ns, conn) }

// TunnelUpBy removes what TunnelDownBy added for owner o, and only that.
func TunnelUpBy(o Owner, ns, conn string) error {
	c, closeNS, err := open(ns)
	if err != nil {
		return err
	}
	defer closeNS()
	if _, err := c.ListTableOfFamily(string(o)+conn, nftables.TableFamilyIPv4); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("repair tunnel %s in %s: %w", conn, ns, err)
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: string(o) + conn})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("repair tunnel %s in %s: nftables: %w", conn, ns, err)
	}
	return nil
}

// TunnelBroken reports whether TunnelDown is in force for conn.
func TunnelBroken(ns, conn string) (bool, error) { return TunnelBrokenBy(ByUser, ns, conn) }

// TunnelBrokenBy reports whether owner o's TunnelDownBy is in force for conn.
func TunnelBrokenBy(o Owner, ns, conn string) (bool, error) {
	c, closeNS, err := open(ns)
	if err != nil {
		return false, err
	}
	defer closeNS()
	_, err = c.ListTableOfFamily(string(o)+conn, nftables.TableFamilyIPv4)
	return err == nil, nil
}

// dropTunnel returns the rules that drop, counted, the tunnel's packets
// from src to dst: ESP, then UDP with port 500 or 4500 as source or
// destination (a NAT may move the other port).
func dropTunnel(src, dst netip.Addr) [][]expr.Any {
	s, d := src.As4(), dst.As4()
	match := func(proto byte) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: s[:]},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: d[:]},
		}
	}
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	rules := [][]expr.Any{append(match(unix.IPPROTO_ESP), drop...)}
	for _, port := range []uint16{500, 4500} {
		for _, offset := range []uint32{0, 2} { // UDP source, destination port
			r := match(unix.IPPROTO_UDP)
			r = append(r,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)})
			rules = append(rules, append(r, drop...))
		}
	}
	return rules
}

func open(ns string) (*nftables.Conn, func(), error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("nftables in %s: %w", ns, err)
	}
	return c, func() { c.CloseLasting(); h.Close() }, nil
}

// LinkDown sets an interface administratively down; its veth peer loses
// carrier, as a cut cable would.
func LinkDown(ns, ifname string) error { return setLink(ns, ifname, false) }

// LinkUp brings it back.
func LinkUp(ns, ifname string) error { return setLink(ns, ifname, true) }

func setLink(ns, ifname string, up bool) error {
	nl, err := wiring.Open(ns)
	if err != nil {
		return err
	}
	defer nl.Close()
	link, err := nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("interface %s in %s: %w", ifname, ns, err)
	}
	if up {
		err = nl.LinkSetUp(link)
	} else {
		err = nl.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set %s in %s %s: %w", ifname, ns, map[bool]string{true: "up", false: "down"}[up], err)
	}
	return nil
}

// Fault is one fault in force in a namespace: Kind "tunnel" with the
// connection TunnelDown broke, "link" with an interface set down, or
// "route" with a route of a VPC route table that `emu check --failover`
// withdrew (method 1's manual step; By names the check's connection,
// NODE:CONNECTION, Gateway the vpn-gateway that published the route). A
// fault of `emu check --failover` (a ByCheck tunnel, a route) has Check
// set, and HeldBy the pid of the check that holds it while it runs (see
// HoldCheck); a check's fault nobody holds was left by a check that did
// not finish.
type Fault struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Check   bool   `json:"check,omitempty"`
	Held    bool   `json:"held,omitempty"`
	HeldBy  int    `json:"held_by,omitempty"`
	By      string `json:"by,omitempty"`
	Gateway string `json:"gateway,omitempty"`
}

// LeftOver reports whether f is a check's fault whose check did not finish.
func (f Fault) LeftOver() bool { return f.Check && !f.Held }

// Effect says what the fault does and, for a check's, whose it is.
func (f Fault) Effect() string {
	switch {
	case f.Kind == "route" && f.LeftOver():
		return fmt.Sprintf("published by %s, withdrawn by an `emu check --failover` of %s that did not finish", f.Gateway, f.By)
	case f.Kind == "route":
		return fmt.Sprintf("published by %s, withdrawn by the `emu check --failover` of %s running now, %s", f.Gateway, f.By, pidText(f.HeldBy))
	case f.Kind != "tunnel":
		return "down"
	case f.LeftOver():
		return "ESP dropped, left by an `emu check --failover` that did not finish"
	case f.Check:
		return "ESP dropped by the `emu check --failover` running now, " + pidText(f.HeldBy)
	}
	return "ESP dropped"
}

// Active lists the faults in force in namespace ns: the tunnels TunnelDown
// broke there (their tables, of whatever family), those a check broke
// (emu-check-<conn>) with their holders read from the lab directory dir,
// the routes of ns a check withdrew and recorded in its hold there (see
// HoldCheck), then the interfaces set down (a veth whose peer is down stays up,
// without carrier, and is not listed).
func Active(ns, dir string) ([]Fault, error) {
	c, closeNS, err := open(ns)
	if err != nil {
		return nil, err
	}
	defer closeNS()
	tables, err := c.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list nftables tables in %s: %w", ns, err)
	}
	var out []Fault
	for _, t := range tables {
		if conn, ok := strings.CutPrefix(t.Name, string(ByUser)); ok {
			out = append(out, Fault{Kind: "tunnel", Name: conn})
		}
	}
	for _, t := range tables {
		if conn, ok := strings.CutPrefix(t.Name, string(ByCheck)); ok {
			pid, held, err := CheckHolder(dir, ns, conn)
			if err != nil {
				return nil, err
			}
			out = append(out, Fault{Kind: "tunnel", Name: conn, Check: true, Held: held, HeldBy: pid})
		}
	}
	routes, err := leftRoutes(dir, ns)
	if err != nil {
		return nil, err
	}
	out = append(out, routes...)
	nl, err := wiring.Open(ns)
	if err != nil {
		return nil, err
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces in %s: %w", ns, err)
	}
	for _, l := range links {
		// lo is down only in a namespace emu did not set up.
		if a := l.Attrs(); a.Flags&net.FlagUp == 0 && a.Name != "lo" {
			out = append(out, Fault{Kind: "link", Name: a.Name})
		}
	}
	return out, nil
}

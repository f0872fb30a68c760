// Package trace shows the walk of one probe through the lab, as the guide's
// 12-step table: it captures on every interface of every node at once, sends
// one ICMP echo, keeps the frames that carry it (in clear, or inside ESP it
// decrypts with the lab's keys), orders them by kernel timestamp and says,
// node by node, what each did: sent, forwarded, encrypted, decrypted,
// received.
package trace

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
)

// Hop is one node's handling of the probe.
type Hop struct {
	Step      int        `json:"step"`
	Node      string     `json:"node"`
	In        string     `json:"in,omitempty"`  // interface it arrived on; "" where the node sent it
	Out       string     `json:"out,omitempty"` // interface it left by; "" where it was delivered
	Action    string     `json:"action"`        // sends, forwards, encrypts, decrypts, receives, drops
	Encrypted bool       `json:"encrypted"`     // as it arrived (or left, for the sender)
	OuterSrc  netip.Addr `json:"outer_src"`
	OuterDst  netip.Addr `json:"outer_dst"`
	SPI       uint32     `json:"spi,omitempty"`
	InnerSrc  netip.Addr `json:"inner_src,omitzero"`
	InnerDst  netip.Addr `json:"inner_dst,omitzero"`
	Time      time.Time  `json:"time"`
}

// Actions, as the guide words them.
const (
	Sends    = "sends"
	Forwards = "forwards"
	Encrypts = "encrypts"
	Decrypts = "decrypts"
	Receives = "receives"
	// Drops: a node that forwards got the probe, not for itself, and sent
	// nothing of it on: where a walk ends when the probe died.
	Drops = "drops"
)

// frame is a captured frame that carries the probe.
type frame struct {
	capture.Packet
	node      string
	host      bool // a host never forwards: what arrives is received
	encrypted bool
	outer     capture.Headers
	inner     [2]netip.Addr
}

// Run traces one ICMP echo from host `from` to the first IPv4 address of node
// `to`, and its reply. conns are the lab's connections (to decrypt ESP).
// When a capture lost frames it returns the partial walk with an error
// wrapping *capture.LostFramesError.
func Run(ctx context.Context, t *topology.Topology, conns []ipsec.Conn, from, to string) ([]Hop, error) {
	return RunFamily(ctx, t, conns, from, to, false)
}

// RunFamily is Run with an ICMPv6 echo to the first IPv6 address of `to`
// when ipv6 is set: a dual-stack lab carries IPv6 inside its IPv4 tunnels,
// and the walk shows the inner IPv6 addresses of the ESP it decrypts.
func RunFamily(ctx context.Context, t *topology.Topology, conns []ipsec.Conn, from, to string, ipv6 bool) ([]Hop, error) {
	src, dst := t.Node(from), t.Node(to)
	if src == nil || dst == nil {
		return nil, fmt.Errorf("trace: no node %q or %q in lab %q", from, to, t.Name)
	}
	target := firstAddr(dst, ipv6)
	if !target.IsValid() {
		family := "IPv4"
		if ipv6 {
			family = "IPv6"
		}
		return nil, fmt.Errorf("trace: node %q has no %s address", to, family)
	}
	var eps []capture.Endpoint
	nodeOf := map[string]*topology.Node{}
	for _, n := range t.Nodes {
		ns := plan.NamespaceName(t.Name, n.Name)
		nodeOf[ns] = n
		for _, ifc := range n.Interfaces {
			if ifc.Name != topology.Loopback {
				eps = append(eps, capture.Endpoint{NS: ns, Interface: ifc.Name})
			}
		}
	}
	g, err := capture.StartMany(ctx, eps, capture.Options{})
	if err != nil {
		return nil, err
	}
	marker := probe.Marker()
	_, pingErr := probe.PingPayload(plan.NamespaceName(t.Name, from), target, marker, 2*time.Second)
	// Frames reach the capture rings within a few milliseconds.
	time.Sleep(50 * time.Millisecond)
	if err := g.Stop(); err != nil {
		return nil, err
	}
	var frames []frame
	for _, p := range g.Packets() {
		if f, ok := carries(p, []byte(marker), conns); ok {
			f.node, f.host = nodeOf[p.NS].Name, nodeOf[p.NS].Roles.EndSystem
			frames = append(frames, f)
		}
	}
	sort.SliceStable(frames, func(i, j int) bool { return frames[i].Time.Before(frames[j].Time) })
	hops := walk(frames, t)
	if pingErr != nil {
		// The walk seen so far shows where the probe died.
		where := "no frame of it was seen"
		if len(hops) > 0 {
			last := hops[len(hops)-1]
			where = fmt.Sprintf("last seen at %s (%s)", last.Node, last.Action)
		}
		return hops, fmt.Errorf("trace: %w; %s (read `emu check`)", pingErr, where)
	}
	// A walk with frames missing may show a hop skipped: say so, with
	// what was seen.
	if err := g.Incomplete(); err != nil {
		return hops, fmt.Errorf("trace incomplete: %w", err)
	}
	return hops, nil
}

// carries decodes a frame and reports whether the probe is in it.
func carries(p capture.Packet, marker []byte, conns []ipsec.Conn) (frame, bool) {
	h, err := p.Decode()
	if err != nil {
		return frame{}, false
	}
	f := frame{Packet: p, outer: h}
	if !h.ESP {
		if !p.ContainsBytes(marker) {
			return f, false
		}
		f.inner = [2]netip.Addr{h.Src, h.Dst}
		return f, true
	}
	inner, ok := decrypt(p.Data, h.SPI, h.Encap, conns)
	if !ok || !bytes.Contains(inner, marker) {
		return f, false
	}
	if f.inner, ok = innerAddrs(inner); !ok {
		return f, false
	}
	f.encrypted = true
	return f, true
}

// innerAddrs reads the source and destination of a decrypted inner packet,
// IPv4 or IPv6 (ESP next header 4 or 41).
func innerAddrs(pkt []byte) ([2]netip.Addr, bool) {
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		return [2]netip.Addr{netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))}, true
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		return [2]netip.Addr{netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))}, true
	}
	return [2]netip.Addr{}, false
}

// decrypt opens an ESP frame (after its UDP header when encap: RFC 3948)
// with a fresh SA, so the same packet seen on several links decrypts each
// time (no replay window across hops). The SA is a connection's outbound
// one, or its inbound one: an end emu does not run (strongSwan's) stores
// no connection, and its outbound SA is its emu peer's inbound.
func decrypt(data []byte, spi uint32, encap bool, conns []ipsec.Conn) ([]byte, bool) {
	const eth, udp = 14, 8
	if len(data) < eth+20 || data[eth]>>4 != 4 {
		return nil, false
	}
	ihl := int(data[eth]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(data[eth+2:]))
	if encap {
		ihl += udp
	}
	if total > len(data)-eth || ihl >= total {
		return nil, false
	}
	payload := data[eth+ihl : eth+total]
	for _, c := range conns {
		var cfg esp.Config
		var err error
		switch spi {
		case c.Out.SPI:
			cfg, err = c.Outbound()
		case c.In.SPI:
			cfg, err = c.Inbound()
		default:
			continue
		}
		if err != nil {
			return nil, false
		}
		in, err := esp.NewInbound(cfg)
		if err != nil {
			return nil, false
		}
		inner, _, err := in.Open(nil, payload)
		return inner, err == nil
	}
	return nil, false
}

// walk turns the ordered frames into hops: a frame arriving at a node pairs
// with the next one that node sends out with the same inner addresses (the
// same packet, not the reply), and the pair's states say whether the node
// forwarded, encrypted or decrypted. A frame that arrives in ESP for the
// node itself (a gateway as the destination) was decrypted and received:
// its hop decrypts, with no interface out.
func walk(frames []frame, t *topology.Topology) []Hop {
	var hops []Hop
	used := make([]bool, len(frames))
	for i, f := range frames {
		if used[i] {
			continue
		}
		used[i] = true
		hop := Hop{Node: f.node, Encrypted: f.encrypted, OuterSrc: f.outer.Src, OuterDst: f.outer.Dst, InnerSrc: f.inner[0], InnerDst: f.inner[1], Time: f.Time}
		if f.encrypted {
			hop.SPI = f.outer.SPI
		}
		if f.Outgoing {
			hop.Action, hop.Out = Sends, f.Interface
			hops = append(hops, hop)
			continue
		}
		hop.In, hop.Action = f.Interface, Receives
		for j := i + 1; j < len(frames) && !f.host; j++ {
			g := frames[j]
			if used[j] || g.node != f.node || !g.Outgoing || g.inner != f.inner {
				continue
			}
			used[j] = true
			hop.Out = g.Interface
			switch {
			case !f.encrypted && g.encrypted:
				hop.Action = Encrypts
			case f.encrypted && !g.encrypted:
				hop.Action = Decrypts
			default:
				hop.Action = Forwards
			}
			break
		}
		if n := t.Node(f.node); hop.Action == Receives && !f.host && n != nil {
			switch {
			case !n.Owns(f.inner[1]):
				hop.Action = Drops
			case f.encrypted:
				hop.Action = Decrypts
			}
		}
		hops = append(hops, hop)
	}
	for i := range hops {
		hops[i].Step = i + 1
	}
	return hops
}

func firstAddr(n *topology.Node, ipv6 bool) netip.Addr {
	for _, ifc := range n.Interfaces {
		for _, p := range ifc.Addrs {
			if p.Addr().Is6() == ipv6 {
				return p.Addr()
			}
		}
	}
	return netip.Addr{}
}

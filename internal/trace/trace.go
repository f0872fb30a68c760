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
	"strings"
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
	// ICMPError is set on the hops of an ICMP error that quotes the probe
	// (a router's time exceeded, an unreachable): not the probe itself,
	// but what some node said about it. Nil on the probe's own hops.
	ICMPError *ICMPError `json:"icmp_error,omitempty"`
}

// ICMPError is an ICMP error message that quotes the probe (RFC 792,
// RFC 4443 §2.1, §3): who sent it, its type and code, and the addresses of
// the quoted packet (the request, or the reply, of the probe).
type ICMPError struct {
	From     netip.Addr `json:"from"` // the sender's address: the error's source
	Type     uint8      `json:"type"`
	Code     uint8      `json:"code"`
	Name     string     `json:"name"` // "time exceeded", "destination unreachable", ...
	AboutSrc netip.Addr `json:"about_src"`
	AboutDst netip.Addr `json:"about_dst"`
}

func (e ICMPError) String() string {
	return fmt.Sprintf("ICMP %s (type %d, code %d) from %s about %s → %s", e.Name, e.Type, e.Code, e.From, e.AboutSrc, e.AboutDst)
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
	icmp      *ICMPError // set when the frame is an ICMP error quoting the probe
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
		err := fmt.Errorf("trace: node %q has no %s address", to, family)
		if ipv6 && !hasIPv6(t) {
			err = fmt.Errorf("%w: lab %q has no IPv6 at all; topologies/dual-stack.yaml has (IPv6 inside the IPv4 tunnel)", err, t.Name)
		}
		return nil, err
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
	var probeFrames, errFrames []frame
	for _, f := range frames {
		if f.icmp != nil {
			errFrames = append(errFrames, f)
		} else {
			probeFrames = append(probeFrames, f)
		}
	}
	hops := walk(probeFrames, t)
	errHops := walk(errFrames, t)
	for i := range errHops {
		errHops[i].Step += len(hops)
	}
	hops = append(hops, errHops...)
	if pingErr != nil {
		return hops, fmt.Errorf("trace: %w; %s (%s)", pingErr, Died(hops), checkRows(ipv6))
	}
	// A walk with frames missing may show a hop skipped: say so, with
	// what was seen.
	if err := g.Incomplete(); err != nil {
		return hops, fmt.Errorf("trace incomplete: %w", err)
	}
	return hops, nil
}

// Died says where a probe that got no answer was last seen, from a walk
// of Run: the last hop of the probe itself (its request or its reply),
// then each ICMP error about it, by whom it was sent and who received it.
func Died(hops []Hop) string {
	where := "no frame of it was seen"
	var errs []string
	for _, h := range hops {
		switch {
		case h.ICMPError == nil:
			where = fmt.Sprintf("last seen at %s (%s)", h.Node, h.Action)
		case h.Action == Sends:
			errs = append(errs, fmt.Sprintf("%s sent %s", h.Node, h.ICMPError))
		case h.Action == Receives:
			errs = append(errs, fmt.Sprintf("%s received it", h.Node))
		}
	}
	if len(errs) > 0 {
		where += "; " + strings.Join(errs, ", ")
	}
	return where
}

// carries decodes a frame and reports whether the probe is in it, itself
// or quoted by an ICMP error (f.icmp set).
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
		if len(p.Data) > ethHeader {
			f.icmp = quotedError(p.Data[ethHeader:])
		}
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
	f.icmp = quotedError(inner)
	return f, true
}

const ethHeader = 14

// ICMP error types (RFC 792; RFC 4443 §2.1) and their names.
var (
	icmp4Errors = map[uint8]string{3: "destination unreachable", 4: "source quench", 5: "redirect", 11: "time exceeded", 12: "parameter problem"}
	icmp6Errors = map[uint8]string{1: "destination unreachable", 2: "packet too big", 3: "time exceeded", 4: "parameter problem", 137: "redirect"}
)

// quotedError reads an IP packet (from its IP header on) and, when it is
// an ICMP or ICMPv6 error quoting a packet of the same family (RFC 792:
// the quoted header follows the 8-byte ICMP header; RFC 4443 §3 likewise;
// an ICMPv6 redirect quotes it in an option, RFC 4861 §4.5, and is named
// without the quoted addresses), returns it; nil for anything else.
func quotedError(pkt []byte) *ICMPError {
	var e ICMPError
	var icmp []byte
	var names map[uint8]string
	quotedLen, srcOff := 20, 12
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4:
		ihl, total := int(pkt[0]&0x0f)*4, int(binary.BigEndian.Uint16(pkt[2:]))
		if pkt[9] != 1 || ihl < 20 || total < ihl+8 || total > len(pkt) {
			return nil
		}
		e.From = netip.AddrFrom4([4]byte(pkt[12:16]))
		icmp, names = pkt[ihl:total], icmp4Errors
	case len(pkt) >= 40 && pkt[0]>>4 == 6:
		total := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
		if pkt[6] != 58 || total < 48 || total > len(pkt) {
			return nil
		}
		e.From = netip.AddrFrom16([16]byte(pkt[8:24]))
		icmp, names, quotedLen, srcOff = pkt[40:total], icmp6Errors, 40, 8
	default:
		return nil
	}
	name, ok := names[icmp[0]]
	if !ok {
		return nil
	}
	e.Type, e.Code, e.Name = icmp[0], icmp[1], name
	if q := icmp[8:]; len(q) >= quotedLen && q[0]>>4 == pkt[0]>>4 && !(quotedLen == 40 && e.Type == 137) {
		n := (quotedLen - srcOff) / 2
		e.AboutSrc, _ = netip.AddrFromSlice(q[srcOff : srcOff+n])
		e.AboutDst, _ = netip.AddrFromSlice(q[srcOff+n : srcOff+2*n])
	}
	return &e
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
		hop := Hop{Node: f.node, Encrypted: f.encrypted, OuterSrc: f.outer.Src, OuterDst: f.outer.Dst, InnerSrc: f.inner[0], InnerDst: f.inner[1], Time: f.Time, ICMPError: f.icmp}
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

// checkRows says which rows of emu check explain a probe that got no
// reply: the path row (path6 for IPv6) judges this same walk, the ike and
// bgp rows say whether the tunnel and the routes over it are up.
func checkRows(ipv6 bool) string {
	path := "path"
	if ipv6 {
		path = "path6"
	}
	return fmt.Sprintf("read the %s row of `emu check`, which judges this walk, and its ike and bgp rows, if the lab has them, for the tunnel and its routes", path)
}

// hasIPv6 says whether any node of t has an IPv6 address.
func hasIPv6(t *topology.Topology) bool {
	for _, n := range t.Nodes {
		if firstAddr(n, true).IsValid() {
			return true
		}
	}
	return false
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

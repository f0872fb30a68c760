package checks

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/probe"
)

// Encryption captures on every interface of the private path (the nodes
// whose kind lies on it: the Express Connect circuit and the CEN attachments)
// while hosts exchange TCP traffic carrying a random marker (over IPv4 and,
// between dual-stack hosts, IPv6 as well), and requires
// that the path carried only ESP between tunnel endpoints: no frame with a
// host's address in its outer header, and the marker in no captured byte.
var Encryption = Check{Name: "encryption", Run: encryption}

func encryption(ctx context.Context, l Lab) []Result {
	r, _ := observeEncryption(ctx, l)
	return []Result{r}
}

// observeEncryption runs the encryption check and also returns what the
// private path carried (nil when nothing was captured), for the failover
// check to tell which connection carried it.
func observeEncryption(ctx context.Context, l Lab) (Result, *verdict) {
	start := time.Now()
	fail := func(format string, args ...any) (Result, *verdict) {
		return Result{Check: "encryption", Evidence: fmt.Sprintf(format, args...), Duration: time.Since(start)}, nil
	}
	endpoints := tunnelEndpoints(l)
	if len(endpoints) == 0 {
		return fail("the lab has no IPsec connection: nothing is encrypted")
	}
	var eps []capture.Endpoint
	var where []string
	for _, n := range l.Topology.Nodes {
		if !n.Roles.PrivatePath {
			continue
		}
		for _, ifc := range n.Interfaces {
			eps = append(eps, capture.Endpoint{NS: l.NS(n.Name), Interface: ifc.Name})
			where = append(where, n.Name+":"+ifc.Name)
		}
	}
	if len(eps) == 0 {
		return fail("no node whose kind lies on the private path (vbr, cen): nothing to watch")
	}
	hosts := hostsOf(l.Topology)
	if len(hosts) < 2 {
		return fail("needs two end systems (kind host) to send traffic, found %d", len(hosts))
	}
	g, err := capture.StartMany(ctx, eps, capture.Options{})
	if err != nil {
		return fail("start captures: %v", err)
	}
	marker := probe.Marker()
	var trafficErr error
	for _, a := range hosts {
		for _, b := range hosts {
			if a.node == b.node {
				continue
			}
			for _, dst := range a.targets(b) {
				tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if err := probe.TCPExchange(tctx, l.NS(a.node.Name), l.NS(b.node.Name), netip.AddrPortFrom(dst, tcpPort), marker); err != nil && trafficErr == nil {
					trafficErr = fmt.Errorf("%s → %s (%s): %w", a.node.Name, b.node.Name, dst, err)
				}
				cancel()
			}
		}
	}
	if err := g.Stop(); err != nil {
		return fail("capture: %v", err)
	}
	inner := map[netip.Addr]string{}
	for _, h := range hosts {
		inner[h.addr] = h.node.Name
		if h.addr6.IsValid() {
			inner[h.addr6] = h.node.Name
		}
	}
	v := judge(g.Packets(), endpoints, inner, []byte(marker))
	r := Result{Check: "encryption", Duration: time.Since(start)}
	r.Evidence = fmt.Sprintf("on %s: %s", strings.Join(where, ", "), v.summary())
	switch {
	case trafficErr != nil:
		r.Evidence = "traffic failed, so nothing was proven: " + trafficErr.Error() + "; " + r.Evidence
	case v.markerFrames > 0 || v.innerFrames > 0 || v.otherIP > 0:
		// A leak seen is proof, whatever else the capture missed.
	case lost(&r, g.Incomplete()):
	case v.esp == 0:
		r.Evidence = "no ESP crossed the private path; " + r.Evidence
	default:
		r.Passed = true
	}
	return r, &v
}

// lost marks r inconclusive when the capture behind it lost frames (err from
// capture.Group.Incomplete): "never seen in clear" is unsound then, and so is
// "no ESP". It reports whether it did.
func lost(r *Result, err error) bool {
	if err == nil {
		return false
	}
	r.Passed, r.Inconclusive = false, true
	r.Evidence = fmt.Sprintf("inconclusive, %v; what was captured: %s", err, r.Evidence)
	return true
}

// verdict counts what the private path carried.
type verdict struct {
	frames, esp, encap, markerFrames, innerFrames, otherIP, control, ike int
	spis                                                                 map[uint32]bool
	pairs                                                                map[string]bool
	firstLeak                                                            string
}

func judge(pkts []capture.Packet, endpoints map[netip.Addr]bool, inner map[netip.Addr]string, marker []byte) verdict {
	v := verdict{spis: map[uint32]bool{}, pairs: map[string]bool{}}
	for _, p := range pkts {
		v.frames++
		leak := ""
		if p.ContainsBytes(marker) {
			v.markerFrames++
			leak = "marker in clear"
		}
		h, err := p.Decode()
		if errors.Is(err, capture.ErrMalformedIP) {
			v.otherIP++ // not ESP between the endpoints, whatever else it is
			leak = "malformed IP header"
		}
		if err == nil {
			switch {
			case inner[h.Src] != "" || inner[h.Dst] != "":
				v.innerFrames++
				leak = fmt.Sprintf("inner addresses in clear %s → %s (%s)", h.Src, h.Dst, h.Protocol)
			case h.ESP && endpoints[h.Src] && endpoints[h.Dst]:
				v.esp++
				if h.Encap {
					v.encap++
				}
				v.spis[h.SPI] = true
				v.pairs[h.Src.String()+"→"+h.Dst.String()] = true
			case h.Protocol == 50 && endpoints[h.Src] && endpoints[h.Dst]:
				v.esp++ // a non-first fragment of an ESP packet
			case h.Src.IsLinkLocalUnicast() || h.Dst.IsLinkLocalMulticast() || h.Dst.IsMulticast() || isND(p.Data):
				// neighbour discovery and the like: not traffic between sites
				// (a dual-stack private path's routers probe each other's
				// global addresses by unicast, RFC 4861 §7.3)
			case h.IKE && endpoints[h.Src] && endpoints[h.Dst]:
				v.ike++ // the gateways negotiating keys (encrypted after IKE_SA_INIT)
			case isBGP(p.Data):
				v.control++ // the routers' own sessions (method 3, the cloud side)
			default:
				v.otherIP++
				leak = fmt.Sprintf("non-ESP traffic %s → %s (%s)", h.Src, h.Dst, h.Protocol)
			}
		}
		if leak != "" && v.firstLeak == "" {
			v.firstLeak = fmt.Sprintf("%s at %s:%s", leak, p.NS, p.Interface)
		}
	}
	return v
}

func (v verdict) summary() string {
	spis := make([]string, 0, len(v.spis))
	for s := range v.spis {
		spis = append(spis, fmt.Sprintf("0x%08x", s))
	}
	sort.Strings(spis)
	pairs := make([]string, 0, len(v.pairs))
	for p := range v.pairs {
		pairs = append(pairs, p)
	}
	sort.Strings(pairs)
	esp := fmt.Sprintf("%d ESP", v.esp)
	if len(pairs)+len(spis) > 0 {
		esp += fmt.Sprintf(" (%s; SPI %s)", strings.Join(pairs, ", "), strings.Join(spis, ", "))
	}
	s := fmt.Sprintf("%d frames, %s, %d with inner addresses, %d other IP, marker in %d",
		v.frames, esp, v.innerFrames, v.otherIP, v.markerFrames)
	if v.encap > 0 {
		s += fmt.Sprintf(", %d of the ESP in UDP/4500", v.encap)
	}
	if v.ike > 0 {
		s += fmt.Sprintf(", %d IKE between the gateways", v.ike)
	}
	if v.control > 0 {
		s += fmt.Sprintf(", %d BGP between routers", v.control)
	}
	if v.firstLeak != "" {
		s += "; first leak: " + v.firstLeak
	}
	return s
}

// tunnelEndpoints are the outer addresses of every IPsec connection.
func tunnelEndpoints(l Lab) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, n := range l.Topology.Nodes {
		for _, t := range n.Tunnels {
			out[t.Local] = true
			out[t.Remote] = true
		}
	}
	return out
}

// isBGP reports an IPv4 TCP segment to or from port 179: routing sessions
// between the routers of the private path are control traffic, not data
// between the sites, and carry no host's bytes.
func isBGP(frame []byte) bool {
	const eth = 14
	if len(frame) < eth+20 || frame[eth]>>4 != 4 || frame[eth+9] != 6 {
		return false
	}
	ihl := int(frame[eth]&0x0f) * 4
	if len(frame) < eth+ihl+4 {
		return false
	}
	src := binary.BigEndian.Uint16(frame[eth+ihl:])
	dst := binary.BigEndian.Uint16(frame[eth+ihl+2:])
	return src == 179 || dst == 179
}

// isND reports whether an Ethernet frame carries an IPv6 neighbour
// discovery message (ICMPv6 types 133 to 137, RFC 4861 §4) right after the
// fixed header.
func isND(frame []byte) bool {
	const eth, ipv6 = 14, 40
	if len(frame) < eth+ipv6+1 || frame[eth]>>4 != 6 || frame[eth+6] != 58 {
		return false
	}
	t := frame[eth+ipv6]
	return t >= 133 && t <= 137
}

package topology

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// BGP is a node's BGP speaker: GoBGP embedded in the node's agent, which
// installs best paths into the node's kernel table with Metric.
type BGP struct {
	Line         int
	ASN          uint32
	RouterID     netip.Addr
	Hold         time.Duration // keepalive is a third of it
	ConnectRetry time.Duration
	// Metric of the kernel routes BGP installs: against static routes of the
	// same prefix, the lower metric wins.
	Metric    int
	Networks  []netip.Prefix
	Neighbors []Neighbor
	// Multipath installs every equally good path as one ECMP route: several
	// IPsec connections share the load, as the guide recommends with a
	// transit router.
	Multipath bool
	// Redistribute announces kernel routes: "connected" subnets and/or
	// "static" routes, following the kernel as they come and go.
	Redistribute []string
	// Speaker is who runs this BGP: SpeakerEmu (GoBGP in the node's agent)
	// or the name of the software in the node that does (e.g. "frr"). For an
	// external speaker the fields say what its peers need to know: ASN,
	// neighbors, and in Networks the prefixes it should announce; emu
	// pairs and judges it from its peers' side.
	Speaker string
}

// SpeakerEmu is the speaker emu runs itself.
const SpeakerEmu = "emu"

// External reports whether software other than emu runs this BGP.
func (b *BGP) External() bool { return b.Speaker != SpeakerEmu }

// Neighbor is one BGP peer.
type Neighbor struct {
	Line      int
	Address   netip.Addr
	ASN       uint32
	LocalPref uint32 // set on routes learned from this neighbor; 0 keeps the default (100)
}

// ProviderASN is the cloud side's ASN by default; the on-premises side may
// not use it.
const ProviderASN = 45104

// BGP defaults: the shipped scenarios fail over in seconds, not the minutes
// of BGP's own defaults (hold 90 s, connect-retry 120 s).
const (
	DefaultHold         = 3 * time.Second // the minimum GoBGP accepts
	DefaultConnectRetry = time.Second
	DefaultBGPMetric    = 20
)

func (r *resolver) bgp(node *Node, n *yaml.Node) *BGP {
	b := &BGP{Line: n.Line, Hold: DefaultHold, ConnectRetry: DefaultConnectRetry, Metric: DefaultBGPMetric, Speaker: SpeakerEmu}
	what := fmt.Sprintf("node %q bgp", node.Name)
	hasASN := false
	for _, f := range r.fields(n, what, "asn", "router-id", "hold", "connect-retry", "metric", "networks", "neighbors", "multipath", "redistribute", "speaker") {
		switch f.key {
		case "speaker":
			if s, ok := r.str(f.val, what+" speaker"); ok {
				if msg := nameProblem("speaker", s); msg != "" {
					r.at(f.line, "%s: %s (name the software, like frr)", what, msg)
				}
				b.Speaker = s
			}
		case "asn":
			asn, ok := r.integer(f.val, what+" asn", 1, 4294967295)
			b.ASN, hasASN = uint32(asn), ok
		case "router-id":
			if s, ok := r.str(f.val, what+" router-id"); ok {
				a, err := netip.ParseAddr(s)
				if err != nil || !a.Is4() {
					r.at(f.line, "%s: router-id %q must be an IPv4 address", what, s)
				}
				b.RouterID = a
			}
		case "hold", "connect-retry":
			if s, ok := r.str(f.val, what+" "+f.key); ok {
				d, err := time.ParseDuration(s)
				if err != nil || d < time.Second || d > time.Hour || (f.key == "hold" && d < DefaultHold) {
					r.at(f.line, "%s: %s %q must be a duration from %s to 1h, like 3s", what, f.key, s, map[string]time.Duration{"hold": DefaultHold, "connect-retry": time.Second}[f.key])
					continue
				}
				if f.key == "hold" {
					b.Hold = d
				} else {
					b.ConnectRetry = d
				}
			}
		case "metric":
			b.Metric, _ = r.integer(f.val, what+" metric", 0, 1<<31-1)
		case "redistribute":
			for _, v := range r.strs(f.val, what+" redistribute") {
				if v.Value != "connected" && v.Value != "static" {
					r.at(v.Line, "%s: redistribute %q: use connected and/or static", what, v.Value)
					continue
				}
				b.Redistribute = append(b.Redistribute, v.Value)
			}
		case "multipath":
			if s, ok := r.str(f.val, what+" multipath"); ok {
				if s != "true" && s != "false" {
					r.at(f.line, "%s: multipath is true or false, not %q", what, s)
				}
				b.Multipath = s == "true"
			}
		case "networks":
			for _, p := range r.strs(f.val, what+" networks") {
				pf, ok := r.prefix(p.Line, what+" network", p.Value)
				switch {
				case !ok || !r.ipv4Network(p.Line, what+" network", pf):
				case slices.Contains(b.Networks, pf.Masked()):
					// Announced once however often listed: counted twice, the
					// bgp check would wait for a prefix that never comes.
					r.at(p.Line, "%s: network %s is listed twice (as %s): list each prefix once", what, pf.Masked(), p.Value)
				default:
					b.Networks = append(b.Networks, pf.Masked())
				}
			}
		case "neighbors":
			for _, nb := range r.seq(f.val, what+" neighbors") {
				if v, ok := r.neighbor(what, nb); ok {
					b.Neighbors = append(b.Neighbors, v)
				}
			}
		}
	}
	if !hasASN {
		r.at(n.Line, "%s needs `asn:`", what)
	}
	return b
}

func (r *resolver) neighbor(what string, n *yaml.Node) (Neighbor, bool) {
	nb := Neighbor{Line: n.Line}
	what += " neighbor"
	hasAddr, hasASN := false, false
	for _, f := range r.fields(n, what, "address", "asn", "local-pref") {
		switch f.key {
		case "address":
			if s, ok := r.str(f.val, what+" address"); ok {
				a, err := netip.ParseAddr(s)
				if err != nil {
					r.at(f.line, "%s: address %q is not an IP address", what, s)
					continue
				}
				nb.Address, hasAddr = a, true
			}
		case "asn":
			asn, ok := r.integer(f.val, what+" asn", 1, 4294967295)
			nb.ASN, hasASN = uint32(asn), ok
		case "local-pref":
			lp, _ := r.integer(f.val, what+" local-pref", 0, 4294967295)
			nb.LocalPref = uint32(lp)
		}
	}
	if !hasAddr || !hasASN {
		r.at(n.Line, "%s needs `address:` and `asn:`", what)
		return nb, false
	}
	return nb, true
}

// checkBGP checks that every neighbor is reachable on a connected subnet
// (a link or a tunnel address) and that sessions pair up: each neighbor is
// a node of the lab that declares this node back with the right ASN.
func (r *resolver) checkBGP() {
	for _, n := range r.t.Nodes {
		b := n.BGP
		if b == nil {
			continue
		}
		if !b.RouterID.IsValid() {
			b.RouterID = firstIPv4(n)
		}
		if b.External() && !n.Software.Runs() && n.Runtime == RuntimeNamespace {
			r.at(b.Line, "node %q: bgp speaker %s runs in the node, but the node runs no program: add `daemons:` that start it (e.g. {name: bgpd, command: /usr/lib/frr/bgpd --log stdout}), or remove `speaker:` to let emu run BGP", n.Name, b.Speaker)
		}
		for _, nb := range b.Neighbors {
			peer := r.t.Owner(nb.Address)
			if peer == nil {
				r.at(nb.Line, "node %q bgp neighbor %s is no address of the lab: give a neighbour's interface or tunnel address", n.Name, nb.Address)
				continue
			}
			if n.Connected(nb.Address) == nil && tunnelOf(n, nb.Address) == nil {
				r.at(nb.Line, "node %q bgp neighbor %s (%s) is not on a subnet the node is connected to: peer over a shared link or the tunnel addresses", n.Name, nb.Address, peer.Name)
			}
			if peer.BGP == nil {
				r.at(nb.Line, "node %q bgp neighbor %s is node %q, which has no `bgp:`: configure BGP there too (if software in %s runs it, say so: `bgp: {speaker: frr, asn: ..., networks: [...], neighbors: [...]}`)", n.Name, nb.Address, peer.Name, peer.Name)
				continue
			}
			if nb.ASN != peer.BGP.ASN {
				r.at(nb.Line, "node %q bgp neighbor %s (%s) has asn %d, not %d: use the peer's asn", n.Name, nb.Address, peer.Name, peer.BGP.ASN, nb.ASN)
			}
			back := slices.IndexFunc(peer.BGP.Neighbors, func(p Neighbor) bool { return r.t.Owner(p.Address) == n })
			if back < 0 {
				r.at(nb.Line, "node %q peers with %s (%s), but %s does not peer back: add a neighbor with one of %s's addresses there", n.Name, nb.Address, peer.Name, peer.Name, n.Name)
			}
		}
	}
}

func tunnelOwns(n *Node, a netip.Addr) bool {
	for _, t := range n.Tunnels {
		if t.Address.IsValid() && t.Address.Addr() == a {
			return true
		}
	}
	return false
}

func firstIPv4(n *Node) netip.Addr {
	for _, ifc := range n.Interfaces {
		for _, p := range ifc.Addrs {
			if p.Addr().Is4() {
				return p.Addr()
			}
		}
	}
	return netip.Addr{}
}

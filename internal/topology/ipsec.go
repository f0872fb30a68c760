package topology

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Tunnel is one route-based IPsec connection of a node: ESP in tunnel mode
// between Local and Remote, seen by routing as the interface Interface.
// Both ends declare it; they are paired by their endpoint addresses.
type Tunnel struct {
	Name      string
	Line      int
	Interface string
	Address   netip.Prefix // tunnel address, e.g. for BGP over the tunnel; optional
	Local     netip.Addr   // this node's endpoint (on-prem: its "VPN IP")
	Remote    netip.Addr   // the peer's endpoint
	Cipher    string       // one of Ciphers
	Key       string       // KeyGenerate, or hex key material shared by both ends
	Peer      Endpoint     // node and interface of the other end, set by check
	// PeerAddress is the other end's tunnel address, set by check.
	PeerAddress netip.Addr
	// DPD probes the peer's tunnel address; nil when off. On by default
	// where both ends have a tunnel address.
	DPD *Probe
	// HealthCheck is the provider's IPsec connection health check; nil when
	// off, the provider's default.
	HealthCheck *HealthCheck
	// IKE keys the connection by IKEv2; nil is manual keying (Cipher, Key).
	IKE *IKE
	// Speaker is who runs this end: SpeakerEmu (the node's agent: IKE and
	// the ESP dataplane) or the name of the software in the node that does
	// (e.g. "strongswan"), as for BGP. An external end says what its emu
	// peer needs to know: endpoints, and in IKE the proposals, identities,
	// subnets and the PSK its own configuration holds; emu creates nothing
	// for it and judges it from the peer's side.
	Speaker string
	dpdOff  bool
}

// External reports whether software other than emu runs this end.
func (t *Tunnel) External() bool { return t.Speaker != SpeakerEmu }

// Probe is how often a liveness probe goes out and how many may be lost.
type Probe struct {
	Interval time.Duration
	Retries  int
}

// HealthCheck probes Destination from Source through the tunnel; on failure
// Policy revoke_route withdraws the routes the connection published, and
// reserve_route keeps them.
type HealthCheck struct {
	Probe
	Source      netip.Addr
	Destination netip.Addr
	Policy      string
	Line        int
}

// Health check policies, as the provider names them.
const (
	RevokeRoute  = "revoke_route"
	ReserveRoute = "reserve_route"
)

// DefaultDPD suits a lab: a dead peer is noticed within 3 s. (IKE daemons
// default to tens of seconds; the provider documents DPD only as "on".)
var DefaultDPD = Probe{Interval: time.Second, Retries: 3}

// DefaultHealthCheck is the provider's: every 3 s, 3 retries, revoke_route.
var DefaultHealthCheck = Probe{Interval: 3 * time.Second, Retries: 3}

// KeyGenerate asks deploy for fresh random keys.
const KeyGenerate = "generate"

// Ciphers are the ESP transforms of a manually keyed tunnel, named as emu's
// ESP engine names them: aes-gcm-128 (the default), then every pair of the
// provider's encryption and authentication values (SPEC §10) as
// "<enc>-cbc-<auth>", such as aes-cbc-sha1 or 3des-cbc-md5.
var Ciphers = func() []string {
	out := []string{"aes-gcm-128"}
	for _, enc := range EncAlgs {
		for _, auth := range AuthAlgs {
			out = append(out, enc+"-cbc-"+auth)
		}
	}
	return out
}()

// Dataplanes choose how ESP runs; auto probes the kernel.
var Dataplanes = []string{"auto", "kernel", "userspace"}

// Tunnel returns the tunnel of n with that interface name, or nil.
func (n *Node) Tunnel(ifname string) *Tunnel {
	for _, t := range n.Tunnels {
		if t.Interface == ifname {
			return t
		}
	}
	return nil
}

func (r *resolver) tunnel(node *Node, n *yaml.Node, index int) {
	t := &Tunnel{Line: n.Line, Cipher: Ciphers[0], Key: KeyGenerate, Interface: fmt.Sprintf("ipsec%d", index), Speaker: SpeakerEmu}
	what := fmt.Sprintf("node %q ipsec connection", node.Name)
	for _, f := range r.fields(n, what, "name", "local", "remote", "interface", "address", "cipher", "key", "dpd", "health-check", "ike", "speaker") {
		switch f.key {
		case "speaker":
			if s, ok := r.str(f.val, what+" speaker"); ok {
				if msg := nameProblem("speaker", s); msg != "" {
					r.at(f.line, "%s: %s (name the software, like strongswan)", what, msg)
				}
				t.Speaker = s
			}
			continue
		case "dpd":
			if isNull(f.val) || (f.val.Kind == yaml.ScalarNode && (f.val.Value == "off" || f.val.Value == "false")) {
				t.dpdOff = true
			} else {
				p := DefaultDPD
				r.probe(f.val, what+" dpd", &p)
				t.DPD = &p
			}
			continue
		case "health-check":
			t.HealthCheck = r.healthCheck(f.val, what+" health-check")
			continue
		case "ike":
			t.IKE = r.ike(f.val, what)
			continue
		}
		s, ok := r.str(f.val, what+" "+f.key)
		if !ok {
			continue
		}
		switch f.key {
		case "name":
			t.Name = s
		case "local", "remote":
			a, err := netip.ParseAddr(s)
			if err != nil {
				r.at(f.line, "%s: %s %q is not an IP address (an endpoint is a single address, no prefix length)", what, f.key, s)
				continue
			}
			if f.key == "local" {
				t.Local = a
			} else {
				t.Remote = a
			}
		case "interface":
			if len(s) > maxIfName || !ifNameRe.MatchString(s) {
				r.at(f.line, "%s: interface %q must be 1 to %d letters, digits, '.', '-' or '_'", what, s, maxIfName)
			}
			t.Interface = s
		case "address":
			if p, ok := r.prefix(f.line, what+" address", s); ok {
				t.Address = p
			}
		case "cipher":
			if !slices.Contains(Ciphers, s) {
				r.at(f.line, "%s: cipher %q is not supported: use one of %s%s", what, s, strings.Join(Ciphers, ", "), hint(s, Ciphers))
			}
			t.Cipher = s
		case "key":
			if s != KeyGenerate {
				if b, err := hex.DecodeString(s); err != nil || len(b) < 16 {
					r.at(f.line, "%s: key must be %q or at least 32 hex digits (16 bytes) shared by both ends", what, KeyGenerate)
				}
			}
			t.Key = s
		}
	}
	if t.Name == "" {
		t.Name = t.Interface
	}
	if !t.Local.IsValid() || !t.Remote.IsValid() {
		r.at(n.Line, "%s %q needs `local:` (this node's endpoint address) and `remote:` (the peer's)", what, t.Name)
		return
	}
	node.Tunnels = append(node.Tunnels, t)
}

// checkTunnels pairs every tunnel with its other end and checks that the
// endpoints are reached over the plain path, never through a tunnel.
func (r *resolver) checkTunnels() {
	type key struct{ local, remote netip.Addr }
	ends := map[key]*Node{}
	for _, n := range r.t.Nodes {
		for _, t := range n.Tunnels {
			ends[key{t.Local, t.Remote}] = n
		}
	}
	for _, n := range r.t.Nodes {
		names := map[string]int{}
		pairs := map[key]*Tunnel{}
		for _, t := range n.Tunnels {
			if prev, dup := names[t.Interface]; dup {
				r.at(t.Line, "node %q: tunnel interface %s is already used by the connection at line %d: give each its own `interface:`", n.Name, t.Interface, prev)
			}
			names[t.Interface] = t.Line
			if prev, dup := pairs[key{t.Local, t.Remote}]; dup {
				r.at(t.Line, "node %q connection %s: connection %s (line %d) already joins %s and %s: two connections between the same endpoints cannot be told apart on the wire (their SAs would share addresses and SPIs): remove one, or give this one another local or remote address (a second private IP, as two ECMP tunnels do)", n.Name, t.Name, prev.Name, prev.Line, t.Local, t.Remote)
				continue
			}
			pairs[key{t.Local, t.Remote}] = t
			if n.Interface(t.Interface) != nil {
				r.at(t.Line, "node %q: tunnel interface %s clashes with a declared interface: pick another name", n.Name, t.Interface)
			}
			if !n.Owns(t.Local) {
				r.at(t.Line, "node %q connection %s: local endpoint %s is not an address of the node (%s)", n.Name, t.Name, t.Local, prefixes(allAddrs(n)))
			}
			peer := ends[key{t.Remote, t.Local}]
			if peer == nil {
				r.at(t.Line, "node %q connection %s: %s", n.Name, t.Name, r.noMirror(t))
				continue
			}
			pt := peerTunnel(peer, t)
			t.Peer = Endpoint{Node: peer.Name, Interface: pt.Interface}
			t.PeerAddress = pt.Address.Addr()
			if t.Line < pt.Line || t.Line == pt.Line && n.Name < peer.Name {
				r.checkTunnelAddresses(n, t, peer, pt)
			}
			if pt.Cipher != t.Cipher {
				r.at(t.Line, "node %q connection %s: cipher %s differs from %s on %s (line %d): both ends must use the same", n.Name, t.Name, t.Cipher, pt.Cipher, peer.Name, pt.Line)
			}
			r.checkIKE(n, t, pt, peer)
			if t.External() {
				r.checkExternalTunnel(n, t, pt, peer)
			}
			if pt.Key != t.Key {
				r.at(t.Line, "node %q connection %s: key differs from the one on %s (line %d): give both ends the same key, or `generate` on both", n.Name, t.Name, peer.Name, pt.Line)
			}
			if t.DPD == nil && !t.dpdOff && t.Address.IsValid() && pt.Address.IsValid() {
				p := DefaultDPD
				t.DPD = &p
			}
			if t.DPD != nil && !(t.Address.IsValid() && pt.Address.IsValid()) {
				r.at(t.Line, "node %q connection %s: dpd probes the peer's tunnel address: give both ends an `address:` (a /30 in 169.254.0.0/16), or set `dpd: off`", n.Name, t.Name)
			}
			if via := r.routeFor(n, t.Remote); via != "" && n.Tunnel(via) != nil {
				r.at(t.Line, "node %q connection %s: the remote endpoint %s is routed into tunnel %s itself (recursive): route the endpoint over the plain path with a more specific route", n.Name, t.Name, t.Remote, via)
			}
		}
	}
}

// noMirror explains why no node declares the other end of t: its remote
// endpoint is nobody's, or the node holding it declares a connection that
// does not mirror t (the peer's local is t's remote and the peer's remote is
// t's local).
func (r *resolver) noMirror(t *Tunnel) string {
	owner := r.t.Owner(t.Remote)
	if owner == nil {
		return fmt.Sprintf("the remote endpoint %s is no address of the lab: give the address of the peer gateway's interface", t.Remote)
	}
	for _, pt := range owner.Tunnels {
		switch {
		case pt.Local == t.Remote:
			return fmt.Sprintf("the other end on %q (connection %s, line %d) goes from %s to %s, not to %s: local and remote of the two ends must mirror each other: set `remote: %s` there", owner.Name, pt.Name, pt.Line, pt.Local, pt.Remote, t.Local, t.Local)
		case pt.Remote == t.Local:
			return fmt.Sprintf("the other end on %q (connection %s, line %d) starts from %s, not from %s: local and remote of the two ends must mirror each other: set `local: %s` there, or `remote: %s` here", owner.Name, pt.Name, pt.Line, pt.Local, t.Remote, t.Remote, pt.Local)
		}
	}
	return fmt.Sprintf("%q holds the remote endpoint %s but declares no connection back (local: %s, remote: %s): add that connection to it", owner.Name, t.Remote, t.Remote, t.Local)
}

// checkTunnelAddresses wants the two ends of a connection in one subnet
// (the provider's /30), on two different host addresses, or neither end
// addressed: BGP, DPD and routes over the tunnel reach the peer's address
// on-link. Called once per pair, for the end declared first.
func (r *resolver) checkTunnelAddresses(n *Node, t *Tunnel, peer *Node, pt *Tunnel) {
	a, b := t.Address, pt.Address
	where := fmt.Sprintf("node %q connection %s", n.Name, t.Name)
	switch {
	case !a.IsValid() && !b.IsValid():
	case !a.IsValid() || !b.IsValid():
		// Said at the end that has one.
		hn, ht, on, ot := n, t, peer, pt
		if !a.IsValid() {
			hn, ht, on, ot = peer, pt, n, t
		}
		other, y := hostPair(ht.Address)
		if other == ht.Address.Addr() {
			other = y
		}
		r.at(ht.Line, "node %q connection %s has tunnel address %s but the other end (%q connection %s, line %d) has none: give it `address: %s/%d` (both ends in one subnet), or remove this one", hn.Name, ht.Name, ht.Address, on.Name, ot.Name, ot.Line, other, ht.Address.Bits())
	case a.Masked() != b.Masked():
		x, y := hostPair(a)
		r.at(t.Line, "%s: tunnel addresses %s here and %s on %q (line %d) are not in one subnet: the ends of a tunnel share one /30, e.g. %s/%d and %s/%d", where, a, b, peer.Name, pt.Line, x, a.Bits(), y, a.Bits())
	case a.Addr() == b.Addr():
		x, y := hostPair(a)
		r.at(t.Line, "%s: both ends have tunnel address %s (the other at line %d): give each end its own address of %s, e.g. %s and %s", where, a.Addr(), pt.Line, a.Masked(), x, y)
	default:
		for _, p := range []netip.Prefix{a, b} {
			if p.Addr().Is4() && p.Bits() <= 30 && (p.Addr() == p.Masked().Addr() || p.Addr() == lastAddr(p)) {
				x, y := hostPair(p)
				r.at(t.Line, "%s: tunnel address %s is the network or broadcast address of %s: use its host addresses, e.g. %s and %s", where, p.Addr(), p.Masked(), x, y)
			}
		}
	}
}

// hostPair is the first two host addresses of p's subnet: .1 and .2 of a /30.
func hostPair(p netip.Prefix) (netip.Addr, netip.Addr) {
	first := p.Masked().Addr().Next()
	return first, first.Next()
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := range 4 {
		b[3-i] |= byte(host >> (8 * i))
	}
	return netip.AddrFrom4(b)
}

// probe reads interval and retries into p (which holds the defaults).
func (r *resolver) probe(n *yaml.Node, what string, p *Probe, extra ...string) []field {
	var rest []field
	for _, f := range r.fields(n, what, append([]string{"interval", "retries"}, extra...)...) {
		switch f.key {
		case "interval":
			s, ok := r.str(f.val, what+" interval")
			if !ok {
				continue
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < 100*time.Millisecond || d > time.Hour {
				r.at(f.line, "%s: interval %q must be a duration from 100ms to 1h, like 3s", what, s)
				continue
			}
			p.Interval = d
		case "retries":
			p.Retries, _ = r.integer(f.val, what+" retries", 1, 100)
		default:
			rest = append(rest, f)
		}
	}
	return rest
}

func (r *resolver) healthCheck(n *yaml.Node, what string) *HealthCheck {
	hc := &HealthCheck{Probe: DefaultHealthCheck, Policy: RevokeRoute, Line: n.Line}
	for _, f := range r.probe(n, what, &hc.Probe, "source", "destination", "policy") {
		s, ok := r.str(f.val, what+" "+f.key)
		if !ok {
			continue
		}
		switch f.key {
		case "source", "destination":
			a, err := netip.ParseAddr(s)
			if err != nil {
				r.at(f.line, "%s: %s %q is not an IP address", what, f.key, s)
				continue
			}
			if f.key == "source" {
				hc.Source = a
			} else {
				hc.Destination = a
			}
		case "policy":
			if s != RevokeRoute && s != ReserveRoute {
				r.at(f.line, "%s: policy %q must be %s (withdraw the published routes on failure) or %s (keep them)", what, s, RevokeRoute, ReserveRoute)
			}
			hc.Policy = s
		}
	}
	if !hc.Destination.IsValid() {
		r.at(n.Line, "%s needs `destination:`: an address on the other side of the tunnel to probe, e.g. the on-premises gateway's LAN address", what)
		return nil
	}
	return hc
}

func peerTunnel(peer *Node, t *Tunnel) *Tunnel {
	for _, pt := range peer.Tunnels {
		if pt.Local == t.Remote && pt.Remote == t.Local {
			return pt
		}
	}
	return nil
}

// routeFor returns the interface the node's static routes and connected
// subnets send addr through, by longest prefix, or "" if none does.
func (r *resolver) routeFor(n *Node, addr netip.Addr) string {
	best, dev := -1, ""
	for _, ifc := range n.Interfaces {
		for _, p := range ifc.Addrs {
			if p.Contains(addr) && p.Bits() > best {
				best, dev = p.Bits(), ifc.Name
			}
		}
	}
	for _, rt := range n.Routes {
		if !rt.Dst.Contains(addr) || rt.Dst.Bits() <= best {
			continue
		}
		best = rt.Dst.Bits()
		if rt.Dev != "" {
			dev = rt.Dev
		} else if ifc := n.Connected(rt.Via); ifc != nil {
			dev = ifc.Name
		} else if t := tunnelOf(n, rt.Via); t != nil {
			dev = t.Interface
		}
	}
	return dev
}

func tunnelOf(n *Node, via netip.Addr) *Tunnel {
	for _, t := range n.Tunnels {
		if t.Address.IsValid() && t.Address.Contains(via) {
			return t
		}
	}
	return nil
}

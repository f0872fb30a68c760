// Package routing is one node's BGP speaker: an embedded GoBGP server plus
// the loop that copies its best paths into the kernel FIB of the namespace
// the process runs in (GoBGP itself never programs the kernel).
//
// A Speaker must run in a process that lives entirely inside the node's
// namespace (the node agent): GoBGP dials and listens from goroutines on
// arbitrary OS threads, and GoBGP keeps its route-selection options in
// package globals, so one Speaker per process.
package routing

import (
	"fmt"
	"net/netip"
	"time"
)

// Config is one node's BGP configuration, as the agent's config file carries
// it. Zero values mean the defaults documented on each field.
type Config struct {
	ASN      uint32     `json:"asn"`
	RouterID netip.Addr `json:"router_id"`
	// ListenPort is the TCP port for incoming sessions: 0 means 179, -1 not
	// listening at all (every neighbor is then dialled).
	ListenPort int32 `json:"listen_port,omitempty"`
	// ListenAddresses default to every address of the namespace.
	ListenAddresses []netip.Addr `json:"listen_addresses,omitempty"`
	Neighbors       []Neighbor   `json:"neighbors,omitempty"`
	// Networks are originated unconditionally, like `network` in most
	// routing daemons: the lab decides what a node announces, not its FIB.
	Networks []netip.Prefix `json:"networks,omitempty"`
	// Redistribute announces kernel routes of the main table: "connected"
	// (the subnets of the node's addresses) and/or "static" (routes added by
	// emu or an operator). It follows the kernel: a static route withdrawn
	// there (method 1's operator command, a health check) is withdrawn from
	// BGP too.
	Redistribute []string `json:"redistribute,omitempty"`
	// Metric is the kernel priority of the routes the speaker installs
	// (default DefaultMetric). Static routes at a lower metric win over BGP
	// for the same prefix, at a higher metric they are the fallback.
	Metric uint32 `json:"metric,omitempty"`
	// Multipath installs every equally good path of a prefix as one ECMP
	// route (GoBGP's use-multiple-paths) instead of only the best.
	Multipath bool `json:"multipath,omitempty"`
	// GRPCSocket, if set, serves GoBGP's gRPC API on this unix socket, so
	// `gobgp -u unix://PATH` style tools can inspect the live speaker.
	GRPCSocket string `json:"grpc_socket,omitempty"`
}

// Neighbor is one BGP session and the policy applied to it.
type Neighbor struct {
	Address netip.Addr `json:"address"`
	PeerASN uint32     `json:"peer_asn"`
	// LocalAddress is the session's source address; Interface binds the
	// session to one device (SO_BINDTODEVICE), e.g. a tunnel interface, so
	// it never leaks onto the plain path.
	LocalAddress netip.Addr `json:"local_address,omitzero"`
	Interface    string     `json:"interface,omitempty"`
	// HoldTime and Keepalive are in seconds (defaults DefaultHoldTime and a
	// third of the hold time). GoBGP refuses a hold time below 3 s.
	HoldTime  uint32 `json:"hold_time,omitempty"`
	Keepalive uint32 `json:"keepalive,omitempty"`
	// ConnectRetry is the seconds between connection attempts (default
	// DefaultConnectRetry). GoBGP's own default, 120 s, would keep a
	// restored tunnel without routes for minutes.
	ConnectRetry uint32 `json:"connect_retry,omitempty"`
	// Passive waits for the neighbor to connect. Set it on exactly one end
	// of a session between two speakers of the lab: after every failed
	// attempt GoBGP sits 5 s in Idle (a constant), refusing connections,
	// and two active ends can stay out of phase for tens of seconds
	// (measured: up to 20 s and more to re-establish after a restart).
	Passive bool `json:"passive,omitempty"`
	// EBGPMultihop is the TTL of an eBGP session whose neighbor is not
	// directly connected (0: 1, the eBGP default).
	EBGPMultihop uint32 `json:"ebgp_multihop,omitempty"`

	// LocalPref is set on every route learned from this neighbor (0: left
	// as received, i.e. 100 for eBGP), to prefer one path over another.
	LocalPref uint32 `json:"local_pref,omitempty"`
	// MED is set on every route sent to this neighbor (0: none).
	MED uint32 `json:"med,omitempty"`
	// Prepend adds the local ASN this many times to the AS path of every
	// route sent to this neighbor, making that path less preferred.
	Prepend uint32 `json:"prepend,omitempty"`
}

const (
	// DefaultHoldTime is short so a broken tunnel loses its routes within
	// seconds, as the lab's failover checks expect.
	DefaultHoldTime = 9
	// MinHoldTime is the smallest hold time GoBGP (and RFC 4271) accepts.
	MinHoldTime = 3
	// DefaultConnectRetry brings a session back soon after its path heals.
	DefaultConnectRetry = 2
	// DefaultMetric leaves room below for static routes that must win and
	// above for ones that must lose; 20 is what FRR uses for BGP.
	DefaultMetric = 20
	// RouteProtocol marks the kernel routes the speaker installs
	// (RTPROT_BGP in /etc/iproute2/rt_protos, shown as "proto bgp").
	RouteProtocol = 186
)

// Redistribute sources.
const (
	Connected = "connected"
	Static    = "static"
)

// hold returns the effective hold time and keepalive.
func (n Neighbor) hold() (hold, keepalive time.Duration) {
	h := n.HoldTime
	if h == 0 {
		h = DefaultHoldTime
	}
	k := n.Keepalive
	if k == 0 {
		k = max(h/3, 1)
	}
	return time.Duration(h) * time.Second, time.Duration(k) * time.Second
}

func (n Neighbor) connectRetry() uint32 {
	if n.ConnectRetry == 0 {
		return DefaultConnectRetry
	}
	return n.ConnectRetry
}

func (c Config) metric() uint32 {
	if c.Metric == 0 {
		return DefaultMetric
	}
	return c.Metric
}

// Validate reports the first setting the speaker cannot run with, naming
// the setting and what to use instead. Only IPv4 unicast is supported.
func (c Config) Validate() error {
	if c.ASN == 0 {
		return fmt.Errorf("bgp: asn is missing")
	}
	if !c.RouterID.Is4() {
		return fmt.Errorf("bgp: router-id %q must be an IPv4 address (usually one of the node's addresses)", c.RouterID)
	}
	if c.ListenPort < -1 {
		return fmt.Errorf("bgp: listen port %d: use 0 (179), -1 (do not listen) or a port number", c.ListenPort)
	}
	for _, p := range c.Networks {
		if !p.Addr().Is4() {
			return fmt.Errorf("bgp: network %s: only IPv4 prefixes are supported", p)
		}
		if p != p.Masked() {
			return fmt.Errorf("bgp: network %s has host bits set; use %s", p, p.Masked())
		}
	}
	for _, r := range c.Redistribute {
		if r != Connected && r != Static {
			return fmt.Errorf("bgp: redistribute %q: use %q or %q", r, Connected, Static)
		}
	}
	seen := map[netip.Addr]bool{}
	for _, n := range c.Neighbors {
		if !n.Address.Is4() {
			return fmt.Errorf("bgp: neighbor %q: only IPv4 neighbor addresses are supported", n.Address)
		}
		if seen[n.Address] {
			return fmt.Errorf("bgp: neighbor %s is listed twice", n.Address)
		}
		seen[n.Address] = true
		if n.PeerASN == 0 {
			return fmt.Errorf("bgp: neighbor %s: peer-asn is missing", n.Address)
		}
		if n.LocalAddress.IsValid() && !n.LocalAddress.Is4() {
			return fmt.Errorf("bgp: neighbor %s: local address %s must be IPv4 like the neighbor", n.Address, n.LocalAddress)
		}
		hold, keepalive := n.hold()
		if hold < MinHoldTime*time.Second {
			return fmt.Errorf("bgp: neighbor %s: hold time %s is below GoBGP's minimum %ds; use %d or more", n.Address, hold, MinHoldTime, MinHoldTime)
		}
		if keepalive >= hold {
			return fmt.Errorf("bgp: neighbor %s: keepalive %s must be shorter than the hold time %s (a third is usual)", n.Address, keepalive, hold)
		}
	}
	return nil
}

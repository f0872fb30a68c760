// Package plan turns a validated topology into the ordered list of objects a
// deploy creates. A plan is pure data: --dry-run prints it, apply executes it,
// and nothing in it needs the topology file again.
package plan

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/monitor"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// Plan is everything one lab deploy creates, stage by stage. Every step of a
// stage can run in parallel with the others of that stage; a stage starts
// when the previous one is complete.
type Plan struct {
	Lab      string
	Topology string // absolute path of the topology file
	// Source is the topology text the plan was built from, kept by the
	// deploy as the lab's deployed topology.
	Source []byte
	LabDir string
	// Dataplane runs the tunnels: Kernel or Userspace.
	Dataplane string
	Nodes     []Node
	Stages    []Stage
	// ExternalPeers names, by address, the BGP speakers emu does not run
	// ("onprem, run by frr"), so a session to one that stays down says who.
	ExternalPeers map[netip.Addr]string
}

// Node is what inspect needs to know of a node without the topology file.
type Node struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Runtime   string `json:"runtime,omitempty"` // "docker" for a container node
}

// Stage is a named group of independent steps.
type Stage struct {
	Name  string
	Steps []Step
}

// Step is one object to create. Its concrete type says which.
type Step interface{ String() string }

// Namespace is a network namespace for one node, mounted under /run/netns.
type Namespace struct {
	Name       string
	Forwarding bool // router-like kinds forward between interfaces
	IPv6       bool // the node has IPv6 addresses or routes
}

// Container is a node run as a Docker container: its network namespace is
// linked under /run/netns with the name a namespace node would have, then
// configured like one.
type Container struct {
	Lab        string
	Node       string
	Name       string // the namespace and container name
	Image      string
	Forwarding bool
	IPv6       bool
	Software   topology.Software // binds and env; daemons and exec run in Software
}

func (s Container) String() string {
	fwd := "host"
	if s.Forwarding {
		fwd = "forwarding"
	}
	return fmt.Sprintf("container %s from %s, netns linked as %s (%s)", s.Name, s.Image, s.Name, fwd)
}

// HasContainers reports whether any node is a container.
func (p *Plan) HasContainers() bool {
	for _, n := range p.Nodes {
		if n.Runtime == topology.RuntimeDocker {
			return true
		}
	}
	return false
}

// Veth is a link: a veth pair whose ends are created directly in their nodes'
// namespaces, so nothing ever appears in the host namespace.
type Veth struct {
	A, B End
	MTU  int
}

// End is one end of a veth pair.
type End struct {
	Namespace string
	Interface string
}

// Address is an interface address.
type Address struct {
	Namespace string
	Interface string
	Prefix    netip.Prefix
}

// Agent is the node agent process that runs a node's tunnels in userspace
// ESP. It carries keys, so it prints none.
type Agent struct {
	Namespace string
	Node      string
	Tunnels   []ipsec.Conn // userspace tunnels
	// XFRM are the node's IKE-keyed kernel tunnels: the KernelTunnel steps
	// make their interfaces and policies, the agent negotiates their SAs
	// and installs them as states.
	XFRM     []KernelTunnel
	Monitors []monitor.Config
	BGP      *routing.Config
	// Routes lead into its userspace tunnels: the kernel deletes them with
	// the TUN interface when the agent dies, so a restarted agent adds them
	// again at once, as deploy did (dead peer detection, if on, withdraws
	// them again should the tunnel be down; it would restore them only
	// after its first probe interval).
	Routes []monitor.Route
}

// KernelTunnel is a tunnel programmed into the kernel's XFRM: states,
// policies and an XFRM interface with if_id IfID.
type KernelTunnel struct {
	Namespace string
	Node      string
	IfID      uint32
	Conn      ipsec.Conn
}

// RateLimit emulates a provider's bandwidth spec on one interface: its
// egress leaves at Mbit Mbit/s at most (a tbf qdisc), or with SplitESP ESP
// and the rest at Mbit Mbit/s each (an htb qdisc with two classes).
type RateLimit struct {
	Namespace string
	Interface string
	Of        string // the element whose spec it is, in words
	Mbit      int
	SplitESP  bool
}

func (s RateLimit) String() string {
	if s.SplitESP {
		return fmt.Sprintf("htb %d Mbit/s for ESP and %d Mbit/s for the rest on %s egress in %s (%s, each direction)", s.Mbit, s.Mbit, s.Interface, s.Namespace, s.Of)
	}
	return fmt.Sprintf("tbf %d Mbit/s on %s egress in %s (%s)", s.Mbit, s.Interface, s.Namespace, s.Of)
}

// Software is the keeper of a node's programs: its mount namespace, binds,
// daemons and exec commands (package software); for a container node, its
// daemons and exec commands, run in the container through the engine.
type Software struct {
	Container string // the container of a container node, else ""
	Namespace string
	Node      string
	Topology  string // for file:line in the keeper's errors
	LabDir    string
	Software  topology.Software
}

func (s Software) String() string {
	out := fmt.Sprintf("software of %s in %s: own mount namespace (/run private, /sys of the netns)", s.Node, s.Namespace)
	if s.Container != "" {
		out = fmt.Sprintf("software of %s in container %s, through the engine", s.Node, s.Container)
	}
	for _, b := range s.Software.Binds {
		if s.Container != "" {
			break // the container's, made at create
		}
		ro := ""
		if b.ReadOnly {
			ro = " read-only"
		}
		out += fmt.Sprintf("; bind %s on %s%s", b.Host, b.Node, ro)
	}
	for _, d := range s.Software.Daemons {
		out += fmt.Sprintf("; daemon %s: %s", d.Name, d.Command)
	}
	for _, c := range s.Software.Exec {
		out += fmt.Sprintf("; exec %s", c.Text)
	}
	return out
}

// Dataplanes that deploy can use; "auto" is resolved before planning.
const (
	Kernel    = "kernel"
	Userspace = "userspace"
)

// Route is a static route in a namespace's main table.
type Route struct {
	Namespace string
	Dst       netip.Prefix
	Via       netip.Addr
	Dev       string
	Metric    int
}

func (s Namespace) String() string {
	fwd := "host"
	if s.Forwarding {
		fwd = "forwarding"
	}
	return fmt.Sprintf("netns %s (%s)", s.Name, fwd)
}

func (s Veth) String() string {
	mtu := ""
	if s.MTU > 0 {
		mtu = fmt.Sprintf(" mtu %d", s.MTU)
	}
	return fmt.Sprintf("veth %s:%s <-> %s:%s%s", s.A.Namespace, s.A.Interface, s.B.Namespace, s.B.Interface, mtu)
}

func (s Address) String() string {
	return fmt.Sprintf("addr %s dev %s in %s", s.Prefix, s.Interface, s.Namespace)
}

func (s Agent) String() string {
	out := fmt.Sprintf("agent in %s:", s.Namespace)
	for _, t := range s.Tunnels {
		out += " " + describeTunnel(t, Userspace)
	}
	for _, t := range s.XFRM {
		out += fmt.Sprintf(" IKEv2 for %s, its CHILD SAs into XFRM if_id %d", t.Conn.Name, t.IfID)
	}
	for _, m := range s.Monitors {
		out += fmt.Sprintf(" watch %s (ping %s via %s every %s, down after %d lost, then withdraw %d routes)", m.Connection, m.Target, m.Interface, m.Interval, m.Retries, len(m.Withdraw))
	}
	if b := s.BGP; b != nil {
		out += fmt.Sprintf(" bgp AS%d router-id %s networks %v, installs with metric %d:", b.ASN, b.RouterID, b.Networks, b.Metric)
		for _, n := range b.Neighbors {
			via := ""
			if n.Interface != "" {
				via = " over " + n.Interface
			}
			out += fmt.Sprintf(" neighbor %s AS%d%s hold %ds", n.Address, n.PeerASN, via, n.HoldTime)
		}
	}
	return out
}

func (s KernelTunnel) String() string {
	return fmt.Sprintf("xfrm in %s: %s if_id %d", s.Namespace, describeTunnel(s.Conn, Kernel), s.IfID)
}

func describeTunnel(c ipsec.Conn, dataplane string) string {
	addr := ""
	if c.Address.IsValid() {
		addr = " " + c.Address.String()
	}
	if k := c.IKE; k != nil {
		role := "responder"
		if k.Initiate {
			role = "initiator"
		}
		return fmt.Sprintf("tunnel %s%s (%s → %s, %s, keyed by IKEv2 as %s: %s, %s, %s ESP)", c.Interface, addr, c.Local, c.Remote, c.Cipher, role,
			ike.FormatProposal(k.IKE.Proposal(ike.ProtoIKE)), ike.FormatProposal(k.ESP.Proposal(ike.ProtoESP)), dataplane)
	}
	return fmt.Sprintf("tunnel %s%s (%s → %s, %s, spi out 0x%08x in 0x%08x, %s ESP)", c.Interface, addr, c.Local, c.Remote, c.Cipher, c.Out.SPI, c.In.SPI, dataplane)
}

func (s Route) String() string {
	out := fmt.Sprintf("route %s", s.Dst)
	if s.Via.IsValid() {
		out += " via " + s.Via.String()
	}
	if s.Dev != "" {
		out += " dev " + s.Dev
	}
	if s.Metric != 0 {
		out += fmt.Sprintf(" metric %d", s.Metric)
	}
	return out + " in " + s.Namespace
}

// NamespaceName is the namespace of a node, named so `ip netns exec` works.
func NamespaceName(lab, node string) string { return "emu-" + lab + "-" + node }

// Build makes the plan of a topology. Tunnels run on dataplane (Kernel or
// Userspace) with keys from secrets.
func Build(t *topology.Topology, kinds *nodes.Registry, secrets *ipsec.Secrets, dataplane string) (*Plan, error) {
	p := &Plan{Lab: t.Name, Topology: t.File, Source: t.Source, LabDir: t.LabDir(), Dataplane: dataplane}
	var nss, veths, limits, addrs, tunnels, agents, routes, programs []Step
	for _, n := range t.Nodes {
		ns := NamespaceName(t.Name, n.Name)
		fwd, v6 := n.Roles.Forwards, usesIPv6(n)
		if n.Runtime == topology.RuntimeDocker {
			p.Nodes = append(p.Nodes, Node{Name: n.Name, Kind: n.Kind, Namespace: ns, Runtime: n.Runtime})
			nss = append(nss, Container{Lab: t.Name, Node: n.Name, Name: ns, Image: n.Image, Forwarding: fwd, IPv6: v6, Software: n.Software})
		} else {
			p.Nodes = append(p.Nodes, Node{Name: n.Name, Kind: n.Kind, Namespace: ns})
			nss = append(nss, Namespace{Name: ns, Forwarding: fwd, IPv6: v6})
		}
		for _, ifc := range n.Interfaces {
			for _, a := range ifc.Addrs {
				addrs = append(addrs, Address{Namespace: ns, Interface: ifc.Name, Prefix: a})
			}
		}
		if len(n.Tunnels) > 0 || n.BGP != nil {
			kernel, agent, err := tunnelSteps(t, n, secrets, dataplane)
			if err != nil {
				return nil, err
			}
			tunnels = append(tunnels, kernel...)
			if agent != nil {
				agents = append(agents, *agent)
			}
		}
		for _, r := range RoutesOf(t, n) {
			routes = append(routes, r)
		}
		eps, spec := kinds.Limits(t, n)
		for _, e := range eps {
			limits = append(limits, RateLimit{Namespace: NamespaceName(t.Name, e.Node), Interface: e.Interface, Of: spec.Of + " " + n.Name, Mbit: n.Bandwidth, SplitESP: spec.SplitESP})
		}
		if n.BGP != nil && n.BGP.External() {
			if p.ExternalPeers == nil {
				p.ExternalPeers = map[netip.Addr]string{}
			}
			who := fmt.Sprintf("%s, run by %s", n.Name, n.BGP.Speaker)
			for _, ifc := range n.Interfaces {
				for _, a := range ifc.Addrs {
					p.ExternalPeers[a.Addr()] = who
				}
			}
			for _, tun := range n.Tunnels {
				if tun.Address.IsValid() {
					p.ExternalPeers[tun.Address.Addr()] = who
				}
			}
		}
		sw := Software{Namespace: ns, Node: n.Name, Topology: t.File, LabDir: t.LabDir(), Software: n.Software}
		switch {
		case n.Runtime == topology.RuntimeNamespace && n.Software.Runs():
			programs = append(programs, sw)
		case n.Runtime != topology.RuntimeNamespace && len(n.Software.Daemons)+len(n.Software.Exec) > 0:
			// The container got its binds and env at create.
			sw.Container = ns
			programs = append(programs, sw)
		}
	}
	for _, l := range t.Links {
		v := Veth{}
		for i, e := range l.Ends {
			end := End{Namespace: NamespaceName(t.Name, e.Node), Interface: e.Interface}
			if i == 0 {
				v.A = end
			} else {
				v.B = end
			}
			if mtu := t.Node(e.Node).Interface(e.Interface).MTU; mtu > v.MTU {
				v.MTU = mtu
			}
		}
		veths = append(veths, v)
	}
	p.Stages = []Stage{
		{Name: "namespaces", Steps: nss},
		{Name: "links", Steps: veths},
		{Name: "bandwidth", Steps: limits},
		{Name: "addresses", Steps: addrs},
		{Name: "tunnels", Steps: tunnels},
		{Name: "agents", Steps: agents},
		{Name: "routes", Steps: routes},
		// Last: the node is wired, its tunnels and routes are up, so its
		// daemons find their interfaces and peers.
		{Name: "software", Steps: programs},
	}
	// A stage with nothing to do is not shown: a lab without kernel
	// tunnels, say, has no "tunnels" stage.
	p.Stages = slices.DeleteFunc(p.Stages, func(s Stage) bool { return len(s.Steps) == 0 })
	return p, nil
}

// tunnelSteps returns the kernel tunnels of a node and its agent, if it
// needs one: for userspace tunnels, to key kernel tunnels by IKE, or to
// watch a connection.
func tunnelSteps(t *topology.Topology, n *topology.Node, secrets *ipsec.Secrets, dataplane string) ([]Step, *Agent, error) {
	ns := NamespaceName(t.Name, n.Name)
	if n.Dataplane != "" {
		dataplane = n.Dataplane
	}
	agent := &Agent{Namespace: ns, Node: n.Name}
	var kernel []Step
	for i, tun := range n.Tunnels {
		if tun.External() {
			continue // the node's own software runs it: no SAs, dataplane or IKE from emu
		}
		c, err := secrets.Resolve(tun)
		if err != nil {
			return nil, nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		if dataplane == Userspace {
			agent.Tunnels = append(agent.Tunnels, c)
			agent.Routes = append(agent.Routes, routesInto(t, n, tun)...)
		} else {
			k := KernelTunnel{Namespace: ns, Node: n.Name, IfID: uint32(i + 1), Conn: c}
			kernel = append(kernel, k)
			if c.IKE != nil {
				agent.XFRM = append(agent.XFRM, k)
			}
		}
		agent.Monitors = append(agent.Monitors, monitors(t, n, tun)...)
	}
	agent.BGP = bgpConfig(n)
	if len(agent.Tunnels) == 0 && len(agent.XFRM) == 0 && len(agent.Monitors) == 0 && agent.BGP == nil {
		return kernel, nil, nil
	}
	return kernel, agent, nil
}

// bgpConfig is the node's speaker as the agent runs it. A session with a
// neighbor on a tunnel's subnet is bound to the tunnel interface, so it can
// never slip onto the plain path: when the tunnel breaks, the session does.
func bgpConfig(n *topology.Node) *routing.Config {
	b := n.BGP
	if b == nil || b.External() {
		return nil // no speaker, or the node's own software runs it
	}
	c := &routing.Config{ASN: b.ASN, RouterID: b.RouterID, Networks: b.Networks, Metric: uint32(b.Metric), Multipath: b.Multipath, Redistribute: b.Redistribute}
	for _, nb := range b.Neighbors {
		rn := routing.Neighbor{
			Address:      nb.Address,
			PeerASN:      nb.ASN,
			HoldTime:     uint32(b.Hold.Seconds()),
			ConnectRetry: uint32(b.ConnectRetry.Seconds()),
			LocalPref:    nb.LocalPref,
		}
		local := localAddress(n, nb.Address)
		for _, t := range n.Tunnels {
			if t.Address.IsValid() && t.Address.Contains(nb.Address) {
				rn.Interface, rn.LocalAddress = t.Interface, t.Address.Addr()
			}
		}
		// GoBGP refuses connections for 5 s after a failed session; when
		// both ends dial they can stay out of phase for tens of seconds.
		// The end with the higher address waits instead.
		rn.Passive = local.IsValid() && local.Compare(nb.Address) > 0
		c.Neighbors = append(c.Neighbors, rn)
	}
	return c
}

// monitors turns a connection's DPD and health check into what the agent
// watches and what it withdraws: for DPD the node's own routes into the
// tunnel, for revoke_route the routes the gateway published into the VPC.
// routesInto is the node's static routes that lead into the tunnel: by its
// interface, or via an address on its subnet.
func routesInto(t *topology.Topology, n *topology.Node, tun *topology.Tunnel) []monitor.Route {
	var out []monitor.Route
	for _, r := range n.Routes {
		if r.Dev == tun.Interface || (r.Via.IsValid() && tun.Address.Contains(r.Via)) {
			out = append(out, monitor.Route{Namespace: NamespaceName(t.Name, n.Name), Dst: r.Dst, Via: r.Via, Dev: r.Dev, Metric: r.Metric})
		}
	}
	return out
}

func monitors(t *topology.Topology, n *topology.Node, tun *topology.Tunnel) []monitor.Config {
	var out []monitor.Config
	if tun.DPD != nil {
		m := monitor.Config{Connection: tun.Name + " dpd", Interface: tun.Interface, Source: tun.Address.Addr(), Target: tun.PeerAddress, Interval: tun.DPD.Interval, Retries: tun.DPD.Retries}
		m.Withdraw = routesInto(t, n, tun)
		out = append(out, m)
	}
	if hc := tun.HealthCheck; hc != nil {
		src := hc.Source
		if !src.IsValid() && tun.Address.IsValid() {
			src = tun.Address.Addr()
		}
		m := monitor.Config{Connection: tun.Name + " health-check", Interface: tun.Interface, Source: src, Target: hc.Destination, Interval: hc.Interval, Retries: hc.Retries}
		if hc.Policy == topology.RevokeRoute {
			for _, pr := range nodes.PublishedRoutes(t) {
				if pr.Gateway == n.Name {
					r := pr.Route
					m.Withdraw = append(m.Withdraw, monitor.Route{Namespace: NamespaceName(t.Name, pr.VPC), Dst: r.Dst, Via: r.Via, Dev: r.Dev, Metric: r.Metric})
				}
			}
		}
		out = append(out, m)
	}
	return out
}

// RoutesOf is the static routes of one node as steps.
func RoutesOf(t *topology.Topology, n *topology.Node) []Route {
	var out []Route
	for _, r := range n.Routes {
		out = append(out, Route{Namespace: NamespaceName(t.Name, n.Name), Dst: r.Dst, Via: r.Via, Dev: r.Dev, Metric: r.Metric})
	}
	return out
}

func usesIPv6(n *topology.Node) bool {
	for _, ifc := range n.Interfaces {
		for _, a := range ifc.Addrs {
			if a.Addr().Is6() {
				return true
			}
		}
	}
	for _, r := range n.Routes {
		if r.Dst.Addr().Is6() {
			return true
		}
	}
	return false
}

// StepCount is the number of steps of all stages.
func (p *Plan) StepCount() int {
	n := 0
	for _, s := range p.Stages {
		n += len(s.Steps)
	}
	return n
}

// localAddress is the node's own address on the subnet of peer (an
// interface's or a tunnel's), or the zero Addr.
func localAddress(n *topology.Node, peer netip.Addr) netip.Addr {
	for _, ifc := range n.Interfaces {
		for _, p := range ifc.Addrs {
			if p.Contains(peer) {
				return p.Addr()
			}
		}
	}
	for _, t := range n.Tunnels {
		if t.Address.IsValid() && t.Address.Contains(peer) {
			return t.Address.Addr()
		}
	}
	return netip.Addr{}
}

package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/monitor"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/safefile"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// RecoverTimeout bounds how long a repair waits for the lab to recover:
// the deploy's convergence bound (an IKE exchange's retransmissions, BGP's
// connect-retry and hold timers, a DPD probe interval are each well inside).
const RecoverTimeout = ConvergeTimeout

// Recovery is what a lab still lacks after a repair, read from its agents
// and namespaces: one Missing per connection, session, prefix or route.
// Empty when recovered.
type Recovery []Missing

// Missing is one thing a repair waits for: Kind says what it is (one of the
// Missing* constants), Object which one, the same while its state changes
// and, for a BGP session, from both its ends ("BGP 169.254.10.1 ↔
// 169.254.10.2", sessionKey), and Text its state, as "vpngw: neighbor
// 169.254.10.1 is active".
type Missing struct {
	Kind   string
	Object string
	Text   string
}

// What a repair waits for, as Recovery.Count names them (singular).
const (
	MissingAgent       = "agent state"
	MissingIKE         = "IKE SA"
	MissingBGPSession  = "BGP session"
	MissingBGPPrefix   = "BGP prefix"
	MissingDPDRoute    = "route withdrawn by DPD"
	MissingHealthRoute = "route withdrawn by the health check"
	// MissingKeepalive is an Established session that has not heard from
	// its peer since the repair (afterRepair): waited for, since its hold
	// timer may yet expire, but it never went down, so Count leaves it out
	// and String sums such sessions up in one clause. One that does drop
	// is listed again as a MissingBGPSession.
	MissingKeepalive = "keepalive since the repair"
)

// missingPlural gives each kind, in Count's order, its plural.
var missingPlural = []struct{ kind, plural string }{
	{MissingAgent, "agent states"},
	{MissingIKE, "IKE SAs"},
	{MissingBGPSession, "BGP sessions"},
	{MissingBGPPrefix, "BGP prefixes"},
	{MissingDPDRoute, "routes withdrawn by DPD"},
	{MissingHealthRoute, "routes withdrawn by the health check"},
}

// String lists what is missing, "; "-separated, and the sessions waited
// for only until they hear from their peer in one clause ("waiting for
// keepalives from 9 BGP sessions"): a BGP lab has many, and listing each
// made one line of several hundred characters.
func (r Recovery) String() string {
	var s []string
	for _, m := range r {
		if m.Kind != MissingKeepalive {
			s = append(s, m.Text)
		}
	}
	switch keepalives := r.objects(MissingKeepalive); keepalives {
	case 0:
	case 1:
		s = append(s, "waiting for a keepalive from 1 BGP session established before the repair")
	default:
		s = append(s, fmt.Sprintf("waiting for keepalives from %d BGP sessions established before the repair", keepalives))
	}
	return strings.Join(s, "; ")
}

// Add returns r with each of more whose object (of its kind) r lacks: a
// wait's progress added up, each session, SA or route counted once though
// its state changed between polls.
func (r Recovery) Add(more Recovery) Recovery {
	for _, m := range more {
		if !slices.ContainsFunc(r, func(x Missing) bool { return x.Kind == m.Kind && x.Object == m.Object }) {
			r = append(r, m)
		}
	}
	return r
}

// objects counts the distinct objects of kind in r: a BGP session both of
// whose ends are missing is one.
func (r Recovery) objects(kind string) int {
	seen := map[string]bool{}
	for _, m := range r {
		if m.Kind == kind {
			seen[m.Object] = true
		}
	}
	return len(seen)
}

// Count says how many of each kind r holds: "2 routes withdrawn by DPD",
// "1 IKE SA, 1 BGP session"; empty for an empty r. Sessions only waited
// for a keepalive (MissingKeepalive) are not counted: they did not go down,
// so they did not come back.
func (r Recovery) Count() string {
	var out []string
	for _, k := range missingPlural {
		switch n := r.objects(k.kind); n {
		case 0:
		case 1:
			out = append(out, "1 "+k.kind)
		default:
			out = append(out, fmt.Sprintf("%d %s", n, k.plural))
		}
	}
	return strings.Join(out, ", ")
}

// Recovered reads, once, what the agents of the lab in labDir run and
// report, and lists what is not back: each IKE-keyed connection's CHILD SA
// (phase 2) established, each BGP session Established with every prefix
// its peer originates installed, and every route a DPD or health-check
// monitor withdraws while its tunnel is down present in its namespace.
// Those are what `emu check` judges, so a check after the recovery does
// not catch the lab half-way. An agent without a current state is listed
// as not back (its error names its health and log).
func Recovered(t *topology.Topology, labDir string) (Recovery, error) {
	return recovered(t, labDir, nil)
}

// recovered is Recovered; with ar, an Established BGP session is back only
// once it heard from its peer after the repair (ar.heard).
func recovered(t *topology.Topology, labDir string, ar *afterRepair) (Recovery, error) {
	var out Recovery
	for _, n := range t.Nodes {
		cfgPath := agentConfigPath(labDir, n.Name)
		data, err := safefile.ReadFile(cfgPath)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a node without an agent: nothing of it to recover
		}
		if err != nil {
			return nil, err
		}
		var cfg agent.Config
		if err := json.Unmarshal(data, &cfg); err != nil {
			return nil, fmt.Errorf("agent config %s: %w", cfgPath, err)
		}
		if needsState(cfg) {
			st, err := agent.ReadState(cfgPath)
			if err != nil {
				out = append(out, Missing{MissingAgent, n.Name, err.Error()})
			} else {
				out = append(out, ikeNotBack(n.Name, cfg, st)...)
				out = append(out, bgpNotBack(t, n.Name, cfg, st)...)
				if ar != nil {
					out = append(out, ar.heard(t, n.Name, st)...)
				}
			}
		}
		for _, m := range cfg.Monitors {
			kind := MissingDPDRoute
			if strings.HasSuffix(m.Connection, " health-check") { // as plan names them
				kind = MissingHealthRoute
			}
			for _, r := range m.Withdraw {
				present, err := routePresent(r)
				if err != nil {
					return nil, err
				}
				if !present {
					out = append(out, Missing{kind, r.String(), fmt.Sprintf("%s: %s not back yet: route %s", n.Name, m.Connection, r)})
				}
			}
		}
	}
	return out, nil
}

func needsState(cfg agent.Config) bool {
	if cfg.BGP != nil || len(cfg.XFRM) > 0 {
		return true
	}
	return slices.ContainsFunc(cfg.Tunnels, func(c ipsec.Conn) bool { return c.IKE != nil })
}

func ikeNotBack(node string, cfg agent.Config, st *agent.State) Recovery {
	var want []string
	for _, c := range cfg.Tunnels {
		if c.IKE != nil {
			want = append(want, c.Name)
		}
	}
	for _, x := range cfg.XFRM {
		want = append(want, x.Conn.Name)
	}
	var out Recovery
	for _, name := range want {
		i := slices.IndexFunc(st.IKE, func(s ike.Status) bool { return s.Name == name })
		switch {
		case i < 0:
			out = append(out, Missing{MissingIKE, node + " " + name, fmt.Sprintf("%s: connection %s reports no IKE state", node, name)})
		case st.IKE[i].Phase2 != ike.StateEstablished:
			out = append(out, Missing{MissingIKE, node + " " + name, fmt.Sprintf("%s: connection %s phase 1 %s, phase 2 %s", node, name, st.IKE[i].Phase1, st.IKE[i].Phase2)})
		}
	}
	return out
}

func bgpNotBack(t *topology.Topology, node string, cfg agent.Config, st *agent.State) Recovery {
	if cfg.BGP == nil {
		return nil
	}
	var out Recovery
	for _, nb := range st.Neighbors {
		if !nb.Established {
			out = append(out, Missing{MissingBGPSession, sessionKey(t, node, nb.Address), fmt.Sprintf("%s: neighbor %s is %s", node, nb.Address, nb.State)})
		}
	}
	seen := map[netip.Prefix]bool{}
	for _, nb := range cfg.BGP.Neighbors {
		peer := t.Owner(nb.Address)
		if peer == nil || peer.BGP == nil {
			continue
		}
		for _, p := range peer.BGP.Networks {
			if seen[p] {
				continue
			}
			seen[p] = true
			if !slices.ContainsFunc(st.Routes, func(r routing.Route) bool { return r.Prefix == p && (r.Installed || !r.NextHop.IsValid()) }) {
				out = append(out, Missing{MissingBGPPrefix, node + " " + p.String(), fmt.Sprintf("%s: %s (from %s) not installed yet", node, p, peer.Name)})
			}
		}
	}
	return out
}

// sessionKey names the BGP session between node and its neighbor addr
// alike from both ends, "BGP 169.254.10.1 ↔ 169.254.10.2", so a session
// whose two ends both dropped counts as one; when node has no address in
// a subnet holding addr (a multihop session), it names this end alone.
func sessionKey(t *topology.Topology, node string, addr netip.Addr) string {
	n := t.Node(node)
	if n == nil {
		return node + " neighbor " + addr.String()
	}
	var own []netip.Prefix // the node's addresses: its interfaces' and its tunnels'
	for _, ifc := range n.Interfaces {
		own = append(own, ifc.Addrs...)
	}
	for _, tun := range n.Tunnels {
		own = append(own, tun.Address)
	}
	for _, p := range own {
		if p.IsValid() && p.Contains(addr) && p.Addr() != addr {
			a, b := p.Addr(), addr
			if b.Less(a) {
				a, b = b, a
			}
			return fmt.Sprintf("BGP %s ↔ %s", a, b)
		}
	}
	return node + " neighbor " + addr.String()
}

// routePresent reports whether r is in its namespace's main table: same
// destination, and its device and gateway where r names them.
func routePresent(r monitor.Route) (bool, error) {
	nl, err := wiring.Open(r.Namespace)
	if err != nil {
		return false, err
	}
	defer nl.Close()
	family := netlink.FAMILY_V4
	if r.Dst.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	filter := &netlink.Route{Dst: wiring.IPNet(r.Dst)}
	mask := uint64(netlink.RT_FILTER_DST)
	if r.Dev != "" {
		link, err := nl.LinkByName(r.Dev)
		if err != nil {
			return false, nil // no device, no route through it
		}
		filter.LinkIndex, mask = link.Attrs().Index, mask|netlink.RT_FILTER_OIF
	}
	if r.Via.IsValid() {
		filter.Gw, mask = wiring.IP(r.Via), mask|netlink.RT_FILTER_GW
	}
	routes, err := nl.RouteListFiltered(family, filter, mask)
	if err != nil {
		return false, fmt.Errorf("routes of %s: %w", r.Namespace, err)
	}
	return len(routes) > 0, nil
}

// afterRepair tells the BGP sessions that outlived a fault from those that
// are safe: a session that lost its peer's keepalives for less than its
// hold time is still Established when the fault is removed, and its hold
// timer may yet expire (transit-router.yaml, 3 s hold, a 2 s fault: the
// sessions dropped a second after the repair and `emu check` failed). It
// is safe once a message from its peer arrived after the repair, which
// reset its hold timer over the repaired path, or once it came up after
// the repair. Which connection a session runs over is not traced: every
// session waits for that, at most a keepalive interval (a third of its
// hold time) when untouched.
type afterRepair struct {
	since time.Time
	// base is, per node and neighbor, the messages received as of the
	// node's first state written after since.
	base map[string]uint64
	// back lists the sessions that came up after since: they were down
	// when the repair began, whether or not a poll saw them down.
	back Recovery
}

// heard lists node's Established sessions that have not heard from their
// peer since the repair, as MissingKeepalive (bgpNotBack names one that
// drops as a MissingBGPSession, which is what Count counts).
func (ar *afterRepair) heard(t *topology.Topology, node string, st *agent.State) Recovery {
	var out Recovery
	for _, nb := range st.Neighbors {
		if !nb.Established {
			continue // bgpNotBack lists it
		}
		if nb.Since.After(ar.since) { // down at the repair, up since
			ar.back = ar.back.Add(Recovery{{MissingBGPSession, sessionKey(t, node, nb.Address), fmt.Sprintf("%s: neighbor %s is established since the repair", node, nb.Address)}})
			continue
		}
		key := node + " neighbor " + nb.Address.String()
		base, ok := ar.base[key]
		switch {
		case !st.Updated.After(ar.since):
			// A state from before the repair cannot tell.
		case !ok:
			ar.base[key] = nb.Messages
		case nb.Messages > base:
			continue
		}
		out = append(out, Missing{MissingKeepalive, sessionKey(t, node, nb.Address), fmt.Sprintf("%s: neighbor %s is established but has not heard from its peer since the repair (its hold timer may still expire)", node, nb.Address)})
	}
	return out
}

// AwaitRecovery polls Recovered until nothing is missing, timeout passes
// (missing lists what is still missing, and err is nil) or ctx ends (ctx's
// error). repaired is when the repair began (taken before the fault was
// removed): an Established BGP session counts as back only once it has
// heard from its peer since (afterRepair). progress, if set, gets what is
// missing each time that changes, so a user sees the wait move. back is
// what came back: all that a poll saw missing, each object once, and the
// BGP sessions that came up after repaired (down at the repair, though
// perhaps up again before the first poll); its MissingKeepalive entries
// are sessions that stayed up, which Count leaves out.
func AwaitRecovery(ctx context.Context, t *topology.Topology, labDir string, repaired time.Time, timeout time.Duration, progress func(Recovery)) (missing, back Recovery, err error) {
	ar := &afterRepair{since: repaired, base: map[string]uint64{}}
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		missing, err = recovered(t, labDir, ar)
		if err != nil {
			return nil, nil, err
		}
		back = back.Add(missing)
		if now := missing.String(); now != last && progress != nil {
			progress(missing)
			last = now
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing, back.Add(ar.back), nil
		}
		select {
		case <-ctx.Done():
			return missing, back.Add(ar.back), ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

package checks

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// Failover breaks the first IPsec connection of the first on-premises
// gateway under a stream of 100 probes a second and checks what the guide
// says happens, for the lab's configuration:
//   - automatic (BGP over the tunnel, or the health check with
//     revoke_route): traffic resumes by itself within FailoverLimit;
//   - manual (method 1): traffic stops and stays stopped until the
//     operator withdraws the VPN gateway's routes, then resumes; while
//     it is stopped, a few UDP datagrams and pings under capture show what
//     each direction does on the wire (one-way traffic may still arrive
//     in clear: observeOutage), which the row reports without changing
//     its verdict;
//
// then that the fallback crosses the private path in clear (or stays
// encrypted when another connection to the same peer is left), and that
// after the repair traffic is encrypted again within RepairLimit. It
// disrupts the lab for about 20 s and restores it.
var Failover = Check{Name: "failover", Run: failover}

// Limits of the shipped timers: hold 3 s, DPD 1 s x 3, connect-retry 1 s.
const (
	FailoverLimit = 10 * time.Second
	RepairLimit   = 15 * time.Second
)

func failover(ctx context.Context, l Lab) []Result {
	gw, tun := FailoverConnection(l.Topology)
	a, b, why := endPair(l.Topology)
	if tun == nil {
		why = "needs an onprem-gateway with an ipsec connection"
	}
	if why != "" {
		return []Result{{Check: "failover", Evidence: why}}
	}
	src, dst := l.NS(a.node.Name), b.addr
	ns := l.NS(gw.Name)
	// A fault already in force stopped the traffic before the stream
	// began (no outage to see), and the repair below would remove it:
	// never judge through, nor remove, a fault this check did not make.
	if broken, err := fault.TunnelBroken(ns, tun.Name); err != nil || broken {
		r := Result{Check: "failover", Inconclusive: true, Evidence: fmt.Sprintf("not run: connection %s:%s is already broken by a fault this check did not make (left in place; repair it with `emu fault tunnel up`)", gw.Name, tun.Name)}
		if err != nil {
			r.Evidence = "not run: " + err.Error()
		}
		return []Result{r}
	}
	// The check holds its fault while it runs, so `emu fault` tells it
	// from one a killed check left, and never removes it under the check.
	hold := l.FailoverHold
	if hold == nil {
		var err error
		if hold, err = fault.HoldCheck(l.Dir, ns, tun.Name); err != nil {
			return []Result{{Check: "failover", Inconclusive: true, Evidence: "not run: " + err.Error()}}
		}
		defer hold.Release() // after the repair below: the table goes first
	}
	if left, err := fault.TunnelBrokenBy(fault.ByCheck, ns, tun.Name); err != nil || left {
		r := Result{Check: "failover", Inconclusive: true, Evidence: fmt.Sprintf("not run: connection %s:%s is broken by the fault an `emu check --failover` that did not finish left (nftables table %s%s; remove it with `emu fault tunnel up`)", gw.Name, tun.Name, fault.ByCheck, tun.Name)}
		if err != nil {
			r.Evidence = "not run: " + err.Error()
		}
		return []Result{r}
	}
	// A method-1 check killed after its manual step left the VPN
	// gateway's routes withdrawn: the traffic would fall back in clear
	// before the stream began.
	if left, err := hold.LeftRoutes(); err != nil || len(left) > 0 {
		r := Result{Check: "failover", Inconclusive: true}
		if err != nil {
			r.Evidence = "not run: " + err.Error()
		} else {
			r.Evidence = fmt.Sprintf("not run: route %s of %s (published by %s) is withdrawn, left by an `emu check --failover` of %s that did not finish (restore it with `emu fault tunnel up` on %s)", left[0], left[0].Node, left[0].Gateway, left[0].By, left[0].By)
		}
		return []Result{r}
	}
	auto := automatic(l.Topology, tun)
	var out []Result
	// The connection's outbound SPIs: the lab's keys, and for IKE the
	// agents' live SAs, learnt again whenever the wire is judged (a rekey
	// changes them; any SA of the connection seen counts).
	spis := connSPIs{}
	spis.learn(l, gw.Name, tun)

	// 1. Break the tunnel; watch the stream.
	start := time.Now()
	r := Result{Check: fmt.Sprintf("failover: %s down", tun.Name)}
	window := FailoverLimit + 2*time.Second
	if !auto {
		window = 8 * time.Second // DPD's 3 s, then proof that nothing resumes
	}
	res, err := streamAround(ctx, src, dst, window, func() error {
		return fault.TunnelDownBy(fault.ByCheck, ns, tun.Name, tun.Local, tun.Remote)
	})
	switch {
	case err != nil:
		r.Evidence = err.Error()
	case auto:
		r.Passed, r.Evidence = judgeAutomatic(res, otherConnection(gw, tun))
		// A stream cut short proves nothing held to the end of the window.
		r.Passed = r.Passed && ctx.Err() == nil
	default:
		// Stopped from the fault (plus DPD's detection) to the end.
		stopped := res.Trailing >= window-5*time.Second
		r.Passed = stopped
		r.Evidence = fmt.Sprintf("method 1: traffic stopped and stayed stopped with the VPN gateway's routes published (%s)", res)
		switch {
		case ctx.Err() != nil:
			// Staying stopped needs the whole window.
			r.Passed = false
			r.Evidence = "the stream was cut short: " + res.String()
		case !stopped:
			r.Evidence = "traffic resumed without the operator, which method 1 does not do: " + res.String()
		case l.Topology.Node(tun.Peer.Node) != nil:
			gwNode := l.Topology.Node(tun.Peer.Node)
			// Round trips stopped; say what each direction does on the
			// wire, as measured: one of them may still get through.
			if w, werr := observeOutage(ctx, l, a, b, gwNode); werr != nil {
				r.Evidence += "; on the wire: not observed: " + werr.Error()
			} else {
				r.Evidence += "; on the wire: " + w.describe(a.node.Name, b.node.Name, gwNode.Name)
			}
		}
	}
	if err == nil && tun.IKE != nil && l.Dir != "" {
		// The traffic stopped; IKE must have seen it too, as DPD
		// declares a dead peer, or the console would lie.
		down, what := ikeDown(l, gw.Name, tun)
		r.Evidence += "; " + what
		if !down {
			r.Passed = false
			r.Evidence = "DPD did not take the tunnel down: " + r.Evidence
		}
	}
	r.Duration = time.Since(start)
	out = append(out, cutShort(ctx, r))

	// 2. Method 1's manual step.
	if !auto && ctx.Err() == nil {
		start = time.Now()
		r = Result{Check: "failover: operator withdraws the VPN gateway's routes"}
		res, err = streamAround(ctx, src, dst, 4*time.Second, func() error {
			// Recorded first: killed after the withdrawal, the check
			// leaves in its hold what `emu fault tunnel up` restores.
			if err := hold.RecordRoutes(publishedRoutes(l, gw.Name+":"+tun.Name)); err != nil {
				return err
			}
			_, err := lab.SetPublishedRoutes(l.Topology, false)
			return err
		})
		if err != nil {
			r.Evidence = err.Error()
		} else {
			r.Passed = res.Trailing == 0
			r.Evidence = fmt.Sprintf("after the withdrawal: %s", res)
		}
		r.Duration = time.Since(start)
		out = append(out, cutShort(ctx, r))
	}

	// 3. The fallback path: in clear, unless another connection is left.
	start = time.Now()
	var enc Result
	var v *verdict
	if ctx.Err() == nil {
		enc, v = observeEncryption(ctx, l)
		spis.learn(l, gw.Name, tun)
	}
	r = Result{Check: "failover: fallback path", Duration: time.Since(start)}
	switch {
	case ctx.Err() != nil:
		r.Evidence = "not observed"
	case otherConnection(gw, tun):
		// Zero outage is only believable if the broken connection really
		// stopped carrying: none of its SAs may be on the wire.
		// Only what the faulted end sends (sentSPIs).
		still := spis.seen(v)
		r.Passed = enc.Passed && len(still) == 0
		r.Inconclusive = enc.Inconclusive
		r.Evidence = fmt.Sprintf("another connection to the same peer carries the traffic, still encrypted, and %s sends nothing on %s (its SAs are not on the wire; the far end's may be, until its own route is withdrawn): %s", gw.Name, tun.Name, enc.Evidence)
		if !enc.Passed {
			r.Evidence = "another connection to the same peer should carry the traffic encrypted, but: " + enc.Evidence
		}
		if len(still) > 0 {
			r.Evidence = fmt.Sprintf("the fault did not bite: %s still carries ESP (SPI %s); %s", tun.Name, strings.Join(still, ", "), enc.Evidence)
		}
	default:
		r.Passed = !enc.Passed && !enc.Inconclusive && !strings.Contains(enc.Evidence, "marker in 0") && !strings.Contains(enc.Evidence, "traffic failed")
		r.Inconclusive = enc.Inconclusive
		r.Evidence = "unencrypted over Express Connect + CEN, as the guide says: " + enc.Evidence
		if !r.Passed && !r.Inconclusive {
			r.Evidence = "the guide says the traffic falls back unencrypted over Express Connect + CEN, but: " + enc.Evidence
		}
	}
	out = append(out, cutShort(ctx, r))

	// 4. Repair (only the check's own fault), and back to the tunnel.
	start = time.Now()
	r = Result{Check: fmt.Sprintf("failover: %s repaired", tun.Name)}
	err = fault.TunnelUpBy(fault.ByCheck, ns, tun.Name)
	if err == nil && !auto {
		if _, err = lab.SetPublishedRoutes(l.Topology, true); err == nil {
			err = hold.ForgetRoutes()
		}
	}
	if err != nil {
		r.Evidence = err.Error()
		return append(out, r)
	}
	// A fault of `emu fault` added while the check ran stays, and keeps
	// the connection down: nothing to judge the repair by.
	if broken, err := fault.TunnelBroken(ns, tun.Name); err != nil || broken {
		r.Inconclusive, r.Duration = true, time.Since(start)
		r.Evidence = fmt.Sprintf("a fault was added to %s:%s while the check ran (left in place; repair it with `emu fault tunnel up`): the repair cannot be judged", gw.Name, tun.Name)
		if err != nil {
			r.Evidence = "the repair cannot be judged: " + err.Error()
		}
		return append(out, r)
	}
	if ctx.Err() != nil {
		r.Inconclusive, r.Duration = true, time.Since(start)
		r.Evidence = "interrupted: the check's fault is removed; the return to the tunnel was not observed"
		return append(out, r)
	}
	// With another connection the traffic was encrypted all along: the
	// repair shows only once the repaired end sends on it again (its
	// peer's packets into it crossed the path during the fault too).
	other := otherConnection(gw, tun)
	var back []string
	deadline := time.Now().Add(RepairLimit)
	for {
		enc, v = observeEncryption(ctx, l)
		spis.learn(l, gw.Name, tun)
		back = spis.seen(v)
		if enc.Passed && (!other || len(back) > 0) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.Passed, r.Inconclusive, r.Duration = enc.Passed && (!other || len(back) > 0), enc.Inconclusive, time.Since(start)
	r.Evidence = fmt.Sprintf("encrypted again after %s: %s", r.Duration.Round(100*time.Millisecond), enc.Evidence)
	// Cut short (Ctrl-C), the row waited less than RepairLimit: it says
	// how long, and the control plane mid-repair is no diagnosis.
	within, state := "within "+RepairLimit.String(), ""
	if ctx.Err() != nil {
		within = "in the " + r.Duration.Round(100*time.Millisecond).String() + " before the interruption"
	} else if !enc.Passed || other && len(back) == 0 {
		state = repairState(l, gw, tun)
	}
	switch {
	case !enc.Passed:
		r.Evidence = fmt.Sprintf("not encrypted again %s: %s%s", within, enc.Evidence, state)
	case other && len(back) == 0:
		r.Evidence = fmt.Sprintf("%s carries nothing again %s: %s%s", tun.Name, within, enc.Evidence, state)
	case other:
		r.Evidence = fmt.Sprintf("%s carries again (SPI %s) after %s: %s", tun.Name, strings.Join(back, ", "), r.Duration.Round(100*time.Millisecond), enc.Evidence)
	}
	return append(out, cutShort(ctx, r))
}

// publishedRoutes are the routes method 1's manual step withdraws (every
// VPN gateway's in every VPC route table, as lab.SetPublishedRoutes), as
// the hold of the check of connection by (NODE:CONNECTION) records them.
func publishedRoutes(l Lab, by string) []fault.CheckRoute {
	var out []fault.CheckRoute
	for _, pr := range nodes.PublishedRoutes(l.Topology) {
		r := pr.Route
		out = append(out, fault.CheckRoute{Node: pr.VPC, Namespace: l.NS(pr.VPC), Dst: r.Dst, Via: r.Via, Dev: r.Dev, Metric: r.Metric, Gateway: pr.Gateway, By: by})
	}
	return out
}

// cutShort marks r inconclusive when ctx ended (Ctrl-C) before r was
// judged to pass: what the row waited for may simply not have had the time.
func cutShort(ctx context.Context, r Result) Result {
	if ctx.Err() == nil || r.Passed {
		return r
	}
	r.Inconclusive = true
	r.Evidence = "interrupted before it could be judged: " + r.Evidence
	return r
}

// judgeAutomatic judges the outage of an automatic failover. Traffic must
// resume by itself within FailoverLimit. With another connection to the same
// peer left, ECMP or the routing keeps it flowing: no outage when the
// probe's flow hashed onto the surviving connection, else until the broken
// one's route is withdrawn (the fallback step proves the fault took effect). With no
// other connection, the withdrawal takes at least a hold time or a health
// check: zero outage then means the fault did not bite.
func judgeAutomatic(res *probe.StreamResult, other bool) (bool, string) {
	evidence := "automatic failover: " + res.String()
	switch {
	case res.Trailing > 0:
		return false, "traffic did not resume by itself: " + evidence
	case res.Outage > FailoverLimit:
		return false, fmt.Sprintf("outage longer than %s: %s", FailoverLimit, evidence)
	case other && res.Outage == 0:
		return true, "another connection carried the traffic, no probe lost (the probe's flow hashed onto it), " + evidence
	case other:
		// One flow hashes onto one connection: onto the broken one, it
		// waits for its route to go (BGP's hold time, a health check).
		return true, "another connection carried the traffic once the broken one's route was withdrawn (the probe's flow had hashed onto the broken one), " + evidence
	case res.Outage == 0:
		return false, "no outage although the only connection broke, so the fault did not take effect: " + evidence
	}
	return true, evidence
}

// streamAround runs a probe stream for window, doing action one second in.
func streamAround(ctx context.Context, src string, dst netip.Addr, window time.Duration, action func() error) (*probe.StreamResult, error) {
	sctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		time.Sleep(time.Second)
		errc <- action()
	}()
	res, err := probe.Stream(sctx, src, dst, 10*time.Millisecond)
	if aerr := <-errc; aerr != nil {
		return nil, aerr
	}
	return res, err
}

// FailoverConnection is the connection Failover breaks: the first of the
// first on-premises gateway with one; nil without.
func FailoverConnection(t *topology.Topology) (*topology.Node, *topology.Tunnel) {
	for _, n := range t.Nodes {
		if n.Roles.CustomerEdge && len(n.Tunnels) > 0 {
			return n, n.Tunnels[0]
		}
	}
	return nil, nil
}

// automatic reports whether the lab withdraws a broken tunnel's routes by
// itself: BGP on the VPN gateway (methods 2, 3), or its health check with
// revoke_route.
func automatic(t *topology.Topology, tun *topology.Tunnel) bool {
	peer := t.Node(tun.Peer.Node)
	if peer == nil {
		return false
	}
	if peer.BGP != nil {
		return true
	}
	for _, pt := range peer.Tunnels {
		if pt.Interface == tun.Peer.Interface && pt.HealthCheck != nil && pt.HealthCheck.Policy == topology.RevokeRoute {
			return true
		}
	}
	return false
}

// connSPIs is the set of outbound SPIs of a connection's local end (the
// faulted end): from the lab's keys (manual keying), and for IKE-keyed
// connections from the live SAs the agents report (what `emu ipsec` shows),
// which IKE negotiates at runtime and replaces at each rekey. Only that
// end's sending tells whether the fault holds and whether the repair took:
// its peer sends into the connection all along (data until its routes go,
// BGP reconnects after), and those packets cross the private path whether
// or not the faulted end drops them on arrival.
type connSPIs map[uint32]bool

// learn adds the connection's outbound SPIs known now. The agent's state
// lives in l.Dir; a connection whose local end is not emu's (External) is
// read from its peer's inbound SA. A state that cannot be read adds nothing.
func (s connSPIs) learn(l Lab, gw string, tun *topology.Tunnel) {
	for _, c := range l.Conns {
		if c.Name == tun.Name && c.Local == tun.Local && c.Out.SPI != 0 {
			s[c.Out.SPI] = true
		}
	}
	if tun.IKE == nil || l.Dir == "" {
		return
	}
	node, conn, inbound := gw, tun.Name, false
	if tun.External() {
		node, conn, inbound = tun.Peer.Node, tun.Peer.Interface, true
		if n := l.Topology.Node(node); n != nil {
			if pt := n.Tunnel(tun.Peer.Interface); pt != nil {
				conn = pt.Name
			}
		}
	}
	st, err := agent.ReadState(filepath.Join(l.Dir, "agents", node+".json"))
	if err != nil {
		return
	}
	s.addLive(st, conn, inbound)
}

// addLive adds the SPIs of connection conn in an agent's state: its IKE
// CHILD SA and its dataplane's current SA, outbound (or inbound, for the
// peer of an end emu does not run). Zero (no SA yet) is not an SPI.
func (s connSPIs) addLive(st *agent.State, conn string, inbound bool) {
	add := func(out, in uint32) {
		spi := out
		if inbound {
			spi = in
		}
		if spi != 0 {
			s[spi] = true
		}
	}
	for _, i := range st.IKE {
		if i.Name == conn {
			add(i.OutSPI, i.InSPI)
		}
	}
	for _, t := range st.Tunnels {
		if t.Name == conn {
			add(t.OutSPI, t.InSPI)
		}
	}
}

// seen lists, sorted, the SPIs of s that the capture behind v saw.
func (s connSPIs) seen(v *verdict) []string {
	if v == nil {
		return nil
	}
	var spis []uint32
	for spi := range s {
		if v.spis[spi] {
			spis = append(spis, spi)
		}
	}
	slices.Sort(spis)
	out := make([]string, len(spis))
	for i, spi := range spis {
		out[i] = fmt.Sprintf("0x%08x", spi)
	}
	return out
}

func otherConnection(gw *topology.Node, tun *topology.Tunnel) bool {
	for _, t := range gw.Tunnels {
		if t != tun && t.Peer.Node == tun.Peer.Node {
			return true
		}
	}
	return false
}

// repairState says, for a repair not seen in time, what the control plane
// of connection tun of gw looked like then: its IKE SA when IKE keys it,
// and the BGP sessions and routes of gw and of the tunnel's peer, as the
// bgp check shows them; "" with no agent state to read (a lab without
// BGP or IKE, or a test without a lab directory).
func repairState(l Lab, gw *topology.Node, tun *topology.Tunnel) string {
	if l.Dir == "" {
		return ""
	}
	var out []string
	if tun.IKE != nil {
		_, what := ikeDown(l, gw.Name, tun)
		out = append(out, what)
	}
	for _, r := range bgpOnce(l) {
		if r.Check == "bgp "+gw.Name || r.Check == "bgp "+tun.Peer.Node {
			out = append(out, r.Check+": "+r.Evidence)
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; then " + strings.Join(out, "; ")
}

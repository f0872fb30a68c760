package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/monitor"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// RecoverTimeout bounds how long a repair waits for the lab to recover:
// the deploy's convergence bound (an IKE exchange's retransmissions, BGP's
// connect-retry and hold timers, a DPD probe interval are each well inside).
const RecoverTimeout = ConvergeTimeout

// Recovery is what a lab still lacks after a repair, read from its agents
// and namespaces: one line per connection, session, prefix or route, as
// "vpngw: neighbor 169.254.10.1 is active". Empty when recovered.
type Recovery []string

// Recovered reads, once, what the agents of the lab in labDir run and
// report, and lists what is not back: each IKE-keyed connection's CHILD SA
// (phase 2) established, each BGP session Established with every prefix
// its peer originates installed, and every route a DPD or health-check
// monitor withdraws while its tunnel is down present in its namespace.
// Those are what `emu check` judges, so a check after the recovery does
// not catch the lab half-way. An agent without a current state is listed
// as not back (its error names its health and log).
func Recovered(t *topology.Topology, labDir string) (Recovery, error) {
	var out Recovery
	for _, n := range t.Nodes {
		cfgPath := agentConfigPath(labDir, n.Name)
		data, err := os.ReadFile(cfgPath)
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
				out = append(out, err.Error())
			} else {
				out = append(out, ikeNotBack(n.Name, cfg, st)...)
				out = append(out, bgpNotBack(t, n.Name, cfg, st)...)
			}
		}
		for _, m := range cfg.Monitors {
			for _, r := range m.Withdraw {
				present, err := routePresent(r)
				if err != nil {
					return nil, err
				}
				if !present {
					out = append(out, fmt.Sprintf("%s: %s not back yet: route %s", n.Name, m.Connection, r))
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

func ikeNotBack(node string, cfg agent.Config, st *agent.State) []string {
	var want []string
	for _, c := range cfg.Tunnels {
		if c.IKE != nil {
			want = append(want, c.Name)
		}
	}
	for _, x := range cfg.XFRM {
		want = append(want, x.Conn.Name)
	}
	var out []string
	for _, name := range want {
		i := slices.IndexFunc(st.IKE, func(s ike.Status) bool { return s.Name == name })
		switch {
		case i < 0:
			out = append(out, fmt.Sprintf("%s: connection %s reports no IKE state", node, name))
		case st.IKE[i].Phase2 != ike.StateEstablished:
			out = append(out, fmt.Sprintf("%s: connection %s phase 1 %s, phase 2 %s", node, name, st.IKE[i].Phase1, st.IKE[i].Phase2))
		}
	}
	return out
}

func bgpNotBack(t *topology.Topology, node string, cfg agent.Config, st *agent.State) []string {
	if cfg.BGP == nil {
		return nil
	}
	var out []string
	for _, nb := range st.Neighbors {
		if !nb.Established {
			out = append(out, fmt.Sprintf("%s: neighbor %s is %s", node, nb.Address, nb.State))
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
				out = append(out, fmt.Sprintf("%s: %s (from %s) not installed yet", node, p, peer.Name))
			}
		}
	}
	return out
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

// AwaitRecovery polls Recovered until nothing is missing, timeout passes
// (it returns what is still missing, and no error) or ctx ends (ctx's
// error). progress, if set, gets what is missing each time that changes,
// so a user sees the wait move.
func AwaitRecovery(ctx context.Context, t *topology.Topology, labDir string, timeout time.Duration, progress func(Recovery)) (Recovery, error) {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		missing, err := Recovered(t, labDir)
		if err != nil {
			return nil, err
		}
		if now := strings.Join(missing, "\n"); now != last && progress != nil {
			progress(missing)
			last = now
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing, nil
		}
		select {
		case <-ctx.Done():
			return missing, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

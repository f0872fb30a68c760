package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

func faultCommand() *cli.Command {
	return &cli.Command{
		Name:  "fault",
		Usage: "break or repair a tunnel or a link of a running lab",
		UsageText: `emu fault tunnel down|up -t FILE CONNECTION     (CONNECTION: name, or NODE:name)
emu fault link down|up -t FILE NODE:IF
emu fault list -t FILE
(up also takes --no-wait)`,
		Description: `"tunnel down" drops every packet of the tunnel between the connection's two endpoints,
both ways: ESP, ESP in UDP/4500 and IKE (UDP 500 and 4500), with an nftables table
(emu-fault-<connection>) in the namespace of the node that declares it: the tunnel stays
configured but nothing crosses it, as when the private line or the peer fails, so an
IKE-keyed tunnel's DPD declares the peer dead. "tunnel up" removes that table on that node only (the other end's connection has
its own): it says whether there was one, and lists the faults still in the lab. "link
down" sets an interface down, so its veth peer loses carrier; "link up" brings it back
with its routes, and lists the faults left too. When no fault is left, "up" waits (at most
20 s, progress on stderr, Ctrl-C stops the wait) until what the fault broke is back: every
IKE-keyed connection's CHILD SA, every BGP session Established, heard from its peer since
the repair (one that lost keepalives for less than its hold time may still drop) and with its
peer's prefixes installed, every route DPD or a health check withdrew; a check run next judges a recovered
lab. --no-wait skips that. Not recovered in time: exit 1, naming what is missing. All are
idempotent.
"emu check --failover" breaks its connection with a table of its own (emu-check-<connection>)
and holds it while it runs (a lock in the lab directory the kernel drops when the check's
process ends, however it ends). A check killed (SIGKILL, a CI runner's timeout) leaves that
table and the tunnel broken: "list" shows it "left by an emu check --failover that did not
finish", and "tunnel up" on that connection removes it too and says so. A method-1 check
records the VPN gateway's routes in its lock file before it withdraws them: killed after
that step, it left them withdrawn, and "list" shows each still withdrawn as a route fault on
the vpc node, which "tunnel up" on the check's connection restores (and says so). A fault a
running check holds is listed with the check's pid and never removed ("tunnel up" says it
kept it): stop that check with kill -INT, never -9. "list" prints every fault in force, one
a line, with the command that removes it.
` + connectionNames + `

Examples:
   emu fault tunnel down -t topologies/static.yaml to-vpc
   emu fault list -t topologies/static.yaml
   emu fault tunnel up -t topologies/static.yaml to-vpc
   emu fault link down -t topologies/static-bgp.yaml vbr:eth1`,
		Subcommands: []*cli.Command{
			{
				Name:      "tunnel",
				Usage:     "drop (down) or pass (up) the ESP and IKE of one connection",
				UsageText: "emu fault tunnel down|up -t FILE CONNECTION     (up also takes --no-wait)",
				Description: connectionNames + `

Examples:
   emu fault tunnel down -t topologies/static.yaml to-vpc
   emu fault tunnel up -t topologies/static.yaml to-vpc
   emu fault tunnel down -t topologies/transit-router.yaml onprem:to-vpc-1`,
				Subcommands: []*cli.Command{tunnelFault("down"), tunnelFault("up")},
			},
			{
				Name:      "link",
				Usage:     "set an interface down or up",
				UsageText: "emu fault link down|up -t FILE NODE:IF     (up also takes --no-wait)",
				Description: `NODE:IF is a node of the topology and one of its interfaces (its links: endpoints);
a wrong one is refused with the interfaces the node has.

Examples:
   emu fault link down -t topologies/static-bgp.yaml vbr:eth1
   emu fault link up -t topologies/static-bgp.yaml vbr:eth1`,
				Subcommands: []*cli.Command{linkFault("down"), linkFault("up")},
			},
			listFaults(),
		},
	}
}

func tunnelFault(dir string) *cli.Command {
	usage := "drop every ESP, ESP-in-UDP and IKE packet of the connection, both ways"
	if dir == "up" {
		usage = "remove that fault from the connection's node, then wait until the lab has recovered"
	}
	return &cli.Command{
		Name:      dir,
		Usage:     usage,
		ArgsUsage: "CONNECTION",
		UsageText: "emu fault tunnel " + dir + " -t FILE CONNECTION" + waitUsage(dir),
		Description: connectionNames + `

Examples:
   emu fault tunnel ` + dir + ` -t topologies/static.yaml to-vpc
   emu fault tunnel ` + dir + ` -t topologies/static-bgp.yaml vpngw:to-dc` + map[string]string{"down": `
   emu fault tunnel down -t topologies/transit-router.yaml to-vpc-1`, "up": `
   emu fault tunnel up -t topologies/static-bgp.yaml to-vpc --no-wait`}[dir],
		Flags: faultFlags(dir),
		Action: func(c *cli.Context) error {
			finishDespiteClosedOutput()
			t, rec, err := deployedTopology(c)
			if err != nil {
				return err
			}
			node, tun, err := findTunnel(t, c.Args().First())
			if err != nil {
				return err
			}
			ns := plan.NamespaceName(t.Name, node.Name)
			if !wiring.NamespaceExists(ns) {
				return fmt.Errorf("lab %q is not deployed (no namespace %s): run `emu deploy -t %s` first", t.Name, ns, c.String("topo"))
			}
			what := fmt.Sprintf("tunnel %s:%s (%s ↔ %s)", node.Name, tun.Name, tun.Local, tun.Remote)
			if dir == "down" {
				already, err := fault.TunnelBroken(ns, tun.Name)
				if err != nil {
					return err
				}
				if err := fault.TunnelDown(ns, tun.Name, tun.Local, tun.Remote); err != nil {
					return err
				}
				if already {
					fmt.Fprintf(c.App.Writer, "%s was broken already: ESP and IKE dropped both ways on %s\n", what, node.Name)
					return nil
				}
				fmt.Fprintf(c.App.Writer, "%s is broken: ESP and IKE dropped both ways on %s\n", what, node.Name)
				return nil
			}
			// The other end may hold a fault of its own (its connection
			// to this one): say what this command removed and what is
			// left, never "repaired" while the lab still drops ESP.
			broken, err := fault.TunnelBroken(ns, tun.Name)
			if err != nil {
				return err
			}
			repaired := time.Now()
			if err := fault.TunnelUp(ns, tun.Name); err != nil {
				return err
			}
			// A check's fault its check no longer holds is left over (the
			// check was killed): emu's own, and in the user's way. One a
			// running check holds stays: that check removes it.
			left, err := fault.RemoveLeftCheck(rec.Dir, ns, tun.Name)
			var held *fault.HeldError
			if errors.As(err, &held) {
				err = nil
			}
			if err != nil {
				printRestored(c.App.Writer, what, left.Routes)
				return err
			}
			switch {
			case broken && left.Table:
				fmt.Fprintf(c.App.Writer, "%s: removed its fault on %s, and the fault an `emu check --failover` that did not finish left there (nftables table %s%s)\n", what, node.Name, fault.ByCheck, tun.Name)
			case left.Table:
				fmt.Fprintf(c.App.Writer, "%s: removed the fault an `emu check --failover` that did not finish left on %s (nftables table %s%s)\n", what, node.Name, fault.ByCheck, tun.Name)
			case broken:
				fmt.Fprintf(c.App.Writer, "%s: removed its fault on %s\n", what, node.Name)
			case held == nil && !left.Any():
				fmt.Fprintf(c.App.Writer, "%s: no fault on %s, nothing removed\n", what, node.Name)
			}
			printRestored(c.App.Writer, what, left.Routes)
			if held != nil {
				fmt.Fprintf(c.App.Writer, "%s: kept the fault of the `emu check --failover` running now on %s (%s): it removes it when it ends\n", what, node.Name, held.Holder())
			}
			return reportAndAwait(c, t, rec.Dir, broken || left.Any(), repaired)
		},
	}
}

// connectionNames says where CONNECTION comes from, for every tunnel
// command's help.
const connectionNames = `CONNECTION is the name of an IPsec connection in the topology (an ipsec: entry's name:
to-vpc on onprem and to-dc on vpngw in the shipped topologies); write NODE:name when
two nodes use the same name. A name the lab does not have is refused with the list of
its connections.`

// printRestored says which routes a killed `emu check --failover` of the
// connection what had withdrawn were put back.
func printRestored(w io.Writer, what string, routes []fault.CheckRoute) {
	for _, r := range routes {
		fmt.Fprintf(w, "%s: restored route %s on %s (published by %s), which an `emu check --failover` that did not finish withdrew\n", what, r, r.Node, r.Gateway)
	}
}

func waitUsage(dir string) string {
	if dir == "down" {
		return ""
	}
	return " [--no-wait]"
}

// faultFlags are a fault command's flags: a repair may skip its wait.
func faultFlags(dir string) []cli.Flag {
	if dir == "down" {
		return []cli.Flag{topoFlag}
	}
	return []cli.Flag{topoFlag, &cli.BoolFlag{Name: "no-wait", Usage: "return once the fault is removed, without waiting for the lab to recover"}}
}

// reportAndAwait says which faults are left after a repair and, when none
// is, waits for the lab to recover (awaitRecovered). With faults left the
// lab cannot recover, so it does not wait; nor with --no-wait; nor when the
// repair removed nothing (removed false), which changed nothing to recover
// from, on every lab alike. repaired is when the repair began.
func reportAndAwait(c *cli.Context, t *topology.Topology, labDir string, removed bool, repaired time.Time) error {
	left, err := reportFaults(c.App.Writer, t, labDir, c.String("topo"))
	if err != nil || left > 0 || c.Bool("no-wait") {
		return err
	}
	if !removed {
		fmt.Fprintf(c.App.Writer, "lab %q: nothing removed; nothing to wait for\n", t.Name)
		return nil
	}
	return awaitRecovered(c, c.App.Writer, t, labDir, repaired)
}

// awaitRecovered waits (up to lab.RecoverTimeout, with progress on stderr,
// until Ctrl-C) for what a fault broke to come back: IKE, BGP sessions
// (each heard from its peer since the repair) and their routes, the routes
// DPD and health checks withdrew, and says on w how long it took. A check
// run right after then judges a recovered lab, not one half-way.
func awaitRecovered(c *cli.Context, w io.Writer, t *topology.Topology, labDir string, repaired time.Time) error {
	start := time.Now()
	// What came back is counted by lab.AwaitRecovery: everything seen
	// missing while waiting (a BGP prefix may go missing only after its
	// session returned) and the sessions up since the repair, each object
	// once; not the sessions only waited for until they heard their peer.
	missing, waited, err := lab.AwaitRecovery(c.Context, t, labDir, repaired, lab.RecoverTimeout, func(m lab.Recovery) {
		if len(m) > 0 {
			fmt.Fprintf(c.App.ErrWriter, "waiting for the lab to recover (%s): %s\n", time.Since(start).Round(100*time.Millisecond), m)
		}
	})
	elapsed := time.Since(start).Round(100 * time.Millisecond)
	switch {
	case err != nil && c.Context.Err() != nil:
		return fmt.Errorf("interrupted after %s while waiting for lab %q to recover (the fault is removed; still missing: %s)", elapsed, t.Name, missing)
	case err != nil:
		return err
	case len(missing) > 0:
		return fmt.Errorf("lab %q did not recover within %s: %s (see the agents' logs in %s)", t.Name, lab.RecoverTimeout, missing, filepath.Join(labDir, "logs"))
	}
	if len(waited) == 0 {
		fmt.Fprintf(w, "lab %q: nothing to wait for, its IKE SAs, BGP sessions and monitored routes are up\n", t.Name)
		return nil
	}
	if waited.Count() == "" { // only keepalives awaited (lab.MissingKeepalive)
		fmt.Fprintf(w, "lab %q recovered in %s: nothing had gone down, and its BGP sessions heard from their peers since the repair\n", t.Name, elapsed)
		return nil
	}
	fmt.Fprintf(w, "lab %q recovered in %s: %s came back\n", t.Name, elapsed, waited.Count())
	return nil
}

// labFault is one fault in force in a running lab: what it broke, on which
// node; emu fault's, or an emu check --failover's (running, or left over
// by one that did not finish).
type labFault struct {
	node string
	fault.Fault
}

// String is "tunnel NODE:CONN (ESP dropped)" or "link NODE:IF (down)"; a
// check's fault says whose it is.
func (f labFault) String() string {
	return fmt.Sprintf("%s %s:%s (%s)", f.Kind, f.node, f.Name, f.Effect())
}

// repair says how to remove the fault from the lab deployed from file:
// `emu fault tunnel up -t FILE NODE:CONN` or `emu fault link up ...`
// (which removes a check's left-over fault too; a route a check withdrew
// comes back with `emu fault tunnel up` on that check's connection); a
// running check's fault goes when that check ends.
func (f labFault) repair(file string) string {
	switch {
	case f.Check && f.Held:
		// From another shell there is no Ctrl-C to press.
		pid := "<pid>"
		if f.HeldBy > 0 {
			pid = fmt.Sprint(f.HeldBy)
		}
		return fmt.Sprintf("wait for that check to end, or stop it: `kill -INT %s` (not -9: a killed check leaves its fault)", pid)
	case f.Kind == "route":
		// Restored with the rest of what that check left, from its record.
		return fmt.Sprintf("`emu fault tunnel up -t %s %s`", file, f.By)
	}
	return fmt.Sprintf("`emu fault %s up -t %s %s:%s`", f.Kind, file, f.node, f.Name)
}

// activeFaults lists the faults in force in the running lab t whose
// directory is labDir, node by node in order (inspect reads the same).
func activeFaults(t *topology.Topology, labDir string) ([]labFault, error) {
	var out []labFault
	for _, n := range t.Nodes {
		active, err := fault.Active(plan.NamespaceName(t.Name, n.Name), labDir)
		if err != nil {
			return nil, err
		}
		for _, f := range active {
			out = append(out, labFault{n.Name, f})
		}
	}
	return out, nil
}

func faultList(fs []labFault) string {
	var s []string
	for _, f := range fs {
		s = append(s, f.String())
	}
	return strings.Join(s, ", ")
}

// repairs lists how to remove each fault, for the lab deployed from file,
// each command once (one removes all a killed check left).
func repairs(fs []labFault, file string) string {
	var s []string
	for _, f := range fs {
		if r := f.repair(file); !slices.Contains(s, r) {
			s = append(s, r)
		}
	}
	return strings.Join(s, ", ")
}

// reportFaults says which faults are left in the lab deployed from file
// after a repair, and how to remove each; it returns how many.
func reportFaults(w io.Writer, t *topology.Topology, labDir, file string) (int, error) {
	left, err := activeFaults(t, labDir)
	if err != nil {
		return 0, err
	}
	if len(left) == 0 {
		fmt.Fprintf(w, "no fault left in lab %q\n", t.Name)
		return 0, nil
	}
	fmt.Fprintf(w, "faults still in lab %q: %s (repair: %s; not waiting for the lab to recover)\n", t.Name, faultList(left), repairs(left, file))
	return len(left), nil
}

// listFaults is `emu fault list`: every fault in force in the lab, one a
// line, with how to remove it.
func listFaults() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list the faults in force: emu fault's, and an emu check --failover's (running, or left by one that did not finish)",
		UsageText: "emu fault list -t FILE",
		Description: `Examples:
   emu fault list -t topologies/static.yaml
   emu fault list -t topologies/static-bgp.yaml`,
		Flags: []cli.Flag{topoFlag},
		Action: func(c *cli.Context) error {
			finishDespiteClosedOutput()
			t, rec, err := deployedTopology(c)
			if err != nil {
				return err
			}
			fs, err := activeFaults(t, rec.Dir)
			if err != nil {
				return err
			}
			if len(fs) == 0 {
				fmt.Fprintf(c.App.Writer, "no fault in lab %q\n", t.Name)
			}
			for _, f := range fs {
				how := f.repair(c.String("topo"))
				switch {
				case f.Check && f.Held: // how says to wait for that check
				case f.Kind == "route":
					how = "restore with " + how
				default:
					how = "remove with " + how
				}
				fmt.Fprintf(c.App.Writer, "%s: %s\n", f, how)
			}
			return nil
		},
	}
}

// findTunnel resolves "name" or "node:name" to one connection.
func findTunnel(t *topology.Topology, arg string) (*topology.Node, *topology.Tunnel, error) {
	if arg == "" {
		return nil, nil, invalidInput{fmt.Errorf("name the connection: %s", tunnelNames(t))}
	}
	nodeName, connName, scoped := strings.Cut(arg, ":")
	if !scoped {
		connName, nodeName = arg, ""
	}
	var found []*topology.Node
	var tun *topology.Tunnel
	for _, n := range t.Nodes {
		for _, tt := range n.Tunnels {
			if tt.Name == connName && (nodeName == "" || n.Name == nodeName) {
				found = append(found, n)
				tun = tt
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], tun, nil
	case 0:
		return nil, nil, invalidInput{fmt.Errorf("no IPsec connection %q in lab %q (%s)", arg, t.Name, tunnelNames(t))}
	}
	return nil, nil, invalidInput{fmt.Errorf("connection name %q is used on several nodes: write NODE:%s", connName, connName)}
}

func tunnelNames(t *topology.Topology) string {
	var names []string
	for _, n := range t.Nodes {
		for _, tt := range n.Tunnels {
			names = append(names, n.Name+":"+tt.Name)
		}
	}
	if len(names) == 0 {
		return "the lab has none"
	}
	return "connections: " + strings.Join(names, ", ")
}

func linkFault(dir string) *cli.Command {
	usage := "set the interface down: its veth peer loses carrier, as a cut cable"
	if dir == "up" {
		usage = "set the interface up and put back its routes, then wait until the lab has recovered"
	}
	return &cli.Command{
		Name:      dir,
		Usage:     usage,
		ArgsUsage: "NODE:IF",
		UsageText: "emu fault link " + dir + " -t FILE NODE:IF" + waitUsage(dir),
		Description: `NODE:IF is a node of the topology and one of its interfaces (its links: endpoints);
a wrong one is refused with the interfaces the node has.

Examples:
   emu fault link ` + dir + ` -t topologies/static.yaml vbr:eth1
   emu fault link ` + dir + ` -t topologies/static-bgp.yaml cen:eth2`,
		Flags: faultFlags(dir),
		Action: func(c *cli.Context) error {
			finishDespiteClosedOutput()
			t, rec, err := deployedTopology(c)
			if err != nil {
				return err
			}
			node, ifname, err := nodeInterface(c.Args().First())
			if err != nil {
				return err
			}
			ns, err := nodeNamespaceInterface(t.Name, node, ifname)
			if err != nil {
				return err
			}
			if dir == "down" {
				if err := fault.LinkDown(ns, ifname); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "link %s:%s is down\n", node, ifname)
				return nil
			}
			wasDown, err := linkDown(ns, rec.Dir, ifname)
			if err != nil {
				return err
			}
			repaired := time.Now()
			if err := fault.LinkUp(ns, ifname); err != nil {
				return err
			}
			if err := reapplyRoutes(t, node); err != nil {
				return err
			}
			if wasDown {
				fmt.Fprintf(c.App.Writer, "link %s:%s is up\n", node, ifname)
			} else {
				fmt.Fprintf(c.App.Writer, "link %s:%s was up already, nothing removed\n", node, ifname)
			}
			return reportAndAwait(c, t, rec.Dir, wasDown, repaired)
		},
	}
}

// linkDown reports whether ifname in ns is down (a link fault in force).
func linkDown(ns, labDir, ifname string) (bool, error) {
	active, err := fault.Active(ns, labDir)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(active, func(f fault.Fault) bool { return f.Kind == "link" && f.Name == ifname }), nil
}

// reapplyRoutes puts back the static routes the kernel deleted when the
// interface went down, on the node and on its neighbour across the link
// (whose routes through the link lost carrier too).
func reapplyRoutes(t *topology.Topology, node string) error {
	routes := plan.RoutesOf(t, t.Node(node))
	for _, l := range t.Links {
		for i, e := range l.Ends {
			if e.Node == node {
				routes = append(routes, plan.RoutesOf(t, t.Node(l.Ends[1-i].Node))...)
			}
		}
	}
	return lab.ReapplyRoutes(routes)
}

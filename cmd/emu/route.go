package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/wiring"
)

func routeCommand() *cli.Command {
	return &cli.Command{
		Name:  "route",
		Usage: "show routes and BGP sessions; withdraw or restore the VPN gateway's routes in the VPC (method 1's manual step)",
		UsageText: `emu route withdraw -t FILE
emu route restore -t FILE
emu route show -t FILE [NODE...]`,
		Description: `In method 1 (static routes) a broken tunnel stops traffic until the operator withdraws
the routes the VPN gateway published into the VPC route table; the VPC then reaches the
data center over the CEN and Express Connect, unencrypted. "withdraw" removes those
routes (every static route of a vpc node whose next hop is a vpn-gateway), "restore"
puts them back. Both are idempotent. "show" prints each node's kernel routes (with
where each came from: kernel, static, bgp) and its BGP sessions.

Examples:
   emu route withdraw -t topologies/static.yaml     # method 1: fall back over the CEN, in clear
   emu route restore -t topologies/static.yaml
   emu route show -t topologies/static-bgp.yaml vpngw onprem`,
		Subcommands: []*cli.Command{
			routeAction("withdraw", "remove the VPN gateway's routes from the VPC route tables", false),
			routeAction("restore", "put the VPN gateway's routes back", true),
			routeShow(),
		},
	}
}

func routeAction(name, usage string, add bool) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		UsageText: "emu route " + name + " -t FILE",
		Description: `Every static route of a vpc node whose next hop is a vpn-gateway (method 1's
published routes) is ` + map[bool]string{true: "put back", false: "removed"}[add] + `; idempotent, and each route says whether it changed.

Examples:
   emu route ` + name + ` -t topologies/static.yaml
   emu route ` + name + ` -t topologies/static-healthcheck.yaml`,
		Flags: []cli.Flag{topoFlag},
		Action: func(c *cli.Context) error {
			t, _, err := deployedTopology(c)
			if err != nil {
				return err
			}
			routes, err := lab.SetPublishedRoutes(t, add)
			if err != nil {
				return err
			}
			if len(routes) == 0 {
				return invalidInput{fmt.Errorf("lab %q has no VPC route pointing to a VPN gateway: nothing to %s", t.Name, name)}
			}
			for _, pr := range routes {
				did := map[bool]string{true: "restored", false: "withdrew"}[add]
				if !pr.Changed {
					did = map[bool]string{true: "already restored:", false: "already withdrawn:"}[add]
				}
				fmt.Fprintf(c.App.Writer, "%s: %s route %s via %s (published by %s)\n", pr.VPC, did, pr.Route.Dst, pr.Route.Via, pr.Gateway)
			}
			return nil
		},
	}
}

func routeShow() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "each node's routes and BGP sessions, live",
		ArgsUsage: "[NODE...]",
		UsageText: "emu route show -t FILE [NODE...]",
		Description: `Prints the kernel routes of each NODE (default: every node of the topology), with
where each came from (kernel, static, bgp), and its BGP sessions. NODE is a node name
of the topology.

Examples:
   emu route show -t topologies/static.yaml
   emu route show -t topologies/bgp.yaml onprem vpngw`,
		Flags: []cli.Flag{topoFlag},
		Action: func(c *cli.Context) error {
			t, rec, err := deployedTopology(c)
			if err != nil {
				return err
			}
			want := c.Args().Slice()
			tw := tablewriter.NewWriter(c.App.Writer)
			tw.Header("Node", "Destination", "Via", "Dev", "From", "Metric")
			var sessions [][]string
			for _, n := range t.Nodes {
				if len(want) > 0 && !slices.Contains(want, n.Name) {
					continue
				}
				routes, err := wiring.Routes(plan.NamespaceName(t.Name, n.Name))
				if err != nil {
					return err
				}
				for _, r := range routes {
					tw.Append(n.Name, r.Dst, strings.Join(r.Via, "\n"), strings.Join(r.Dev, "\n"), r.Protocol, fmt.Sprint(r.Metric))
				}
				if n.BGP == nil {
					continue
				}
				st, err := agent.ReadState(filepath.Join(rec.Dir, "agents", n.Name+".json"))
				if err != nil {
					sessions = append(sessions, []string{n.Name, "-", "-", "no state: " + err.Error(), "", ""})
					continue
				}
				for _, nb := range st.Neighbors {
					sessions = append(sessions, []string{n.Name, nb.Address.String(), fmt.Sprintf("AS%d", nb.PeerASN), nb.State, fmt.Sprint(nb.Accepted), fmt.Sprint(nb.Advertised)})
				}
			}
			if err := tw.Render(); err != nil {
				return err
			}
			if len(sessions) == 0 {
				return nil
			}
			bw := tablewriter.NewWriter(c.App.Writer)
			bw.Header("Node", "BGP neighbor", "AS", "State", "Accepted", "Advertised")
			for _, s := range sessions {
				bw.Append(s)
			}
			return bw.Render()
		},
	}
}

package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/wiring"
	"github.com/emu-lab/emu/nodes"
)

func routeCommand() *cli.Command {
	return &cli.Command{
		Name:  "route",
		Usage: "withdraw or restore the routes the VPN gateway published into the VPC (method 1's manual step)",
		UsageText: `emu route withdraw -t FILE
emu route restore -t FILE`,
		Description: `In method 1 (static routes) a broken tunnel stops traffic until the operator withdraws
the routes the VPN gateway published into the VPC route table; the VPC then reaches the
data center over the CEN and Express Connect, unencrypted. "withdraw" removes those
routes (every static route of a vpc node whose next hop is a vpn-gateway), "restore"
puts them back. Both are idempotent.`,
		Subcommands: []*cli.Command{
			routeAction("withdraw", "remove the VPN gateway's routes from the VPC route tables", false),
			routeAction("restore", "put the VPN gateway's routes back", true),
		},
	}
}

func routeAction(name, usage string, add bool) *cli.Command {
	return &cli.Command{
		Name:  name,
		Usage: usage,
		Flags: []cli.Flag{topoFlag},
		Action: func(c *cli.Context) error {
			if err := requireRoot(); err != nil {
				return err
			}
			t, err := loadTopology(c)
			if err != nil {
				return err
			}
			routes := nodes.PublishedRoutes(t)
			if len(routes) == 0 {
				return invalidInput{fmt.Errorf("lab %q has no VPC route pointing to a VPN gateway: nothing to %s", t.Name, name)}
			}
			w := wiring.New()
			defer w.Close()
			for _, pr := range routes {
				ns := plan.NamespaceName(t.Name, pr.VPC)
				r := pr.Route
				if add {
					err = w.AddRoute(ns, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
					if errors.Is(err, wiring.ErrRouteExists) {
						err = nil
					}
				} else {
					err = w.DeleteRoute(ns, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
					if errors.Is(err, wiring.ErrNoRoute) {
						err = nil
					}
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.ErrWriter, "%s: %s route %s via %s (published by %s)\n", pr.VPC, map[bool]string{true: "restored", false: "withdrew"}[add], r.Dst, r.Via, pr.Gateway)
			}
			return nil
		},
	}
}

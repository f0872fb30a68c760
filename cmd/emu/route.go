package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/lab"
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
			t, err := rootTopology(c)
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
				fmt.Fprintf(c.App.ErrWriter, "%s: %s route %s via %s (published by %s)\n", pr.VPC, map[bool]string{true: "restored", false: "withdrew"}[add], pr.Route.Dst, pr.Route.Via, pr.Gateway)
			}
			return nil
		},
	}
}

package main

import (
	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/software"
)

// agentCommand is what deploy starts inside a node's namespace; users never
// call it.
func agentCommand() *cli.Command {
	return &cli.Command{
		Name:   "agent",
		Hidden: true,
		Usage:  "node agent (started by deploy inside a node's namespace)",
		Flags:  []cli.Flag{&cli.StringFlag{Name: "config", Required: true}},
		Action: func(c *cli.Context) error {
			return agent.Run(c.String("config"))
		},
	}
}

// nodeCommand is the keeper of a node's software (mount namespace, daemons,
// exec commands), started by deploy; users never call it.
func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:   "node",
		Hidden: true,
		Usage:  "keeper of a node's software (started by deploy inside a node's namespaces)",
		Flags:  []cli.Flag{&cli.StringFlag{Name: "config", Required: true}},
		Action: func(c *cli.Context) error {
			return software.Run(c.String("config"))
		},
	}
}

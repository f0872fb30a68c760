package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/graph"
)

func graphCommand() *cli.Command {
	return &cli.Command{
		Name:      "graph",
		Usage:     "draw the topology: nodes by kind, links with addresses, tunnels as dashed edges",
		UsageText: "emu graph -t FILE [--dot | --mermaid | --svg FILE.svg]",
		Description: `Prints Graphviz DOT (the default) or a Mermaid flowchart (GitHub renders it in
Markdown). --svg renders the DOT with Graphviz's dot command, if installed
(apt-get install graphviz). Needs no deployed lab and no root.

Examples:
   emu graph -t topologies/static.yaml | dot -Tpng -o static.png
   emu graph -t topologies/transit-router.yaml --mermaid
   emu graph -t topologies/bgp.yaml --svg bgp.svg`,
		Flags: []cli.Flag{
			topoFlag,
			&cli.BoolFlag{Name: "dot", Usage: "Graphviz DOT (default)"},
			&cli.BoolFlag{Name: "mermaid", Usage: "Mermaid flowchart"},
			&cli.StringFlag{Name: "svg", Usage: "render to `FILE` with Graphviz"},
		},
		Action: func(c *cli.Context) error {
			var formats []string
			for _, f := range []string{"dot", "mermaid", "svg"} {
				if c.IsSet(f) {
					formats = append(formats, "--"+f)
				}
			}
			if len(formats) > 1 {
				return usageError{"emu graph", fmt.Errorf("%s: choose one", strings.Join(formats, " and "))}
			}
			t, err := loadTopology(c)
			if err != nil {
				return err
			}
			switch {
			case c.Bool("mermaid"):
				return graph.Mermaid(c.App.Writer, t)
			case c.String("svg") != "":
				dot, err := exec.LookPath("dot")
				if err != nil {
					return errors.New("--svg needs Graphviz's dot command: apt-get install graphviz (or use --dot and render elsewhere)")
				}
				var src bytes.Buffer
				if err := graph.DOT(&src, t); err != nil {
					return err
				}
				cmd := exec.Command(dot, "-Tsvg", "-o", c.String("svg"))
				cmd.Stdin, cmd.Stderr = &src, os.Stderr
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("graphviz: %w", err)
				}
				fmt.Fprintf(c.App.Writer, "wrote %s\n", c.String("svg"))
				return nil
			}
			return graph.DOT(c.App.Writer, t)
		},
	}
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/trace"
)

func traceCommand() *cli.Command {
	return &cli.Command{
		Name:      "trace",
		Usage:     "show the live walk of one probe through the lab, hop by hop, as the guide's table",
		UsageText: "emu trace -t FILE [--from NODE] [--to NODE] [-6] [--format table|json]",
		Description: `Captures on every interface of every node, sends one ICMP echo from --from to --to
(default: an end system on the data center's side of the IPsec connections and one on
the VPC's side, whatever their names or order; without IPsec the first two of kind host) and prints, in kernel-timestamp order, what
each node did with the request and the reply: sends, forwards, encrypts, decrypts,
receives, with the outer addresses and SPI on the wire and the inner addresses (ESP is
decrypted with the lab's keys, also ESP in UDP/4500 and with the keys IKE negotiated). With
the tunnel down it shows the fallback path; when the probe gets no reply (method 1 with the
tunnel down) it shows the walk up to where the probe itself was last seen, and exits non-zero;
an ICMP error quoting the probe (time exceeded, unreachable) is shown in a table of its own,
with its sender, type and code, and is never taken for the probe. A gateway
as --to shows "decrypts" where the ESP for it arrived.
With -6 the probe is an ICMPv6 echo to --to's first IPv6 address: in a dual-stack lab
(topologies/dual-stack.yaml) the walk shows IPv6 inside the IPv4 tunnel.
--from and --to take node names of the topology (client, ecs, vpngw in the shipped ones).

Examples:
   emu trace -t topologies/static.yaml
   emu trace -t topologies/static.yaml --from ecs --to client
   emu trace -t topologies/dual-stack.yaml -6
   emu trace -t topologies/static-bgp.yaml --to vpngw --format json`,
		Flags: []cli.Flag{
			topoFlag,
			&cli.StringFlag{Name: "from", Usage: "`NODE` that sends the probe"},
			&cli.StringFlag{Name: "to", Usage: "`NODE` the probe is for"},
			&cli.BoolFlag{Name: "ipv6", Aliases: []string{"6"}, Usage: "trace an ICMPv6 echo to the node's first IPv6 address"},
			formatFlag,
		},
		Action: func(c *cli.Context) error {
			t, rec, err := deployedTopology(c)
			if err != nil {
				return err
			}
			from, to := c.String("from"), c.String("to")
			if dc, cloud, ok := t.EndSystemPair(); ok {
				if from == "" {
					from = dc.Name
				}
				if to == "" {
					to = cloud.Name
				}
			}
			if from == "" || to == "" {
				return invalidInput{fmt.Errorf("trace: name --from and --to: lab %q has no end system (kind host) on each side of its IPsec connections to default to", t.Name)}
			}
			for flag, name := range map[string]string{"from": from, "to": to} {
				if t.Node(name) == nil {
					return invalidInput{fmt.Errorf("trace: --%s %s: no node %q in lab %q (nodes: %s)", flag, name, name, t.Name, strings.Join(t.NodeNames(), ", "))}
				}
			}
			// As check does: a walk through a faulted lab shows the fault's
			// effect (traffic in clear, or lost), and says it is one.
			if faults, err := activeFaults(t, rec.Dir); err != nil {
				return err
			} else if len(faults) > 0 {
				noteFaults(c, t, faults, "the walk shows")
			}
			conns, _ := lab.ReadConns(rec.Dir) // a lab without IPsec has none
			hops, err := trace.RunFamily(c.Context, t, conns, from, to, c.Bool("ipv6"))
			var lost *capture.LostFramesError
			if err != nil && !errors.As(err, &lost) && len(hops) == 0 {
				return err
			}
			// A probe that died still shows its walk up to where it died.
			if c.String("format") == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(hops); jerr != nil {
					return jerr
				}
			} else if perr := printHops(c.App.Writer, hops); perr != nil {
				return perr
			}
			return err // the walk shown may miss hops, or the probe died on its way
		},
	}
}

// printHops prints the probe's walk, then, in a table of their own, the
// walk of any ICMP error that quoted the probe: what a router said about
// it is not the probe.
func printHops(w io.Writer, hops []trace.Hop) error {
	var own, errs []trace.Hop
	for _, h := range hops {
		if h.ICMPError != nil {
			errs = append(errs, h)
		} else {
			own = append(own, h)
		}
	}
	if err := hopTable(w, own, false); err != nil || len(errs) == 0 {
		return err
	}
	fmt.Fprintln(w, "ICMP errors about the probe (not the probe itself):")
	return hopTable(w, errs, true)
}

func hopTable(w io.Writer, hops []trace.Hop, icmp bool) error {
	t := tablewriter.NewWriter(w)
	header := []any{"#", "Node", "In", "Action", "Out", "On the wire", "Outer src → dst", "SPI", "Inner src → dst"}
	if icmp {
		header = append(header, "ICMP error", "About")
	}
	t.Header(header...)
	for _, h := range hops {
		wire, spi, inner := "clear", "", ""
		if h.Encrypted {
			wire, spi = "ESP", fmt.Sprintf("0x%08x", h.SPI)
			inner = fmt.Sprintf("%s → %s", h.InnerSrc, h.InnerDst)
		}
		row := []any{fmt.Sprint(h.Step), h.Node, h.In, h.Action, h.Out, wire, fmt.Sprintf("%s → %s", h.OuterSrc, h.OuterDst), spi, inner}
		if e := h.ICMPError; icmp && e != nil {
			row = append(row, fmt.Sprintf("%s (type %d, code %d) from %s", e.Name, e.Type, e.Code, e.From), fmt.Sprintf("%s → %s", e.AboutSrc, e.AboutDst))
		}
		if err := t.Append(row...); err != nil {
			return err
		}
	}
	return t.Render()
}

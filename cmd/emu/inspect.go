package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show deployed labs: nodes, namespaces, interfaces, addresses, state",
		UsageText: "emu inspect [-t FILE | --all] [--format table|json]",
		Description: `Reads the live state of each node's namespace (not the topology file): interface
operational state and addresses. A node whose namespace vanished shows as "missing".
Agent: the node agent's health, judged from its processes (pid and start time) and
its heartbeat, never from an old file: alive, dead, hung (no heartbeat for 3 s),
restarting (its supervisor starts a new worker), with pid, since when it runs and
how often it was restarted. A node whose agent is not alive shows "agent dead" (or
hung, restarting) as its state.
A node's daemons (its "daemons:") show as running or dead, with how they ended; their
output is in emu-<lab>/logs/<node>.<daemon>.log. A daemon's liveness comes from its
own process (pid and start time): one that outlived its keeper (killed) shows as
running "(no keeper: destroy stops it)".
A node whose namespace is not the one deploy made (someone deleted it and made
another of that name) shows as "impostor", with nothing read from it: destroy
leaves it alone too.
Without -t, or with --all, it shows every lab recorded on this host (every user's);
with -t FILE, the lab that FILE deployed.

Examples:
   emu inspect                                  # every lab on this host, as --all
   emu inspect -t topologies/static.yaml
   emu inspect -t topologies/static-bgp.yaml --format json`,
		Flags: []cli.Flag{
			topoFlag,
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every lab deployed on this host, every user's (the default without -t)"},
			formatFlag,
		},
		Action: func(c *cli.Context) error {
			format := c.String("format")
			if format != "table" && format != "json" {
				return invalidInput{fmt.Errorf("--format %q: use table or json", format)}
			}
			store := deployer(c).Store
			var recs []*lab.Record
			if c.Bool("all") || c.String("topo") == "" {
				all, err := store.All()
				if err != nil {
					return err
				}
				recs = all
			} else {
				name, rec, err := deployedName(c)
				if err != nil {
					return err
				}
				if rec == nil {
					return fmt.Errorf("lab %q is not deployed: deploy it with `emu deploy -t %s`", name, c.String("topo"))
				}
				recs = []*lab.Record{rec}
			}
			if format == "json" {
				return printLabsJSON(c.App.Writer, store, recs)
			}
			if len(recs) == 0 {
				fmt.Fprintln(c.App.ErrWriter, "no labs deployed")
				return nil
			}
			return printLabs(c.App.Writer, store, recs)
		},
	}
}

// nodeView is one row of inspect, also its JSON form.
type nodeView struct {
	Lab        string                  `json:"lab"`
	Node       string                  `json:"node"`
	Kind       string                  `json:"kind"`
	Namespace  string                  `json:"namespace"`
	State      string                  `json:"state"`
	Runtime    string                  `json:"runtime,omitempty"`
	Interfaces []wiring.InterfaceState `json:"interfaces"`
	// Agent is the node agent's live health, where the node has one.
	Agent   *agent.Health      `json:"agent,omitempty"`
	Daemons []lab.DaemonStatus `json:"daemons,omitempty"`
	// Faults are those emu fault put in force on the node and not repaired,
	// and those of an emu check --failover, running or left over.
	Faults []fault.Fault `json:"faults,omitempty"`
	topo   string        // the file the lab was deployed from, to name repairs
}

func viewLabs(ctx context.Context, store lab.Store, recs []*lab.Record) []nodeView {
	var out []nodeView
	var docker *container.Runtime
	for _, r := range recs {
		impostors, ierr := store.Impostors(r.Name)
		for _, n := range r.Nodes {
			v := nodeView{Lab: r.Name, Node: n.Name, Kind: n.Kind, Namespace: n.Namespace, State: "running", Runtime: n.Runtime, topo: r.Topology}
			if !r.Complete {
				v.State = "incomplete"
			}
			if ierr != nil {
				v.State = "unknown: " + ierr.Error()
			}
			if imp := impostors[n.Namespace]; imp != nil {
				// Its interfaces and processes are someone else's: show none.
				v.State = "impostor: " + imp.Error()
				out = append(out, v)
				continue
			}
			if n.Runtime == topology.RuntimeDocker {
				if docker == nil {
					docker, _ = container.New()
				}
				// A dead container's namespace lives on through its link, so
				// only the engine can tell.
				if docker == nil {
					v.State = "no engine"
				} else if err := docker.Check(ctx, n.Namespace); err != nil {
					v.State = "dead: " + err.Error()
				}
			}
			ifs, err := wiring.Interfaces(n.Namespace)
			if err != nil {
				v.State = "missing"
			} else if v.Faults, err = fault.Active(n.Namespace, r.Dir); err != nil {
				v.State = "faults unknown: " + err.Error()
			}
			if cfg := filepath.Join(r.Dir, "agents", n.Name+".json"); fileExists(cfg) {
				h := agent.Check(cfg)
				v.Agent = &h
				if !h.Alive && v.State == "running" {
					v.State = "agent " + h.State
				}
			}
			v.Interfaces = ifs
			v.Daemons = lab.Daemons(r.Dir, n.Name)
			out = append(out, v)
		}
	}
	return out
}

func printLabsJSON(w io.Writer, store lab.Store, recs []*lab.Record) error {
	views := viewLabs(context.Background(), store, recs)
	if views == nil {
		views = []nodeView{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(views)
}

func printLabs(w io.Writer, store lab.Store, recs []*lab.Record) error {
	t := tablewriter.NewWriter(w)
	t.Header("Lab", "Node", "Kind", "Namespace", "Interfaces", "State", "Agent")
	for _, v := range viewLabs(context.Background(), store, recs) {
		var ifs []string
		for _, i := range v.Interfaces {
			ifs = append(ifs, strings.TrimSpace(fmt.Sprintf("%s %s %s", i.Name, i.State, strings.Join(i.Addrs, ","))))
		}
		kind := v.Kind
		if v.Runtime != "" {
			kind += " (" + v.Runtime + ")"
		}
		agentCol := ""
		if a := v.Agent; a != nil {
			lines := []string{a.State}
			if a.PID != 0 {
				lines[0] += fmt.Sprintf(", pid %d", a.PID)
			}
			if !a.Since.IsZero() {
				lines = append(lines, "since "+a.Since.Format(time.TimeOnly))
			}
			lines = append(lines, fmt.Sprintf("restarts %d", a.Restarts))
			if a.Detail != "" {
				lines = append(lines, wrap(a.Detail, 40))
			}
			if !a.Alive {
				lines = append(lines, "log: "+a.Log)
			}
			agentCol = strings.Join(lines, "\n")
		}
		state := []string{wrap(v.State, 60)}
		for _, d := range v.Daemons {
			line := d.Name + " " + d.State
			if d.Unwatched != "" {
				line += " (no keeper: destroy stops it)"
			}
			state = append(state, line)
		}
		for _, f := range v.Faults {
			line := fmt.Sprintf("fault: %s %s (%s)", f.Kind, f.Name, f.Effect())
			if f.Check {
				// A check's fault is not removed on its node: say how.
				line += ": " + labFault{v.Node, f}.repair(v.topo)
			}
			state = append(state, line)
		}
		if err := t.Append(v.Lab, v.Node, kind, v.Namespace, strings.Join(ifs, "\n"), strings.Join(state, "\n"), agentCol); err != nil {
			return err
		}
	}
	return t.Render()
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

package main

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

func deployCommand() *cli.Command {
	return &cli.Command{
		Name:      "deploy",
		Usage:     "create the lab described by a topology file",
		UsageText: "emu deploy -t FILE [--dry-run] [--reconfigure] [--ipsec-dataplane auto|kernel|userspace]",
		Description: `Validates the topology (every error with file:line and the fix), plans the objects
(namespaces, veth pairs, addresses, routes), creates them over netlink, and prints the
lab as "emu inspect" does. Every object is recorded as it is created: if any step fails,
or on Ctrl-C ("interrupted"), exactly those objects are removed again.

Once the lab is made, deploy waits (up to 20 s each) for phase 2 of every IKE-keyed
connection ("ike" stage), then for every BGP session ("bgp"). What is still down then,
or an IKE failure waiting cannot heal (AUTHENTICATION_FAILED, NO_PROPOSAL_CHOSEN), is
printed as a WARNING and the lab stays deployed for you to look at (emu ipsec, emu check).

Nodes with exec, binds, env or daemons get their own mount namespace and their programs
last ("software" stage): daemons in order, then exec commands; a daemon that exits at
start or a failing command fails the deploy. In a container node (runtime: docker) they
run in the container through the engine, its binds and env given at create. containerlab
fields emu cannot honour are printed as warnings with file:line. See README, "Bring your
own on-prem gateway".

IPsec tunnels run on the kernel's XFRM where the kernel has ESP, else on emu's userspace
ESP engine (--ipsec-dataplane). Connections keyed by IKEv2 (ike:) run on either: on the
kernel, deploy makes the XFRM interface and policies and the node's agent installs each
CHILD SA it negotiates (and each rekey) as XFRM states.

--dry-run prints the plan and changes nothing on the host: it needs no root, creates no
namespace (not even the kernel probe's scratch one) and writes no file; with the default
--ipsec-dataplane auto it plans userspace ESP, since only a deploy probes the kernel.

The topology must be a regular file of at most 1 MiB. The lab directory emu-<lab>/
beside it receives the keys (mode 0600): deploy refuses one that is a symlink, belongs
to another user or is writable by others. If a deploy fails, it removes what it made
and says so; if that removal fails too, it says what is left.
A lab already deployed is refused (exit 2) before anything is done: destroy it, or
deploy with --reconfigure.

Examples:
   emu deploy -t topologies/static.yaml
   emu deploy -t topologies/static-bgp.yaml --dry-run       # the plan only: no root, no change
   emu deploy -t topologies/static.yaml --reconfigure       # after editing the file
   emu deploy -t topologies/dual-stack.yaml --ipsec-dataplane userspace`,
		Flags: []cli.Flag{
			topoFlag,
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan, change nothing"},
			&cli.BoolFlag{Name: "reconfigure", Usage: "destroy the lab first if it is deployed, then deploy it again"},
			&cli.StringFlag{Name: dataplaneFlag, Usage: "run IPsec tunnels on `MODE`: auto (default: kernel ESP if the kernel has it, else userspace), kernel or userspace; overrides the topology's ipsec-dataplane"},
		},
		Action: func(c *cli.Context) error {
			finishDespiteClosedOutput()
			t, err := loadTopology(c)
			if err != nil {
				return err
			}
			if err := refuseDeployed(c, t); err != nil {
				return err
			}
			for _, w := range t.Warnings {
				fmt.Fprintln(c.App.ErrWriter, "warning:", w)
			}
			dataplane, err := chooseDataplane(c.App.ErrWriter, t, c.String(dataplaneFlag), c.Bool("dry-run"))
			if err != nil {
				return err
			}
			p, err := plan.Build(t, nodes.Default(), &ipsec.Secrets{}, dataplane)
			if err != nil {
				return err
			}
			if c.Bool("dry-run") {
				printPlan(c.App.Writer, p)
				return nil
			}
			if err := requireRoot(rootToCreate); err != nil {
				return err
			}
			d := deployer(c)
			d.Progress = printProgress(c.App.ErrWriter)
			if c.Bool("reconfigure") {
				if _, err := d.DestroyFrom(t.File, t.Name, t.LabDir(), false); err != nil {
					var other *lab.OtherFileError
					if errors.As(err, &other) {
						err = invalidInput{err}
					}
					return fmt.Errorf("reconfigure: %w", err)
				}
			}
			fmt.Fprintf(c.App.ErrWriter, "deploying lab %q: %d nodes, %d links\n", t.Name, len(t.Nodes), len(t.Links))
			start := time.Now()
			if err := d.Deploy(c.Context, p); err != nil {
				var dep *lab.DeployedError
				if errors.As(err, &dep) {
					return invalidInput{err}
				}
				return fmt.Errorf("deploy lab %q: %w", t.Name, err)
			}
			fmt.Fprintf(c.App.ErrWriter, "deployed lab %q in %s (lab directory %s)\n", t.Name, time.Since(start).Round(time.Millisecond), p.LabDir)
			rec, err := d.Store.Get(t.Name)
			if err != nil {
				return err
			}
			if err := printLabs(c.App.Writer, d.Store, []*lab.Record{rec}); err != nil && !errors.Is(err, syscall.EPIPE) {
				return err
			}
			return nil // deployed, whether or not anyone still reads
		},
	}
}

// refuseDeployed refuses, before anything is printed or probed, a deploy of
// a lab that is already deployed (lab.DeployedError, exit 2); Deploy
// refuses it too, but only after the dataplane probe and the "deploying"
// line, which read as if it had started. --dry-run and --reconfigure go on.
// A store that cannot be read here is left for Deploy to report.
func refuseDeployed(c *cli.Context, t *topology.Topology) error {
	if c.Bool("dry-run") || c.Bool("reconfigure") {
		return nil
	}
	rec, err := deployer(c).Store.Get(t.Name)
	if err != nil || rec == nil {
		return nil
	}
	return invalidInput{&lab.DeployedError{Record: rec, File: t.File}}
}

func printPlan(w io.Writer, p *plan.Plan) {
	fmt.Fprintf(w, "plan for lab %q (%s), lab directory %s\n", p.Lab, p.Topology, p.LabDir)
	for i, s := range p.Stages {
		fmt.Fprintf(w, "[%d/%d] %s: %d\n", i+1, len(p.Stages), s.Name, len(s.Steps))
		for _, step := range s.Steps {
			fmt.Fprintf(w, "  %s\n", step)
		}
	}
	fmt.Fprintf(w, "%d steps; nothing was changed (--dry-run)\n", p.StepCount())
}

func printProgress(w io.Writer) lab.Progress {
	return func(ev lab.Event) {
		if !ev.Done {
			if ev.Wait > 0 { // seconds may pass: say what for
				fmt.Fprintf(w, "[%d/%d] %-10s %5d waiting (up to %s)...\n", ev.Index, ev.Of, ev.Stage, ev.Count, ev.Wait)
			}
			return
		}
		if ev.Warning != "" {
			fmt.Fprintf(w, "[%d/%d] %-10s %5d WARNING: %s\n", ev.Index, ev.Of, ev.Stage, ev.Count, ev.Warning)
			return
		}
		fmt.Fprintf(w, "[%d/%d] %-10s %5d done in %s\n", ev.Index, ev.Of, ev.Stage, ev.Count, ev.Elapsed.Round(time.Microsecond*100))
	}
}

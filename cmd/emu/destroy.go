package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/topology"
)

func destroyCommand() *cli.Command {
	return &cli.Command{
		Name:      "destroy",
		Usage:     "remove a lab (or every lab on the host) and everything emu created for it",
		UsageText: "emu destroy -t FILE [--cleanup]\nemu destroy --all [--cleanup]",
		Description: `Removes exactly the objects recorded when the lab was deployed, also after a failed
or killed deploy. Destroying a lab that is not deployed succeeds and says so. A
deployed lab is found by the name in FILE alone, so destroy works after the file was
edited; a FILE naming no deployed lab is validated like deploy does (exit 2 on an
input error). A lab of that name deployed from another file is refused (exit 2; destroy
it with that file, which the error names). It says whether the lab directory
emu-<lab>/ (logs, captures, keys) was kept or removed.

--cleanup removes emu-<lab>/ beside FILE when emu created it (it carries the marker
file .emu-lab), also when the lab is not deployed (after a reboot, or after a destroy
without --cleanup). A directory of that name emu did not create is left with all in it
(exit 1 when the lab is not deployed, saying so; for a deployed lab, only the files
its deploy wrote go).
--all destroys every lab recorded in ` + lab.DefaultStateDir + `, which is host-wide:
other users' labs too, whoever deployed them and from whatever file (as containerlab's
destroy --all does); it goes by those records only, never by name pattern. Run
emu inspect --all first to see what it would take.

Examples:
   emu destroy -t topologies/static.yaml
   emu destroy -t topologies/static.yaml --cleanup
   emu destroy --all`,
		Flags: []cli.Flag{
			topoFlag,
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "destroy every lab deployed on this host, every user's (all records in " + lab.DefaultStateDir + ")"},
			&cli.BoolFlag{Name: "cleanup", Usage: "also remove the lab directory emu-<lab>/"},
		},
		Action: func(c *cli.Context) error {
			finishDespiteClosedOutput()
			d := deployer(c)
			cleanup := c.Bool("cleanup")
			if !c.Bool("all") {
				// Input errors first, whoever runs emu.
				file, name, err := labOfFile(c)
				if err != nil {
					return err
				}
				if err := requireRoot(rootToDelete); err != nil {
					return err
				}
				rep, err := d.DestroyFrom(file, name, topology.LabDir(file, name), cleanup)
				var other *lab.OtherFileError
				if errors.As(err, &other) {
					return invalidInput{err}
				}
				if err != nil {
					return fmt.Errorf("destroy lab %q: %w", name, err)
				}
				fmt.Fprintln(c.App.Writer, destroyMessage(name, rep))
				return nil
			}
			if err := requireRoot(rootToDelete); err != nil {
				return err
			}
			recs, err := d.Store.All()
			if err != nil {
				return err
			}
			if len(recs) == 0 {
				fmt.Fprintln(c.App.Writer, "no labs deployed")
			}
			var errs error
			for _, r := range recs {
				rep, err := d.DestroyFrom(r.Topology, r.Name, r.Dir, cleanup)
				if err != nil {
					errs = errors.Join(errs, fmt.Errorf("destroy lab %q: %w", r.Name, err))
					continue
				}
				fmt.Fprintln(c.App.Writer, destroyMessage(r.Name, rep))
			}
			return errs
		},
	}
}

// destroyMessage says what a destroy did, the lab directory included: it
// holds keys, so the user must know whether it is still there.
func destroyMessage(name string, rep lab.DestroyReport) string {
	msg := fmt.Sprintf("lab %q is not deployed: no namespace, agent or container to remove", name)
	if rep.Found {
		msg = fmt.Sprintf("destroyed lab %q, deployed from %s", name, rep.Topology)
	}
	switch {
	case rep.NotEmu:
		msg += fmt.Sprintf("; kept its lab directory %s, which emu did not create (no %s marker), without the files the deploy wrote into it", rep.LabDir, lab.MarkerFile)
	case rep.DirRemoved:
		msg += fmt.Sprintf("; removed its lab directory %s", rep.LabDir)
	case rep.LabDir != "":
		msg += fmt.Sprintf("; kept its lab directory %s (logs, captures and keys: --cleanup removes it)", rep.LabDir)
	}
	return msg
}

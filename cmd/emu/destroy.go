package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"
)

func destroyCommand() *cli.Command {
	return &cli.Command{
		Name:      "destroy",
		Usage:     "remove a lab (or all labs) and everything emu created for it",
		UsageText: "emu destroy -t FILE [--cleanup]\nemu destroy --all [--cleanup]",
		Description: `Removes exactly the objects recorded when the lab was deployed, also after a failed
or killed deploy. Destroying a lab that is not deployed succeeds and says so. A
deployed lab is found by the name in FILE alone, so destroy works after the file was
edited; a FILE naming no deployed lab is validated like deploy does (exit 2 on an
input error).
--all destroys every lab emu has records of (never by name pattern).`,
		Flags: []cli.Flag{
			topoFlag,
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "destroy every deployed lab"},
			&cli.BoolFlag{Name: "cleanup", Usage: "also remove the lab directory emu-<lab>/"},
		},
		Action: func(c *cli.Context) error {
			d := deployer(c)
			var labs []string
			if !c.Bool("all") {
				name, err := labName(c)
				if err != nil {
					return err
				}
				labs = []string{name}
			}
			if err := requireRoot(); err != nil {
				return err
			}
			if c.Bool("all") {
				recs, err := d.Store.All()
				if err != nil {
					return err
				}
				for _, r := range recs {
					labs = append(labs, r.Name)
				}
				if len(labs) == 0 {
					fmt.Fprintln(c.App.ErrWriter, "no labs deployed")
				}
			}
			var errs error
			for _, name := range labs {
				found, err := d.Destroy(name, c.Bool("cleanup"))
				switch {
				case err != nil:
					errs = errors.Join(errs, fmt.Errorf("destroy lab %q: %w", name, err))
				case found:
					fmt.Fprintf(c.App.ErrWriter, "destroyed lab %q\n", name)
				default:
					fmt.Fprintf(c.App.ErrWriter, "lab %q is not deployed: nothing to do\n", name)
				}
			}
			return errs
		},
	}
}

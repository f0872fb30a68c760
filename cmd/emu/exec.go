package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/urfave/cli/v2"
	"github.com/vishvananda/netns"

	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/wiring"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a host command inside a node's namespace",
		UsageText: "emu exec -t FILE NODE -- COMMAND [ARGS...]",
		Description: `Runs COMMAND (from the host's PATH) in the network namespace of NODE, like
"ip netns exec emu-<lab>-<node> COMMAND". The command replaces emu, so its exit code
and signals pass straight through. Example:
   emu exec -t topologies/static.yaml client -- ip route`,
		Flags: []cli.Flag{topoFlag},
		Action: func(c *cli.Context) error {
			args := c.Args().Slice()
			// The flag parser stops at NODE, so a "--" after it arrives as an
			// argument.
			if len(args) > 1 && args[1] == "--" {
				args = append(args[:1], args[2:]...)
			}
			if len(args) < 2 {
				return invalidInput{fmt.Errorf("usage: %s", c.Command.UsageText)}
			}
			name, err := labName(c)
			if err != nil {
				return err
			}
			node, args := args[0], args[1:]
			ns := plan.NamespaceName(name, node)
			if !wiring.NamespaceExists(ns) {
				return invalidInput{fmt.Errorf("node %q of lab %q has no namespace %s: is the lab deployed and the node name right? (see `emu inspect -t %s`)", node, name, ns, c.String("topo"))}
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return invalidInput{fmt.Errorf("command %q: %w", args[0], err)}
			}
			return execIn(ns, path, args)
		},
	}
}

// execIn replaces emu with the command, started on a thread that has entered
// the namespace: execve keeps the calling thread's namespaces.
func execIn(ns, path string, args []string) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	runtime.LockOSThread()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter namespace %s: %w", ns, err)
	}
	return fmt.Errorf("run %s: %w", path, syscall.Exec(path, args, os.Environ()))
}

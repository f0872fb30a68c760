package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/software"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a host command inside a node's namespace",
		ArgsUsage: "NODE -- COMMAND [ARGS...]",
		UsageText: "emu exec -t FILE NODE -- COMMAND [ARGS...]",
		Description: `Runs COMMAND (from the host's PATH) in NODE, like "ip netns exec emu-<lab>-<node>
COMMAND": in its network namespace, with /sys showing the node's own interfaces and
/etc/netns/emu-<lab>-<node>/* over /etc. A node that runs software (exec, binds, env,
daemons) has its own mount namespace for its life: the command runs in it, so it sees
the node's binds, its private /run (e.g. FRR's control sockets, for vtysh) and its env.
The command replaces emu, so its exit code and signals pass straight through.
In a container node (runtime: docker) the command runs in the container through the
engine, like "docker exec -i": COMMAND is found in the container's PATH, it sees the
container's filesystem and env, and emu exits with its exit code. Examples:
   emu exec -t topologies/static.yaml client -- ip route
   emu exec -t topologies/frr-onprem.yaml onprem -- vtysh -c 'show bgp summary'`,
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
			name, rec, err := deployedName(c)
			if err != nil {
				return err
			}
			node, args := args[0], args[1:]
			ns := plan.NamespaceName(name, node)
			if !wiring.NamespaceExists(ns) {
				return invalidInput{fmt.Errorf("node %q of lab %q has no namespace %s: is the lab deployed and the node name right? (see `emu inspect -t %s`)", node, name, ns, c.String("topo"))}
			}
			if rec != nil && rec.Node(node).Runtime == topology.RuntimeDocker {
				return execInContainer(c.Context, ns, args)
			}
			path, err := exec.LookPath(args[0])
			if err != nil {
				return invalidInput{fmt.Errorf("command %q: %w", args[0], err)}
			}
			keeper, env := 0, os.Environ()
			if rec != nil {
				pid, cfg, err := lab.NodeSoftware(rec.Dir, node)
				if err != nil {
					return err
				}
				if cfg != nil {
					keeper, env = pid, append(env, cfg.Software.Env...)
				}
			}
			return execIn(ns, keeper, path, args, env)
		},
	}
}

// execIn replaces emu with the command, started on a thread that has entered
// the node's namespaces: execve keeps the calling thread's namespaces.
func execIn(ns string, keeper int, path string, args, env []string) error {
	if err := software.Enter(netnsx.Path(ns), ns, keeper); err != nil {
		return err
	}
	return fmt.Errorf("run %s: %w", path, syscall.Exec(path, args, env))
}

// execInContainer runs the command in a container node through the engine,
// its standard streams joined to emu's, and returns its exit code as emu's.
func execInContainer(ctx context.Context, name string, args []string) error {
	rt, err := container.New()
	if err != nil {
		return err
	}
	defer rt.Close()
	p, err := rt.Start(ctx, name, args, os.Stdin, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	// Ctrl-C reaches the command, as it would a command emu replaced; the
	// engine has no call to signal what it execs.
	go func() {
		select {
		case <-ctx.Done():
			if p.PID > 0 {
				syscall.Kill(p.PID, syscall.SIGINT)
			}
		case <-p.Done():
		}
	}()
	code, err := p.Wait()
	if err != nil {
		return err
	}
	if code != 0 {
		return exitStatus(code)
	}
	return nil
}

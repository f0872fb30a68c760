// Command emu deploys emulated encrypted private connections (data center →
// Express Connect → VBR → CEN → VPC, with IPsec over it) as network
// namespaces on one Linux host, and checks them with real packets.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
	"github.com/emu-lab/emu/nodes"
)

// Exit codes scripts can rely on.
const (
	exitOK      = 0
	exitFailed  = 1 // the operation failed (kernel, permissions, interrupted)
	exitInvalid = 2 // bad command line or topology file: fix the input
)

// exitStatus is the exit code of a command emu ran for the user (emu exec in
// a container node): emu exits with it and says nothing, the command having
// said what it had to.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// invalidInput marks errors the user fixes by changing the input.
type invalidInput struct{ error }

func (e invalidInput) Unwrap() error { return e.error }

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp()
	err := app.RunContext(ctx, interspersed(app, os.Args))
	if err == nil {
		return
	}
	var status exitStatus
	if errors.As(err, &status) {
		os.Exit(int(status))
	}
	var ec cli.ExitCoder
	var inv invalidInput
	var usage usageError
	var topoErr topology.Errors
	var oneErr *topology.Error
	code := exitFailed
	switch {
	case errors.As(err, &ec):
		code = ec.ExitCode()
	case errors.As(err, &inv), errors.As(err, &usage), errors.As(err, &topoErr), errors.As(err, &oneErr):
		code = exitInvalid
	}
	fmt.Fprintln(os.Stderr, "emu:", err)
	os.Exit(code)
}

func newApp() *cli.App {
	app := &cli.App{
		Name:    "emu",
		Usage:   "emulate an encrypted private connection (Express Connect + CEN + private IPsec-VPN) on one host",
		Version: version,
		Description: `emu builds a lab from a containerlab-style topology file: one network namespace per
node (emu-<lab>-<node>, so "ip netns exec" works), veth pairs for links, addresses
and routes, all over netlink. Records of deployed labs live in ` + lab.DefaultStateDir + `;
each lab also gets a directory emu-<lab>/ next to its topology file.

Commands on a deployed lab (check, trace, fault, route, ipsec, capture, exec,
inspect -t) take the file that deployed it: another file with the same name
is refused (exit 2, naming the deploying file). They judge the lab as deployed,
from the copy of the topology deploy kept; if the file changed since, they warn
and say to redeploy with --reconfigure.

Typical session (as root), with method 2 of the guide:
   emu deploy -t topologies/static-bgp.yaml        # lab up, BGP converged
   emu check  -t topologies/static-bgp.yaml        # connectivity, ESP on the wire, the walk, BGP
   emu trace  -t topologies/static-bgp.yaml        # the guide's packet walk, live
   emu fault tunnel down -t topologies/static-bgp.yaml to-vpc
   sleep 5; emu trace -t topologies/static-bgp.yaml   # once BGP's hold timer (3 s) expired: the fallback, clear, over the CEN
   emu fault tunnel up -t topologies/static-bgp.yaml to-vpc     # waits until the lab is back
   emu check  -t topologies/static-bgp.yaml --failover          # breaks and repairs it itself, judged
   emu destroy -t topologies/static-bgp.yaml --cleanup

Scenarios in topologies/: static.yaml (method 1), static-bgp.yaml (method 2),
bgp.yaml (method 3), static-healthcheck.yaml (method 1 with the health check),
transit-router.yaml (two tunnels in ECMP), dual-stack.yaml (IPv6 inside the
IPv4 tunnel), frr-onprem.yaml (method 2 with FRR as the on-prem gateway),
strongswan-onprem.yaml (method 1 with strongSwan as the on-prem IPsec end).

Exit codes: 0 success, 1 operation failed, 2 invalid command line or topology,
3 emu check ran and a check failed, 4 emu check ran, none failed, but some
were inconclusive (e.g. a capture lost frames: re-run).`,
		HideHelpCommand:      true,
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", Value: lab.DefaultStateDir, Usage: "where records of deployed labs are kept", Hidden: true, EnvVars: []string{"EMU_STATE_DIR"}},
		},
		Commands: []*cli.Command{
			deployCommand(),
			destroyCommand(),
			inspectCommand(),
			execCommand(),
			checkCommand(),
			captureCommand(),
			faultCommand(),
			routeCommand(),
			ipsecCommand(),
			graphCommand(),
			traceCommand(),
			agentCommand(),
			nodeCommand(),
		},
	}
	strictUsage(app)
	return app
}

var topoFlag = &cli.StringFlag{Name: "topo", Aliases: []string{"t"}, Usage: "topology `FILE` (YAML)"}

var formatFlag = &cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "table", Usage: "output `FORMAT`: table or json"}

func deployer(c *cli.Context) *lab.Deployer {
	return &lab.Deployer{Store: lab.Store{Dir: c.String("state-dir")}}
}

// finishDespiteClosedOutput keeps a command that changes the host running
// when its output goes to a reader that quit (`emu deploy 2>&1 | head -3`):
// by default Go dies of SIGPIPE at the first write to stdout or stderr
// after that, mid-deploy, with no rollback and no record of why. With
// SIGPIPE caught, such writes fail with EPIPE, which the progress output
// ignores, and the command finishes or rolls back as it would have. Caught,
// not ignored: an ignored signal stays ignored in the agents, keepers and
// daemons deploy starts, a caught one is reset by exec.
func finishDespiteClosedOutput() { signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE) }

// loadTopology reads and validates -t. Whatever goes wrong is the input's
// fault (no file, not readable, not a valid topology): exit 2 from every
// command.
func loadTopology(c *cli.Context) (*topology.Topology, error) {
	path := c.String("topo")
	if path == "" {
		return nil, noTopology(c)
	}
	t, err := nodes.Load(path)
	if err != nil {
		return nil, invalidInput{err}
	}
	return t, nil
}

// recordOf finds the lab -t names and its record, nil when the lab is not
// deployed. A deployed lab is found by its name alone, so commands still
// work after its file was edited into something invalid; for any other
// file the topology is validated as deploy does, so an input error exits 2
// from every command.
func recordOf(c *cli.Context) (name string, rec *lab.Record, err error) {
	path := c.String("topo")
	if path == "" {
		return "", nil, noTopology(c)
	}
	if name, err := topology.LabName(path); err == nil {
		rec, err := deployer(c).Store.Get(name)
		if err != nil {
			return "", nil, err
		}
		if rec != nil {
			return name, rec, nil
		}
	}
	t, err := loadTopology(c)
	if err != nil {
		return "", nil, err
	}
	return t.Name, nil, nil
}

// labOfFile is the absolute path of -t and the lab name read from it, for
// destroy, which judges another deploying file itself.
func labOfFile(c *cli.Context) (file, name string, err error) {
	if name, _, err = recordOf(c); err != nil {
		return "", "", err
	}
	if file, err = filepath.Abs(c.String("topo")); err != nil {
		return "", "", err
	}
	return file, name, nil
}

// deployedName is the lab a command acts on and its record (nil when the
// lab is not deployed). A lab of that name deployed from another file is
// refused (exit 2, naming the deploying file): the command would act on a
// lab this file does not describe.
func deployedName(c *cli.Context) (string, *lab.Record, error) {
	name, rec, err := recordOf(c)
	if err != nil || rec == nil {
		return name, rec, err
	}
	file, err := filepath.Abs(c.String("topo"))
	if err != nil {
		return "", nil, err
	}
	if rec.Topology != file {
		cmd := strings.TrimPrefix(c.Command.HelpName, c.App.Name+" ")
		return "", nil, invalidInput{&lab.OtherFileError{Record: rec, File: file, Command: cmd}}
	}
	return name, rec, nil
}

// nodeInterface splits a NODE:IF argument.
func nodeInterface(arg string) (node, ifname string, err error) {
	node, ifname, ok := strings.Cut(arg, ":")
	if !ok || node == "" || ifname == "" {
		return "", "", invalidInput{fmt.Errorf("%q: write NODE:IF, like vbr:eth1", arg)}
	}
	return node, ifname, nil
}

// deployedTopology starts every command that judges or changes a running
// lab (check, trace, fault, route, ipsec): the lab as deployed, its record,
// and root (input errors first, whoever runs emu). The topology is the
// text the deploy kept, never the file as it is now, so a verdict always
// describes what is deployed; when the file no longer hashes to what was
// deployed, a warning says so and how to deploy the change.
func deployedTopology(c *cli.Context) (*topology.Topology, *lab.Record, error) {
	name, rec, err := deployedName(c)
	if err != nil {
		return nil, nil, err
	}
	if err := requireRoot(rootToEnter); err != nil {
		return nil, nil, err
	}
	if rec == nil {
		return nil, nil, fmt.Errorf("lab %q is not deployed: run `emu deploy -t %s` first", name, c.String("topo"))
	}
	src, err := deployer(c).Store.Source(name)
	if err != nil {
		return nil, nil, err
	}
	if src == nil { // deployed by an emu that kept no copy: the file is all there is
		t, err := loadTopology(c)
		return t, rec, err
	}
	t, err := nodes.Parse(rec.Topology, src)
	if err != nil {
		return nil, nil, fmt.Errorf("lab %q: the topology kept at its deploy no longer validates (this emu is newer than the deploy?): redeploy it with `emu deploy --reconfigure -t %s`:\n%w", name, rec.Topology, err)
	}
	if now, err := topology.ReadFile(rec.Topology); err != nil || sha256Hex(now) != rec.TopologySHA256 {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s changed since lab %q was deployed: emu judges the lab as deployed, from the copy it kept; to deploy the change, run `emu deploy --reconfigure -t %s`\n", rec.Topology, name, rec.Topology)
	}
	return t, rec, nil
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Why a command needs root, for requireRoot's error.
const (
	rootToCreate = "creates network namespaces"
	rootToEnter  = "enters the lab's network namespaces and reads its agents' files"
	rootToDelete = "deletes network namespaces and stops the lab's processes"
)

// requireRoot refuses a user other than root, saying why the command
// needs root (rootToCreate, rootToEnter, rootToDelete).
func requireRoot(why string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("this command %s and needs root: run it with sudo", why)
	}
	return nil
}

// nodeNamespaceInterface is the namespace of node in lab, once it is known to
// hold ifname; otherwise an input error that names the interfaces it has.
func nodeNamespaceInterface(labName, node, ifname string) (string, error) {
	ns := plan.NamespaceName(labName, node)
	if !wiring.NamespaceExists(ns) {
		return "", invalidInput{fmt.Errorf("node %q of lab %q is not deployed (no namespace %s)", node, labName, ns)}
	}
	ifs, err := wiring.Interfaces(ns)
	if err != nil {
		return "", err
	}
	var names []string
	for _, i := range ifs {
		if i.Name == ifname {
			return ns, nil
		}
		names = append(names, i.Name)
	}
	return "", invalidInput{fmt.Errorf("node %q has no interface %q (interfaces: %s)", node, ifname, strings.Join(names, ", "))}
}

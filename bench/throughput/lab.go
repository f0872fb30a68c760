package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

const topologyFile = "static.yaml"

// gateways are the nodes whose agents run the tunnel's two ends.
var gateways = []string{"onprem", "vpngw"}

// benchLab is the deployed lab; everything it made lives under dir.
type benchLab struct {
	topo *topology.Topology
	plan *plan.Plan
	dep  *lab.Deployer
	dir  string
}

var (
	nameLine        = regexp.MustCompile(`(?m)^name:.*$`)
	tunnelInterface = regexp.MustCompile(`(?m)^(\s+)interface: ipsec0$`)
)

// deploy writes the shipped topology under a random lab name into a fresh
// temp dir (lab directory and deploy records included) and deploys it with
// the userspace dataplane.
func deploy(ctx context.Context) (*benchLab, error) {
	text, err := topologies.FS.ReadFile(topologyFile)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "emu-throughput-")
	if err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "tp" + hex.EncodeToString(b)
	text = nameLine.ReplaceAll(text, []byte("name: "+name))
	// Dead peer detection puts a live tunnel's routes back every second: it
	// would undo the withdrawal the plain stream depends on.
	text = tunnelInterface.ReplaceAll(text, []byte("$0\n${1}dpd: off"))
	path := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(path, text, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	l := &benchLab{dir: dir, dep: &lab.Deployer{Store: lab.Store{Dir: filepath.Join(dir, "state")}, Agent: selfAgent}}
	if l.topo, err = nodes.Load(path); err == nil {
		l.plan, err = plan.Build(l.topo, nodes.Default(), &ipsec.Secrets{}, plan.Userspace)
	}
	if err == nil {
		fmt.Fprintf(os.Stderr, "deploying %s (lab %s, userspace ESP)\n", topologyFile, name)
		err = l.dep.Deploy(ctx, l.plan) // rolls back by itself on error
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return l, nil
}

// selfAgent starts this program again as a node agent.
func selfAgent(configPath string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "--config", configPath)
	cmd.Env = append(os.Environ(), asAgentEnv+"=1")
	return cmd, nil
}

func (l *benchLab) ns(node string) string { return plan.NamespaceName(l.topo.Name, node) }

// destroy removes the lab, then reads the per-SA counters each gateway's
// agent logged as it stopped, then removes the temp dir.
func (l *benchLab) destroy() (map[string][]userspace.TunnelStats, error) {
	defer os.RemoveAll(l.dir)
	if _, err := l.dep.Destroy(l.topo.Name, false); err != nil {
		return nil, fmt.Errorf("destroy lab %s: %w (run `emu destroy` on %s)", l.topo.Name, err, l.plan.Topology)
	}
	out := map[string][]userspace.TunnelStats{}
	for _, node := range gateways {
		stats, err := loggedCounters(filepath.Join(l.plan.LabDir, "logs", node+".log"))
		if err != nil {
			return nil, fmt.Errorf("counters of %s: %w", node, err)
		}
		out[node] = stats
	}
	return out, nil
}

// loggedCounters finds the "stopping; counters [...]" line an agent writes
// when it ends (internal/agent).
func loggedCounters(logPath string) ([]userspace.TunnelStats, error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const marker = "stopping; counters "
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if _, js, ok := strings.Cut(sc.Text(), marker); ok {
			var stats []userspace.TunnelStats
			return stats, json.Unmarshal([]byte(js), &stats)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%s has no %q line", logPath, marker)
}

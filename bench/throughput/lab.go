package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

const topologyFile = "static.yaml"

// gateways are the nodes whose agents run the tunnel's two ends.
var gateways = []string{"onprem", "vpngw"}

// benchLab is the deployed lab; everything it made lives under dir.
type benchLab struct {
	cipher     string
	encap      bool // ESP in UDP, keyed by IKEv2 (deployESPInUDP)
	strongswan bool // charon runs onprem's end (deployStrongSwan)
	// baseOnly: the lab carries plain, the ceiling and wireguard-go, but
	// -modes left out its own emu row.
	baseOnly   bool
	deployTime time.Duration
	topo       *topology.Topology
	plan       *plan.Plan
	dep        *lab.Deployer
	dir        string
}

// endpoints are the tunnel endpoints (outer addresses) of the gateways, in
// the order of gateways; each gateway must have one tunnel.
func (l *benchLab) endpoints() (addrs [2]netip.Addr, err error) {
	for i, node := range gateways {
		t := l.topo.Node(node).Tunnels
		if len(t) != 1 {
			return addrs, fmt.Errorf("%s has %d tunnels, want 1", node, len(t))
		}
		addrs[i] = t[0].Local
	}
	return addrs, nil
}

var (
	nameLine        = regexp.MustCompile(`(?m)^name:.*$`)
	tunnelInterface = regexp.MustCompile(`(?m)^(\s+)interface: ipsec0$`)
)

// deployCipher deploys the shipped topology with its tunnel set to cipher.
func deployCipher(ctx context.Context, cipher string) (*benchLab, error) {
	text, err := topologies.FS.ReadFile(topologyFile)
	if err != nil {
		return nil, err
	}
	// Dead peer detection puts a live tunnel's routes back every second: it
	// would undo the withdrawal the plain stream depends on.
	text = tunnelInterface.ReplaceAll(text, []byte("$0\n${1}dpd: off\n${1}cipher: "+cipher))
	l, err := deploy(ctx, text, topologyFile+", "+cipher, nil)
	if l != nil {
		l.cipher = cipher
	}
	return l, err
}

// espInUDPCipher is what the IKE defaults of a connection negotiate
// (ipsec-enc-alg aes, ipsec-auth-alg sha1): the product's ESP in UDP.
const espInUDPCipher = "aes-cbc-sha1"

// espInUDPCiphers are the ESP-in-UDP rows: the IKE defaults, and AES-GCM
// to compare with raw ESP of the same algorithm.
var espInUDPCiphers = []string{espInUDPCipher, "aes-gcm-128"}

// espInUDPSuites are the ESP algorithms the ESP-in-UDP labs negotiate: the
// IKE default, and AES-GCM-16, which emu's IKE and ESP engine have but the
// provider's ipsec-enc-alg does not offer (so no topology can ask for it):
// the bench sets it in the plan, to compare ESP in UDP with raw ESP of the
// same algorithm.
var espInUDPSuites = map[string]ike.Suite{
	espInUDPCipher: {},
	"aes-gcm-128":  {Encr: ike.EncrAESGCM16, KeyBits: 128},
}

// deployESPInUDP deploys the shipped topology with its tunnel keyed by
// emu's IKEv2 with force-encap: ESP in UDP (RFC 3948) between the same two
// gateways, without a NAT, negotiating cipher (a key of espInUDPSuites). It
// returns once the CHILD SA carries a ping client → ECS.
func deployESPInUDP(ctx context.Context, cipher string) (*benchLab, error) {
	text, err := topologies.FS.ReadFile(topologyFile)
	if err != nil {
		return nil, err
	}
	text = tunnelInterface.ReplaceAll(text, []byte("$0\n${1}dpd: off\n${1}ike:\n${1}  ike-version: ikev2\n${1}  dpd: off\n${1}  nat-traversal: on\n${1}  force-encap: on"))
	suite := espInUDPSuites[cipher]
	setSuite := func(p *plan.Plan) {
		if suite == (ike.Suite{}) {
			return
		}
		for _, st := range p.Stages {
			for _, step := range st.Steps {
				if a, ok := step.(plan.Agent); ok {
					for _, c := range a.Tunnels {
						if c.IKE != nil {
							c.IKE.ESP = suite
						}
					}
				}
			}
		}
	}
	l, err := deploy(ctx, text, topologyFile+", IKEv2 force-encap, "+cipher, setSuite)
	if err != nil {
		return nil, err
	}
	l.cipher, l.encap = cipher, true
	return l, l.waitTunnel(ctx)
}

// strongSwanTopology is method 1 with Debian's charon (kernel-libipsec,
// always ESP in UDP) as the on-prem gateway, negotiating IKEv2 with emu's
// VPN gateway, and strongSwanDir its configuration beside it.
const (
	strongSwanTopology = "strongswan-onprem.yaml"
	strongSwanDir      = "strongswan-onprem"
)

// deployStrongSwan deploys strongSwanTopology: charon on onprem ↔ emu's VPN
// gateway on the same seven namespaces. Both ends negotiate what their
// configurations share, aes128-sha1 (espInUDPCipher). It returns once the
// CHILD SA carries a ping client → ECS.
func deployStrongSwan(ctx context.Context) (*benchLab, error) {
	text, err := topologies.FS.ReadFile(strongSwanTopology)
	if err != nil {
		return nil, err
	}
	l, err := deploy(ctx, text, strongSwanTopology, nil, strongSwanDir)
	if err != nil {
		return nil, err
	}
	l.cipher, l.strongswan = espInUDPCipher, true
	return l, l.waitTunnel(ctx)
}

// waitTunnel waits up to 20 s for a ping client → ECS, which crosses the
// tunnel once IKE has set up its CHILD SA; the lab is destroyed if none
// comes.
func (l *benchLab) waitTunnel(ctx context.Context) error {
	for deadline := time.Now().Add(20 * time.Second); ; {
		_, err := probe.Ping(l.ns("client"), ecs.Addr(), 500*time.Millisecond)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_, derr := l.destroy()
			return errors.Join(fmt.Errorf("lab %s: no ping client → ECS through the IKE-keyed tunnel within 20 s: %w", l.topo.Name, err), derr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deploy writes topology text under a random lab name into a fresh temp
// dir (lab directory and deploy records included) and deploys it with the
// userspace dataplane; what names it in progress lines. edit, if not nil,
// changes the plan before it is applied. dirs are directories of the
// shipped topologies the topology binds into a node, copied beside it.
func deploy(ctx context.Context, text []byte, what string, edit func(*plan.Plan), dirs ...string) (*benchLab, error) {
	dir, err := os.MkdirTemp("", "emu-throughput-")
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		sub, err := fs.Sub(topologies.FS, d)
		if err == nil {
			err = os.CopyFS(filepath.Join(dir, d), sub)
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("copy %s of the shipped topologies: %w", d, err)
		}
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "tp" + hex.EncodeToString(b)
	text = nameLine.ReplaceAll(text, []byte("name: "+name))
	path := filepath.Join(dir, "topology.yaml")
	if err := os.WriteFile(path, text, 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	l := &benchLab{dir: dir, dep: &lab.Deployer{Store: lab.Store{Dir: filepath.Join(dir, "state")}, Agent: selfAgent, Keeper: selfKeeper}}
	if l.topo, err = nodes.Load(path); err == nil {
		l.plan, err = plan.Build(l.topo, nodes.Default(), &ipsec.Secrets{}, plan.Userspace)
	}
	if err == nil && edit != nil {
		edit(l.plan)
	}
	if err == nil {
		fmt.Fprintf(os.Stderr, "deploying %s (lab %s, userspace ESP)\n", what, name)
		start := time.Now()
		err = l.dep.Deploy(ctx, l.plan) // rolls back by itself on error
		l.deployTime = time.Since(start)
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

// selfKeeper starts this program again as the keeper of a node's software
// (charon in strongSwanTopology).
func selfKeeper(configPath string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "--config", configPath)
	cmd.Env = append(os.Environ(), asKeeperEnv+"=1")
	return cmd, nil
}

func (l *benchLab) ns(node string) string { return plan.NamespaceName(l.topo.Name, node) }

// agentReport is what a gateway's agent logged as it stopped.
type agentReport struct {
	tunnels []userspace.TunnelStats
	cpu     cpuTime
}

// destroy removes the lab, then reads the per-SA counters and CPU time each
// gateway's agent logged as it stopped, then removes the temp dir.
func (l *benchLab) destroy() (map[string]agentReport, error) {
	defer os.RemoveAll(l.dir)
	if err := l.remove(); err != nil {
		return nil, err
	}
	out := map[string]agentReport{}
	for _, node := range gateways {
		if l.strongswan && node == "onprem" {
			continue // charon, not an agent
		}
		logPath := filepath.Join(l.plan.LabDir, "logs", node+".log")
		data, err := os.ReadFile(logPath)
		if err != nil {
			return nil, fmt.Errorf("log of %s: %w", node, err)
		}
		var r agentReport
		if r.tunnels, err = loggedCounters(string(data)); err != nil {
			return nil, fmt.Errorf("counters of %s: %w in %s", node, err, logPath)
		}
		if r.cpu, err = parseCPU(string(data)); err != nil {
			return nil, fmt.Errorf("CPU time of %s: %w in %s", node, err, logPath)
		}
		out[node] = r
	}
	return out, nil
}

// remove destroys the lab, leaving the temp dir.
func (l *benchLab) remove() error {
	if _, err := l.dep.Destroy(l.topo.Name, false); err != nil {
		return fmt.Errorf("destroy lab %s: %w (run `emu destroy` on %s)", l.topo.Name, err, l.plan.Topology)
	}
	return nil
}

// loggedCounters finds the "stopping; counters [...]" line an agent writes
// when it ends (internal/agent).
func loggedCounters(log string) ([]userspace.TunnelStats, error) {
	const marker = "stopping; counters "
	for line := range strings.Lines(log) {
		if _, js, ok := strings.Cut(line, marker); ok {
			var stats []userspace.TunnelStats
			return stats, json.Unmarshal([]byte(js), &stats)
		}
	}
	return nil, fmt.Errorf("no %q line", marker)
}

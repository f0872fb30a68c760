// Package labtest deploys real labs for root-only integration tests and
// guarantees they are destroyed, also when the test fails. A test that leaves
// a namespace behind fails.
package labtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/software"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

// RequireRoot skips a test that needs to create namespaces, or fails it
// under make test (see package testenv).
func RequireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "integration tests create network namespaces")
}

// RequireHostFiles skips a test that runs the host's programs in nodes
// (/bin/sh, ip, FRR) or reads the source tree: the kernel-ESP VM has neither.
func RequireHostFiles(t testing.TB) {
	t.Helper()
	if os.Getenv("EMU_VMTEST") == "1" {
		t.Skip("runs host programs in nodes: not inside the kernel-ESP VM, which has no host file system")
	}
}

// UniqueName returns a lab name no other test uses.
func UniqueName() string {
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

var nameLine = regexp.MustCompile(`(?m)^name:.*$`)

// Shipped returns the text of a shipped topology file (topologies/NAME).
func Shipped(t testing.TB, file string) string {
	t.Helper()
	data, err := topologies.FS.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Rename sets the lab name of topology text.
func Rename(text, name string) string {
	return nameLine.ReplaceAllString(text, "name: "+name)
}

// Copy writes the shipped topology file into a fresh temp dir under the lab
// name name and returns its path; the lab directory lands in that temp dir.
func Copy(t testing.TB, file, name string) string {
	t.Helper()
	return Write(t, Rename(Shipped(t, file), name))
}

// IKEKeyed is the shipped static scenario with its connection keyed by
// IKEv2 with the provider's defaults, plus extra lines (YAML, one key a
// line) in the on-prem and the VPN gateway's `ike:` blocks. Its gateways run
// the tests' dataplane (Dataplane): in the VM the negotiated SAs go into
// XFRM.
func IKEKeyed(t testing.TB, onprem, vpngw string) string {
	t.Helper()
	text := Shipped(t, "static.yaml")
	for addr, extra := range map[string]string{"169.254.10.1/30": onprem, "169.254.10.2/30": vpngw} {
		block := "          ike:\n            ike-version: ikev2\n"
		for _, l := range strings.Split(strings.TrimSpace(extra), "\n") {
			if l != "" {
				block += "            " + l + "\n"
			}
		}
		text = strings.Replace(text, "address: "+addr+"\n", "address: "+addr+"\n"+block, 1)
	}
	return text
}

// Write stores topology text in a fresh temp dir and returns its path.
func Write(t testing.TB, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "topology.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Lab is a deployed lab.
type Lab struct {
	Topology *topology.Topology
	Plan     *plan.Plan
	Deployer *lab.Deployer
}

// NS is the namespace of a node.
func (l *Lab) NS(node string) string { return plan.NamespaceName(l.Topology.Name, node) }

// Load parses a topology file or fails the test.
func Load(t testing.TB, path string) *topology.Topology {
	t.Helper()
	topo, err := nodes.Load(path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return topo
}

// Dataplane is the ESP dataplane integration tests use: EMU_DATAPLANE if
// set, else kernel inside the kernel-ESP VM (EMU_VMTEST=1), else userspace.
func Dataplane() string {
	switch {
	case os.Getenv("EMU_DATAPLANE") != "":
		return os.Getenv("EMU_DATAPLANE")
	case os.Getenv("EMU_VMTEST") == "1":
		return plan.Kernel
	}
	return plan.Userspace
}

// Plan builds the plan of a topology with fresh keys, or fails the test.
func Plan(t testing.TB, topo *topology.Topology) *plan.Plan {
	t.Helper()
	p, err := plan.Build(topo, nodes.Default(), &ipsec.Secrets{}, Dataplane())
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return p
}

// NewDeployer returns a deployer whose records live in a temp dir and whose
// node agents are this test binary (see Main).
func NewDeployer(t testing.TB) *lab.Deployer {
	return &lab.Deployer{Store: lab.Store{Dir: t.TempDir()}, Agent: selfAgent, Keeper: selfKeeper}
}

const (
	asAgent  = "EMU_TEST_AS_AGENT"
	asKeeper = "EMU_TEST_AS_KEEPER"
)

func selfAgent(configPath string) (*exec.Cmd, error) {
	cmd := exec.Command(os.Args[0], "--config", configPath)
	cmd.Env = append(os.Environ(), asAgent+"=1")
	return cmd, nil
}

func selfKeeper(configPath string) (*exec.Cmd, error) {
	cmd := exec.Command(os.Args[0], "--config", configPath)
	cmd.Env = append(os.Environ(), asKeeper+"=1")
	return cmd, nil
}

// Main is the TestMain of packages that deploy labs with tunnels: the test
// binary, started again by the deployer, plays the node agent.
func Main(m *testing.M) {
	AgentMain()
	os.Exit(m.Run())
}

// AgentMain runs the node agent (or the keeper of a node's software) and
// exits when this test binary was started as one; otherwise it returns. For
// a TestMain with its own work to do.
func AgentMain() {
	if os.Getenv(asKeeper) == "1" {
		if err := software.Run(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "keeper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(asAgent) != "1" {
		return
	}
	if err := agent.Run(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Deploy deploys a shipped topology file under a unique lab name and
// destroys it when the test ends, failing the test if anything is left.
func Deploy(t testing.TB, file string) *Lab {
	t.Helper()
	return DeployText(t, Shipped(t, file))
}

// DeployText deploys topology text under a unique lab name, like Deploy.
func DeployText(t testing.TB, text string) *Lab {
	t.Helper()
	RequireRoot(t)
	return DeployFile(t, Write(t, Rename(text, UniqueName())))
}

// CopyTree copies the directory dir of fsys (the files a topology binds
// into its nodes) to the same relative place under dst.
func CopyTree(t testing.TB, fsys fs.FS, dir, dst string) {
	t.Helper()
	err := fs.WalkDir(fsys, dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, path)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// DeployFile deploys the topology file at path, whose lab name no other
// test uses, and destroys it when the test ends, like Deploy.
func DeployFile(t testing.TB, path string) *Lab {
	t.Helper()
	RequireRoot(t)
	topo := Load(t, path)
	l := &Lab{Topology: topo, Plan: Plan(t, topo), Deployer: NewDeployer(t)}
	t.Cleanup(func() {
		if _, err := l.Deployer.Destroy(topo.Name, true); err != nil {
			t.Errorf("destroy: %v", err)
		}
		AssertNothingLeft(t, topo.Name)
	})
	if err := l.Deployer.Deploy(context.Background(), l.Plan); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	return l
}

// AssertNothingLeft fails the test if any namespace of the lab still exists.
// The name pattern is only a witness here; emu itself never deletes by it.
func AssertNothingLeft(t testing.TB, labName string) {
	t.Helper()
	entries, err := os.ReadDir(netnsx.Dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "emu-"+labName+"-") {
			t.Errorf("namespace %s leaked", e.Name())
		}
	}
}

var kindField = regexp.MustCompile(`\bkind: ([a-z][a-z-]*)`)

// ThirdPartyKinds returns the shipped kinds plus a copy of each named
// "third-party-<kind>", with the same roles and rules, and text with every
// `kind: X` turned into its copy: a topology whose nodes play the same roles
// through kinds that are not emu's own.
func ThirdPartyKinds(text string) (*nodes.Registry, string) {
	r := nodes.Default()
	for _, name := range r.Names() {
		k := *r.Get(name)
		k.Name = "third-party-" + name
		r.Register(&k)
	}
	return r, kindField.ReplaceAllString(text, "kind: third-party-$1")
}

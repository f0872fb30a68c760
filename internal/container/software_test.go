package container_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/wiring"
)

const dockerSoftware = `
name: lab
topology:
  defaults: {kind: linux, runtime: docker, image: IMAGE}
  nodes:
    R1:
      binds: [conf:/mnt/conf:ro]
      env: {ROLE: first}
      exec:
        - ip addr add 10.9.0.1/24 dev eth1
        - ip link set eth1 up
        - cat /mnt/conf/x > /seen; echo $ROLE >> /seen
    R2:
      exec: [ip addr add 10.9.0.2/24 dev eth1, ip link set eth1 LAST]
  links:
    - endpoints: ["R1:eth1", "R2:eth1"]
`

func writeDockerLab(t *testing.T, image, last string) string {
	t.Helper()
	text := strings.NewReplacer("IMAGE", image, "LAST", last).Replace(dockerSoftware)
	path := labtest.Write(t, labtest.Rename(text, labtest.UniqueName()))
	conf := filepath.Join(filepath.Dir(path), "conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "x"), []byte("bound\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestContainerNode_LinuxKind_ExecBindsEnvAsInNamespaceNodes(t *testing.T) {
	rt := newRuntime(t)
	l := labtest.DeployFile(t, writeDockerLab(t, labtest.ShellImage(t), "up"))
	out, code, err := rt.Exec(context.Background(), l.NS("R1"), "cat /seen")
	if err != nil || code != 0 || out != "bound\nfirst\n" {
		t.Errorf("R1 saw %q (exit %d, %v), want its bind and env: %q", out, code, err, "bound\nfirst\n")
	}
	// The veth's carrier comes up a moment after both ends are set up.
	var ifs []wiring.InterfaceState
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ifs, err = wiring.Interfaces(l.NS("R2")); err == nil && len(ifs) > 0 && ifs[0].State == "up" {
			break
		}
	}
	if err != nil || len(ifs) == 0 || !strings.Contains(strings.Join(ifs[0].Addrs, " "), "10.9.0.2/24") || ifs[0].State != "up" {
		t.Errorf("R2 interfaces %+v (%v): its exec did not configure eth1", ifs, err)
	}
}

func TestContainerNode_ExecFails_DeployFailsWithFileLine_AndRollsBack(t *testing.T) {
	rt := newRuntime(t)
	path := writeDockerLab(t, labtest.ShellImage(t), "upp")
	topo := labtest.Load(t, path)
	err := labtest.NewDeployer(t).Deploy(context.Background(), labtest.Plan(t, topo))
	want := path + `:14: node R2 exec "ip link set eth1 upp" failed (exit status`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("deploy error = %v\nwant it to say %q", err, want)
	}
	labtest.AssertNothingLeft(t, topo.Name)
	if left, err := rt.List(context.Background(), topo.Name); err != nil || len(left) > 0 {
		t.Errorf("containers left after the rollback: %v %v", left, err)
	}
}

// daemonLab runs two daemons in a container node: one through the image's
// shell (it reads the node's env and makes the path the next waits for), one
// plain, which needs no shell; its exec runs once both are up.
const daemonLab = `
name: lab
topology:
  nodes:
    R1:
      kind: linux
      runtime: docker
      image: IMAGE
      env: {ROLE: first}
      daemons:
        - {name: talker, command: 'echo "up as $ROLE"; echo > /ready; exec sleep 1000', wait-for: /ready}
        - {name: sleeper, command: LAST}
      exec: ['[ -e /ready ] && echo exec saw the daemon > /seen']
`

func TestContainerNode_Daemons_RunInTheContainer_WatchedLogged_StoppedOnDestroy(t *testing.T) {
	rt := newRuntime(t)
	text := strings.NewReplacer("IMAGE", labtest.ShellImage(t), "LAST", "sleep 1000").Replace(daemonLab)
	path := labtest.Write(t, labtest.Rename(text, labtest.UniqueName()))
	l := labtest.DeployFile(t, path)
	ds := lab.Daemons(l.Plan.LabDir, "R1")
	if len(ds) != 2 {
		t.Fatalf("inspect shows daemons %+v, want talker and sleeper", ds)
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for _, d := range ds {
		if d.State != "running" || d.PID == 0 {
			t.Errorf("daemon %+v, want running with its pid", d)
			continue
		}
		// In the container: its files, not the host's.
		if mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", d.PID)); mnt == self {
			t.Errorf("daemon %s (pid %d) runs in the host's mount namespace", d.Name, d.PID)
		}
	}
	if log, err := os.ReadFile(filepath.Join(l.Plan.LabDir, "logs", "R1.talker.log")); err != nil || string(log) != "up as first\n" {
		t.Errorf("talker's log %q (%v), want its output with the node's env", log, err)
	}
	if out, code, err := rt.Exec(context.Background(), l.NS("R1"), "cat /seen"); err != nil || code != 0 || out != "exec saw the daemon\n" {
		t.Errorf("exec after the daemons: %q (exit %d, %v)", out, code, err)
	}
	if _, err := os.Stat("/ready"); err == nil {
		t.Errorf("/ready exists on the host: the daemon wrote outside its container")
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, true); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if err := syscall.Kill(d.PID, 0); err == nil {
			t.Errorf("daemon %s (pid %d) still runs after destroy", d.Name, d.PID)
		}
	}
}

func TestContainerNode_DaemonExitsAtStart_DeployFailsWithItsLastLogLines_AndRollsBack(t *testing.T) {
	rt := newRuntime(t)
	text := strings.NewReplacer("IMAGE", labtest.ShellImage(t), "LAST", "cat /no/such/config").Replace(daemonLab)
	path := labtest.Write(t, labtest.Rename(text, labtest.UniqueName()))
	topo := labtest.Load(t, path)
	err := labtest.NewDeployer(t).Deploy(context.Background(), labtest.Plan(t, topo))
	want := path + ":12: node R1 daemon sleeper exited at start (exit status 1); last lines of "
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "/no/such/config") {
		t.Fatalf("deploy error = %v\nwant it to say %q and the daemon's complaint", err, want)
	}
	labtest.AssertNothingLeft(t, topo.Name)
	if left, err := rt.List(context.Background(), topo.Name); err != nil || len(left) > 0 {
		t.Errorf("containers left after the rollback: %v %v", left, err)
	}
}

func TestContainerNode_DaemonNotInTheImage_DeployFailsSayingToBindIt(t *testing.T) {
	rt := newRuntime(t)
	text := strings.NewReplacer("IMAGE", labtest.ShellImage(t), "LAST", "/usr/lib/frr/zebra -A 127.0.0.1").Replace(daemonLab)
	path := labtest.Write(t, labtest.Rename(text, labtest.UniqueName()))
	topo := labtest.Load(t, path)
	err := labtest.NewDeployer(t).Deploy(context.Background(), labtest.Plan(t, topo))
	for _, want := range []string{path + ":12: node R1 daemon sleeper exited at start (exit status 12", "/usr/lib/frr/zebra", "must be in the node's image, or bound into it"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("deploy error = %v\nwant it to say %q", err, want)
		}
	}
	labtest.AssertNothingLeft(t, topo.Name)
	if left, err := rt.List(context.Background(), topo.Name); err != nil || len(left) > 0 {
		t.Errorf("containers left after the rollback: %v %v", left, err)
	}
}

package lab_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/software"
	"github.com/emu-lab/emu/internal/wiring"
)

// twoRouters runs the same daemon in two nodes: each writes its pid file at
// the same /run path and reads its own bound config at the same node path.
const twoRouters = `
name: lab
topology:
  defaults:
    kind: linux
  nodes:
    R1:
      binds: [r1:/mnt:ro]
      env: {ROLE: first}
      daemons:
        - {name: d, command: 'echo $$ > /run/d.pid; echo "$ROLE $(cat /mnt/conf)" > /run/seen; exec sleep 1000', wait-for: /run/seen}
      exec: [ip addr add 10.9.0.1/24 dev eth1, ip link set eth1 up]
    R2:
      binds: [r2:/mnt:ro]
      env: {ROLE: second}
      daemons:
        - {name: d, command: 'echo $$ > /run/d.pid; echo "$ROLE $(cat /mnt/conf)" > /run/seen; exec sleep 1000', wait-for: /run/seen}
      exec: [ip addr add 10.9.0.2/24 dev eth1, ip link set eth1 up]
  links:
    - endpoints: ["R1:eth1", "R2:eth1"]
`

// writeLab writes topology text under a unique name into a temp dir, with
// a bind source r1/conf and r2/conf beside it.
func writeLab(t *testing.T, text string) string {
	t.Helper()
	labtest.RequireHostFiles(t)
	path := labtest.Write(t, labtest.Rename(text, labtest.UniqueName()))
	for _, n := range []string{"r1", "r2"} {
		dir := filepath.Join(filepath.Dir(path), n)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "conf"), []byte("config-of-"+n+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func keeperOf(t *testing.T, l *labtest.Lab, node string) (int, *software.State) {
	t.Helper()
	pid, cfg, err := lab.NodeSoftware(l.Plan.LabDir, node)
	if err != nil || cfg == nil {
		t.Fatalf("keeper of %s: pid %d, config %v, err %v", node, pid, cfg, err)
	}
	st, err := software.ReadState(lab.SoftwareStatePath(l.Plan.LabDir, node))
	if err != nil {
		t.Fatal(err)
	}
	return pid, st
}

func TestSoftware_TwoNodesSameDaemon_OwnRunSysBindsEnvEtcNetns_DestroyStopsEverything(t *testing.T) {
	labtest.RequireRoot(t)
	path := writeLab(t, twoRouters)
	// /etc/netns/<namespace>/ is honoured as `ip netns exec` does.
	etc := filepath.Join(software.EtcNetns, plan.NamespaceName(labtest.Load(t, path).Name, "R1"))
	_, statErr := os.Stat(software.EtcNetns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(etc)
		if os.IsNotExist(statErr) {
			os.Remove(software.EtcNetns) // made here; left if something else was put in it since
		}
	})
	if err := os.WriteFile(filepath.Join(etc, "hostname"), []byte("r1-of-the-lab\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := labtest.DeployFile(t, path)
	keeper, _ := keeperOf(t, l, "R1")
	if got, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(keeper), "root/etc/hostname")); err != nil || string(got) != "r1-of-the-lab\n" {
		t.Errorf("R1 sees /etc/hostname = %q (%v), want the one of /etc/netns/%s/", got, err, filepath.Base(etc))
	}
	var pids []int
	for _, tc := range []struct{ node, seen string }{{"R1", "first config-of-r1"}, {"R2", "second config-of-r2"}} {
		keeper, st := keeperOf(t, l, tc.node)
		// /proc/<pid>/root is the keeper's view: its mount namespace.
		root := filepath.Join("/proc", strconv.Itoa(keeper), "root")
		seen, err := os.ReadFile(filepath.Join(root, "run/seen"))
		if err != nil || strings.TrimSpace(string(seen)) != tc.seen {
			t.Errorf("%s: the daemon saw %q (%v), want %q: env and bind of its own node", tc.node, seen, err, tc.seen)
		}
		pidFile, _ := os.ReadFile(filepath.Join(root, "run/d.pid"))
		if len(st.Daemons) != 1 || !st.Daemons[0].Running || strings.TrimSpace(string(pidFile)) != strconv.Itoa(st.Daemons[0].PID) {
			t.Errorf("%s: state %+v, pid file %q: want its daemon running with its own /run/d.pid", tc.node, st.Daemons, pidFile)
		}
		ifaces, err := os.ReadDir(filepath.Join(root, "sys/class/net"))
		var names []string
		for _, e := range ifaces {
			names = append(names, e.Name())
		}
		if err != nil || !slices.Equal(names, []string{"eth1", "lo"}) {
			t.Errorf("%s: /sys/class/net in the node = %v (%v), want its own [eth1 lo]", tc.node, names, err)
		}
		pids = append(pids, keeper, st.Daemons[0].PID)
	}
	// The exec commands ran: the addresses are there and the nodes talk.
	ifs, err := wiring.Interfaces(l.NS("R2"))
	if err != nil || !strings.Contains(strings.Join(ifs[0].Addrs, " "), "10.9.0.2/24") {
		t.Errorf("R2 interfaces %+v (%v): exec did not add 10.9.0.2/24", ifs, err)
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, true); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("process %d of the lab survived destroy", pid)
		}
	}
}

func TestSoftware_DaemonExitsAtStart_DeployFailsWithItsLastLogLines_AndRollsBack(t *testing.T) {
	labtest.RequireRoot(t)
	text := strings.Replace(twoRouters, `exec sleep 1000', wait-for: /run/seen}
      exec: [ip addr add 10.9.0.2/24`, `echo "bgpd: no such config" >&2; exit 3'}
      exec: [ip addr add 10.9.0.2/24`, 1)
	path := writeLab(t, text)
	topo := labtest.Load(t, path)
	d := labtest.NewDeployer(t)
	err := d.Deploy(context.Background(), labtest.Plan(t, topo))
	want := path + `:17: node R2 daemon d exited at start (exit status 3)`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "bgpd: no such config") {
		t.Fatalf("deploy error = %v\nwant it to say %q and show the daemon's last log lines", err, want)
	}
	// The log it names went with the lab directory: the error says so
	// rather than send the user to a file that is gone.
	if gone := "rolled back: everything this deploy made was removed, the lab directory " + topo.LabDir() + " too: the files named above in it are gone"; !strings.Contains(err.Error(), gone) {
		t.Errorf("deploy error = %v\nwant it to say %q", err, gone)
	}
	if _, statErr := os.Stat(topo.LabDir()); !os.IsNotExist(statErr) {
		t.Errorf("the lab directory is still there (%v): the note would be false", statErr)
	}
	labtest.AssertNothingLeft(t, topo.Name)
	if rec, _ := d.Store.Get(topo.Name); rec != nil {
		t.Errorf("record of the rolled-back lab is still there: %+v", rec)
	}
}

func TestSoftware_ExecFails_DeployFailsWithFileLine_AndRollsBack(t *testing.T) {
	labtest.RequireRoot(t)
	path := writeLab(t, strings.Replace(twoRouters, "ip link set eth1 up]\n  links", "ip link set eth9 up]\n  links", 1))
	topo := labtest.Load(t, path)
	err := labtest.NewDeployer(t).Deploy(context.Background(), labtest.Plan(t, topo))
	want := path + `:18: node R2 exec "ip link set eth9 up" failed (exit status 1)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("deploy error = %v\nwant it to say %q", err, want)
	}
	labtest.AssertNothingLeft(t, topo.Name)
}

func TestSoftware_KeeperKilled_ItsDaemonsDie_DestroyKillsWhatTheyLeft(t *testing.T) {
	labtest.RequireRoot(t)
	// R1's daemon is a shell with a child: the kernel kills the shell with
	// its keeper, the child is left for destroy to find.
	l := labtest.DeployFile(t, writeLab(t, strings.Replace(twoRouters, "exec sleep 1000", "sleep 1000; true", 1)))
	keeper, st := keeperOf(t, l, "R1")
	daemon := st.Daemons[0].PID
	var group []int
	for _, p := range pidsOfGroup(daemon) {
		if p != daemon {
			group = append(group, p)
		}
	}
	if len(group) == 0 {
		t.Fatalf("daemon %d has no child in its group", daemon)
	}
	if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !gone(daemon) {
		t.Errorf("daemon %d outlived its killed keeper", daemon)
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, true); err != nil {
		t.Fatal(err)
	}
	for _, p := range group {
		if !gone(p) {
			t.Errorf("process %d of R1's daemon survived destroy", p)
		}
	}
}

// A read-only bind is read-only all the way down: the host path's
// submounts, brought along by the recursive bind, too (/dev:/x:ro must not
// leave /x/shm writable).
func TestSoftware_ReadOnlyBind_SubmountsReadOnlyToo(t *testing.T) {
	labtest.RequireRoot(t)
	path := writeLab(t, twoRouters)
	sub := filepath.Join(filepath.Dir(path), "r1", "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", sub, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(sub, syscall.MNT_DETACH) })
	l := labtest.DeployFile(t, path)
	keeper, _ := keeperOf(t, l, "R1")
	root := filepath.Join("/proc", strconv.Itoa(keeper), "root")
	for _, p := range []string{"mnt/written", "mnt/sub/written"} {
		err := os.WriteFile(filepath.Join(root, p), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("writing /%s in R1 (bound read-only): %v, want %v", p, err, syscall.EROFS)
		}
	}
	if _, err := os.Stat(filepath.Join(sub, "written")); err == nil {
		t.Error("the write through the read-only bind reached the host's submount")
	}
}

// pidsOfGroup lists the processes of process group pgid.
func pidsOfGroup(pgid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
				out = append(out, pid)
			}
		}
	}
	return out
}

// The containerlab examples (testdata/containerlab/README.md says where
// they come from) deploy as they are, as namespaces.
func TestContainerlabExamples_DeployAsNamespaces(t *testing.T) {
	labtest.RequireRoot(t)
	labtest.RequireHostFiles(t)
	for _, tc := range []struct {
		file  string
		check func(t *testing.T, l *labtest.Lab)
	}{
		{"frr01/frr01.clab.yml", func(t *testing.T, l *labtest.Lab) {
			// PC1's exec commands ran: address and routes.
			routes, err := wiring.Routes(l.NS("PC1"))
			if err != nil || !slices.ContainsFunc(routes, func(r wiring.RouteState) bool {
				return r.Dst == "10.10.10.0/24" && slices.Contains(r.Via, "192.168.11.1")
			}) {
				t.Errorf("PC1 routes %+v (%v): want 10.10.10.0/24 via 192.168.11.1 from its exec", routes, err)
			}
			// router1's binds: its own frr.conf at /etc/frr/frr.conf.
			keeper, _, err := lab.NodeSoftware(l.Plan.LabDir, "router1")
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(keeper), "root/etc/frr/frr.conf"))
			want, _ := os.ReadFile("testdata/containerlab/frr01/router1/frr.conf")
			if err != nil || string(got) != string(want) {
				t.Errorf("router1 sees /etc/frr/frr.conf = %q (%v), want its bound file", got, err)
			}
		}},
		{"node-filter/node-filter.clab.yml", func(t *testing.T, l *labtest.Lab) {
			ifs, err := wiring.Interfaces(l.NS("node4"))
			if err != nil || len(ifs) != 3 {
				t.Errorf("node4 interfaces %+v (%v): want eth1, eth2, eth3 from the links", ifs, err)
			}
		}},
		{"single-node/01-linux-single-node.clab.yml", func(t *testing.T, l *labtest.Lab) {
			if !wiring.NamespaceExists(l.NS("l1")) {
				t.Error("node l1 has no namespace")
			}
		}},
	} {
		t.Run(filepath.Dir(tc.file), func(t *testing.T) {
			dir := t.TempDir()
			labtest.CopyTree(t, os.DirFS("testdata/containerlab"), filepath.Dir(tc.file), dir)
			path := filepath.Join(dir, tc.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(labtest.Rename(string(data), labtest.UniqueName())), 0o644); err != nil {
				t.Fatal(err)
			}
			tc.check(t, labtest.DeployFile(t, path))
		})
	}
}

func TestSoftware_DaemonDiesLater_ShownDead_WithNothingLeftOfIt(t *testing.T) {
	labtest.RequireRoot(t)
	// R1's shell stays the daemon's parent: its command does not end in exec.
	l := labtest.DeployFile(t, writeLab(t, strings.Replace(twoRouters, "exec sleep 1000", "sleep 1000; true", 1)))
	ds := lab.Daemons(l.Plan.LabDir, "R1")
	if len(ds) != 1 || ds[0].State != "running" {
		t.Fatalf("daemons of R1 = %+v, want d running", ds)
	}
	// The daemon runs under a shell (its command is compound): killing the
	// shell must take the whole daemon down, and say so.
	if err := syscall.Kill(ds[0].PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	// The keeper publishes the end a moment after the kernel reports it.
	for time.Now().Before(deadline) && lab.Daemons(l.Plan.LabDir, "R1")[0].State != "dead: signal: terminated" {
		time.Sleep(20 * time.Millisecond)
	}
	if got := lab.Daemons(l.Plan.LabDir, "R1")[0].State; got != "dead: signal: terminated" {
		t.Errorf("R1's daemon state = %q, want dead: signal: terminated", got)
	}
	keeper, _ := keeperOf(t, l, "R1")
	if kids := childrenOf(keeper); len(kids) > 0 {
		t.Errorf("the keeper still has children %v: the dead daemon's sleep survived or was not reaped", kids)
	}
	if ds := lab.Daemons(l.Plan.LabDir, "R2"); ds[0].State != "running" {
		t.Errorf("R2's daemon = %+v, want running: one node's daemon dying leaves the others", ds)
	}
}

// childrenOf lists the processes (zombies too) whose parent is pid.
func childrenOf(pid int) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		i := strings.LastIndexByte(string(stat), ')')
		if f := strings.Fields(string(stat[i+1:])); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, e.Name()+" "+string(stat[:i+1])+" "+f[0])
		}
	}
	return out
}

// gone waits up to 2 s for pid to exit; a zombie (exited, not yet reaped by
// its parent) counts as gone.
func gone(pid int) bool {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return true
		}
	}
	return false
}

// A deploy cancelled (Ctrl-C, SIGTERM) while it waits for a node's keeper
// stops waiting at once, not after the keeper's 2-minute bound: it returns
// context.Canceled, and the rollback stops the keeper and what it ran and
// leaves no namespace.
func TestSoftware_DeployCancelledWhileKeeperWaits_ReturnsCanceledAtOnce_AndRollsBack(t *testing.T) {
	labtest.RequireRoot(t)
	started := filepath.Join(t.TempDir(), "started")
	path := writeLab(t, strings.Replace(twoRouters, "exec: [ip addr add 10.9.0.1/24",
		`exec: ["touch `+started+`; exec sleep 600005", ip addr add 10.9.0.1/24`, 1))
	topo := labtest.Load(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- labtest.NewDeployer(t).Deploy(ctx, labtest.Plan(t, topo)) }()
	// Whatever happens below, the deploy ends (and rolls back) before the
	// test does.
	var err error
	returned := false
	defer func() {
		if !returned {
			<-done
		}
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if _, statErr := os.Stat(started); statErr == nil {
			break
		}
		select {
		case err = <-done:
			returned = true
			t.Fatalf("deploy returned before R1's exec command ran: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("R1's exec command did not start within a minute")
		}
	}
	cancel()
	cancelled := time.Now()
	// The keeper would hold the deploy for keeperReadyTimeout (2 minutes).
	select {
	case err = <-done:
		returned = true
		t.Logf("deploy returned %s after it was cancelled", time.Since(cancelled).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		t.Fatal("deploy still waits for R1's keeper 30 s after it was cancelled")
	}
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "did not finish within") {
		t.Fatalf("deploy error = %v, want context.Canceled from the interrupted wait", err)
	}
	var rb *lab.RollbackError
	if !errors.As(err, &rb) || rb.Rollback != nil {
		t.Fatalf("deploy error = %v, want a complete rollback", err)
	}
	for _, pid := range processesRunning("sleep", "600005") {
		if !gone(pid) {
			t.Errorf("R1's exec command (pid %d) survived the rollback", pid)
		}
	}
	labtest.AssertNothingLeft(t, topo.Name)
}

package lab_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/wiring"
)

// withDaemon is twoRouters with R1's daemon replaced by command.
func withDaemon(command string) string {
	return strings.Replace(twoRouters, `{name: d, command: 'echo $$ > /run/d.pid; echo "$ROLE $(cat /mnt/conf)" > /run/seen; exec sleep 1000', wait-for: /run/seen}`,
		`{name: d, command: "`+command+`"}`, 1)
}

// processesRunning returns the pids whose command line is exactly argv.
func processesRunning(argv ...string) []int {
	want := strings.Join(argv, "\x00") + "\x00"
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && string(cmdline) == want {
			out = append(out, pid)
		}
	}
	return out
}

// A daemon's child that left for a session of its own escapes the daemon's
// process group; destroy still kills it, as it kills everything in the
// lab's namespaces.
func TestDestroy_DaemonChildInANewSession_Killed(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.DeployFile(t, writeLab(t, withDaemon(`sh -c 'setsid sleep 400000 & exec sleep 500000'`)))
	netns, err := netnsx.IdentityOf(netnsx.Path(l.NS("R1")))
	if err != nil {
		t.Fatal(err)
	}
	var escaped []int
	for _, pid := range processesRunning("sleep", "400000") {
		if id, err := netnsx.IdentityOf(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net")); err == nil && id == netns {
			escaped = append(escaped, pid)
		}
	}
	if len(escaped) != 1 {
		t.Fatalf("processes `sleep 400000` in R1: %v, want the one the daemon started", escaped)
	}
	if sid, _ := unix.Getsid(escaped[0]); sid != escaped[0] {
		t.Fatalf("`sleep 400000` (pid %d) is in session %d, not its own: the test proves nothing", escaped[0], sid)
	}
	inR1 := netnsx.Processes("net", netns)
	if _, err := l.Deployer.Destroy(l.Topology.Name, true); err != nil {
		t.Fatal(err)
	}
	for _, pid := range inR1 {
		if !gone(pid) {
			t.Errorf("process %d of R1 survived destroy", pid)
		}
	}
	if left := netnsx.Processes("net", netns); len(left) > 0 {
		t.Errorf("processes %v still hold R1's deleted namespace", left)
	}
}

// A namespace that took the name of one of the lab's after it was deleted
// is not the lab's: destroy leaves it and says so, inspect reports it, and
// the rest of the lab goes.
func TestDestroy_ImpostorNamespaceWithALabsName_LeftAloneAndNamed(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	name := l.NS("client")
	if err := wiring.DeleteNamespace(name); err != nil {
		t.Fatal(err)
	}
	w := wiring.New()
	if err := w.CreateNamespace(name, false, false); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { wiring.DeleteNamespace(name) })
	impostor, err := netnsx.IdentityOf(netnsx.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	// A process of the impostor's owner, run with the arguments of one of
	// the lab's agents: neither the namespace nor it is the lab's.
	stranger := exec.Command("/bin/sh", "-c", "sleep 1000; :", "--config", filepath.Join(l.Plan.LabDir, "agents", "vpngw.json"))
	stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := stranger.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-stranger.Process.Pid, syscall.SIGKILL); stranger.Wait() })

	imps, err := l.Deployer.Store.Impostors(l.Topology.Name)
	if err != nil || imps[name] == nil || len(imps) != 1 {
		t.Errorf("Impostors = %v, %v: want %s alone", imps, err, name)
	}
	_, err = l.Deployer.Destroy(l.Topology.Name, false)
	var imp *lab.ImpostorError
	if !errors.As(err, &imp) || imp.Namespace != name || !strings.Contains(err.Error(), "ip netns del "+name) {
		t.Fatalf("destroy returned %v, want it to refuse %s and say how to remove it", err, name)
	}
	if id, err := netnsx.IdentityOf(netnsx.Path(name)); err != nil || id != impostor {
		t.Errorf("after destroy %s is %v (%v), want the impostor %v untouched", name, id, err, impostor)
	}
	if stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(stranger.Process.Pid), "stat")); err != nil || strings.Contains(string(stat), ") Z ") {
		t.Error("destroy killed a process outside the lab's namespaces because it had an agent's --config")
	}
	for _, n := range []string{"vbr", "vpngw", "ecs"} {
		if wiring.NamespaceExists(l.NS(n)) {
			t.Errorf("namespace of %s left: the impostor must not strand the rest of the lab", n)
		}
	}
	if rec, _ := l.Deployer.Store.Get(l.Topology.Name); rec == nil {
		t.Error("the record went while the impostor was refused: the next destroy would not say why")
	}
	// Once its owner removed it, destroy finishes.
	if err := wiring.DeleteNamespace(name); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, false); err != nil {
		t.Errorf("destroy after the impostor went: %v", err)
	}
}

// A deploy killed between creating a namespace's mount-point file and
// mounting the namespace on it leaves an empty file at the journalled name:
// that is the half-made namespace, not an impostor, and destroy removes it.
func TestDestroy_KilledBetweenNamingAndMounting_EmptyFileRemoved(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	name := l.NS("client")
	if err := wiring.DeleteNamespace(name); err != nil {
		t.Fatal(err)
	}
	// What newNamed leaves when killed after its O_CREATE|O_EXCL.
	f, err := os.OpenFile(netnsx.Path(name), os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(netnsx.Path(name)) })
	if imps, err := l.Deployer.Store.Impostors(l.Topology.Name); err != nil || len(imps) != 0 {
		t.Errorf("Impostors = %v, %v: an empty, unmounted file is the lab's half-made namespace", imps, err)
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, false); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if _, err := os.Lstat(netnsx.Path(name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after destroy (%v)", netnsx.Path(name), err)
	}
	if rec, _ := l.Deployer.Store.Get(l.Topology.Name); rec != nil {
		t.Error("the lab's record is left after destroy")
	}
}

// A daemon that changes its user loses its parent-death signal (the
// kernel clears it), so it outlives a keeper killed with SIGKILL: the
// status says it runs, unwatched, and destroy stops it.
func TestSoftware_KeeperKilled_DaemonThatChangedUser_ShownRunningAndDestroyed(t *testing.T) {
	labtest.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	testenv.Require(t, err, "setpriv (util-linux) changes the daemon's user")
	l := labtest.DeployFile(t, writeLab(t, withDaemon(setpriv+" --reuid 65534 --regid 65534 --clear-groups sleep 600001")))
	keeper, st := keeperOf(t, l, "R1")
	daemon := st.Daemons[0].PID
	if err := syscall.Kill(keeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !gone(keeper) {
		t.Fatal("the keeper survived SIGKILL")
	}
	if gone(daemon) {
		t.Fatal("the daemon died with its keeper: the kernel kept its parent-death signal, so the test proves nothing")
	}
	ds := lab.Daemons(l.Plan.LabDir, "R1")
	if len(ds) != 1 || ds[0].State != "running" || ds[0].PID != daemon || !strings.Contains(ds[0].Unwatched, "keeper is not running") {
		t.Errorf("R1's daemons = %+v, want d running (pid %d), unwatched as its keeper is gone", ds, daemon)
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, true); err != nil {
		t.Fatal(err)
	}
	if !gone(daemon) {
		t.Errorf("daemon %d survived destroy", daemon)
	}
}

// The files a node's software writes in the lab directory are never written
// through a symlink: a node's config planted as a link is replaced (the
// target untouched), a log planted as a link refuses the deploy, a `nodes`
// directory that is a link refuses it before anything is written there.
func TestDeploy_NodeFilesAndDirsPlantedAsSymlinks_NeverWrittenThrough(t *testing.T) {
	labtest.RequireRoot(t)
	path := writeLab(t, twoRouters)
	labDir := labtest.Plan(t, labtest.Load(t, path)).LabDir
	victimDir := t.TempDir()
	victim := filepath.Join(victimDir, "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	untouched := func(what string) {
		t.Helper()
		if got, _ := os.ReadFile(victim); string(got) != "untouched" {
			t.Errorf("%s: the symlink's target was written: %q", what, got)
		}
		if entries, _ := os.ReadDir(victimDir); len(entries) != 1 {
			t.Errorf("%s: files were written into the directory a link points to: %v", what, entries)
		}
	}
	deploy := func() error {
		topo := labtest.Load(t, path)
		d := labtest.NewDeployer(t)
		err := d.Deploy(t.Context(), labtest.Plan(t, topo))
		if err == nil {
			d.Destroy(topo.Name, false) // it should have been refused
		}
		return err
	}
	mkdir := func(dir string) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}

	// nodes/ is a link to a directory.
	mkdir(labDir)
	link(victimDir, filepath.Join(labDir, "nodes"))
	if err := deploy(); err == nil || !strings.Contains(err.Error(), filepath.Join(labDir, "nodes")+" is a symlink") {
		t.Errorf("deploy with nodes/ a symlink: %v, want it refused as a symlink", err)
	}
	untouched("nodes/ a symlink")
	os.Remove(filepath.Join(labDir, "nodes"))

	// A log is a link: the deploy moves the old logs/ aside to logs.1
	// (links and all, never followed) and writes a fresh log; the target is
	// untouched. (A link planted in the new logs/ would be refused, ELOOP:
	// logs are opened O_NOFOLLOW.)
	mkdir(filepath.Join(labDir, "logs"))
	link(victim, filepath.Join(labDir, "logs", "R1.keeper.log"))
	{
		topo := labtest.Load(t, path)
		d := labtest.NewDeployer(t)
		if err := d.Deploy(t.Context(), labtest.Plan(t, topo)); err != nil {
			t.Fatalf("deploy with a log a symlink: %v", err)
		}
		if info, err := os.Lstat(filepath.Join(labDir, "logs", "R1.keeper.log")); err != nil || !info.Mode().IsRegular() {
			t.Errorf("logs/R1.keeper.log after deploy: %v (%v), want a fresh regular file", info, err)
		}
		if info, err := os.Lstat(filepath.Join(labDir, "logs.1", "R1.keeper.log")); err != nil || info.Mode()&os.ModeSymlink == 0 {
			t.Errorf("logs.1/R1.keeper.log: %v (%v), want the planted link moved there", info, err)
		}
		// Remove what the deploy wrote; the directory, made here, stays.
		if _, err := d.Destroy(topo.Name, true); err != nil {
			t.Fatal(err)
		}
	}
	untouched("logs/R1.keeper.log a symlink")

	// A node's config is a link: replaced by a fresh 0600 file.
	mkdir(filepath.Join(labDir, "nodes"))
	link(victim, filepath.Join(labDir, "nodes", "R1.json"))
	l := labtest.DeployFile(t, path)
	untouched("nodes/R1.json a symlink")
	info, err := os.Lstat(filepath.Join(labDir, "nodes", "R1.json"))
	if err != nil || !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 {
		t.Errorf("nodes/R1.json after deploy: %v (%v), want a regular file, 0600", info, err)
	}
	// A temporary file a killed keeper left goes with a plain destroy.
	tmp := filepath.Join(labDir, "nodes", "R1.state.json.tmp")
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after destroy: %v", tmp, err)
	}
}

// An exec command that leaves a child in the background holding its output
// (`server &`, `setsid -f ...`) ended with its shell: deploy waited 2
// minutes for the pipe instead, and ignored Ctrl-C meanwhile. A daemon
// written as `exec CMD` runs as written (it was made `exec exec CMD`).
func TestSoftware_ExecLeavesABackgroundChild_DeployGoesOn_DestroyKillsIt(t *testing.T) {
	labtest.RequireRoot(t)
	text := strings.Replace(withDaemon("exec sleep 600003"), "exec: [ip addr add 10.9.0.1/24 dev eth1, ip link set eth1 up]",
		`exec: ["setsid -f sleep 600004", ip addr add 10.9.0.1/24 dev eth1, ip link set eth1 up]`, 1)
	start := time.Now()
	l := labtest.DeployFile(t, writeLab(t, text))
	t.Logf("deployed in %s", time.Since(start).Round(time.Millisecond))
	if got := processesRunning("sleep", "600003"); len(got) != 1 {
		t.Fatalf("daemon `exec sleep 600003`: %d processes, want 1", len(got))
	}
	if got := processesRunning("sleep", "600004"); len(got) != 1 {
		t.Fatalf("exec's background `sleep 600004`: %d processes, want 1", len(got))
	}
	if _, err := l.Deployer.Destroy(l.Topology.Name, true); err != nil {
		t.Fatal(err)
	}
	for _, argv := range [][]string{{"sleep", "600003"}, {"sleep", "600004"}} {
		for _, pid := range processesRunning(argv...) {
			if !gone(pid) {
				t.Errorf("%v (pid %d) survived destroy", argv, pid)
			}
		}
	}
}

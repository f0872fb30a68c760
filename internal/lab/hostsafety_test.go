package lab_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// planIn plans the static scenario (it has keys) from a topology file in a
// fresh directory, without deploying anything.
func planIn(t *testing.T) *plan.Plan {
	t.Helper()
	return labtest.Plan(t, labtest.Load(t, labtest.Copy(t, "static-bgp.yaml", labtest.UniqueName())))
}

// assertDeployRefusedBeforeAnything deploys p and wants a refusal naming
// want, with no record left and nothing written under witness.
func assertDeployRefusedBeforeAnything(t *testing.T, p *plan.Plan, witness, want string) {
	t.Helper()
	d := labtest.NewDeployer(t)
	err := d.Deploy(context.Background(), p)
	if err == nil {
		d.Destroy(p.Lab, true)
		t.Fatalf("deploy into %s succeeded, want a refusal", p.LabDir)
	}
	var rb *lab.RollbackError
	if !strings.Contains(err.Error(), want) || errors.As(err, &rb) {
		t.Fatalf("deploy error %q does not say %q, or came after making something", err, want)
	}
	labtest.AssertNothingLeft(t, p.Lab)
	if left, _ := os.ReadDir(d.Store.Dir); len(left) > 0 {
		t.Errorf("records left: %v", left)
	}
	if files, _ := os.ReadDir(witness); len(files) > 0 {
		t.Errorf("deploy wrote into %s: %v", witness, files)
	}
}

func TestDeploy_LabDirIsASymlink_RefusedAndTargetUntouched(t *testing.T) {
	p := planIn(t)
	target := t.TempDir()
	if err := os.Symlink(target, p.LabDir); err != nil {
		t.Fatal(err)
	}
	assertDeployRefusedBeforeAnything(t, p, target, "is a symlink")
}

func TestDeploy_LabDirWritableByOthers_Refused(t *testing.T) {
	p := planIn(t)
	if err := os.Mkdir(p.LabDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.LabDir, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	assertDeployRefusedBeforeAnything(t, p, p.LabDir, "writable by other users")
}

func TestDeploy_LabDirOfAnotherUser_Refused(t *testing.T) {
	labtest.RequireRoot(t)
	p := planIn(t)
	if err := os.Mkdir(p.LabDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p.LabDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	assertDeployRefusedBeforeAnything(t, p, p.LabDir, "belongs to uid 65534")
}

func TestDeploy_ParentWritableByOthersNotSticky_Refused(t *testing.T) {
	p := planIn(t)
	parent := filepath.Dir(p.LabDir)
	if err := os.Chmod(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	assertDeployRefusedBeforeAnything(t, p, parent+"/nonexistent", "not sticky")
	if _, err := os.Lstat(p.LabDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory %s was made", p.LabDir)
	}
}

// A lab directory emu made earlier (root's, 0755) in which another user
// could not have planted anything still gets every key file created afresh:
// an old 0644 copy or a symlink left there is replaced, never written through.
func TestDeploy_KeyFilesCreatedExclusively0600_NeverThroughASymlink(t *testing.T) {
	labtest.RequireRoot(t)
	p := planIn(t)
	if err := os.MkdirAll(filepath.Join(p.LabDir, "agents"), 0o700); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(p.LabDir, lab.ESPSAFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(p.LabDir, "agents", "onprem.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.LabDir, lab.ConnsFile), []byte("old"), 0o666); err != nil {
		t.Fatal(err)
	}
	d := labtest.NewDeployer(t)
	t.Cleanup(func() {
		if _, err := d.Destroy(p.Lab, true); err != nil {
			t.Errorf("destroy: %v", err)
		}
		labtest.AssertNothingLeft(t, p.Lab)
	})
	if err := d.Deploy(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(victim); string(got) != "untouched" {
		t.Errorf("the symlink's target was written: %q", got)
	}
	for _, f := range []string{lab.ESPSAFile, lab.ConnsFile, "agents/onprem.json", "agents/vpngw.json"} {
		path := filepath.Join(p.LabDir, f)
		info, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Mode().IsRegular() || info.Mode().Perm() != 0o600 || info.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: mode %s uid %d, want a regular file, 0600, root's", f, info.Mode(), info.Sys().(*syscall.Stat_t).Uid)
		}
	}
}

// A deploy that fails in a lab directory that existed before removes the key
// files it wrote there, and says so.
func TestDeploy_FailureInExistingLabDir_RemovesItsKeyFilesAndSaysRolledBack(t *testing.T) {
	labtest.RequireRoot(t)
	p := planIn(t)
	if err := os.Mkdir(p.LabDir, 0o755); err != nil {
		t.Fatal(err)
	}
	d := labtest.NewDeployer(t)
	injected := errors.New("injected failure")
	d.BeforeStep = func(i int, s plan.Step) error {
		if _, ok := s.(plan.Route); ok {
			return injected
		}
		return nil
	}
	err := d.Deploy(context.Background(), p)
	var rb *lab.RollbackError
	if !errors.Is(err, injected) || !errors.As(err, &rb) || rb.Rollback != nil {
		t.Fatalf("deploy = %v, want the injected failure, rolled back", err)
	}
	if !strings.Contains(err.Error(), "rolled back: everything this deploy made was removed") {
		t.Errorf("message does not say it rolled back: %q", err)
	}
	labtest.AssertNothingLeft(t, p.Lab)
	if left, err := os.ReadDir(p.LabDir); err != nil || len(left) > 0 {
		t.Errorf("the lab directory that existed before should be as it was (empty): %v %v", left, err)
	}
}

// When the rollback itself fails the message must not claim the host is
// clean: it says what is left and how to remove it.
func TestDeploy_RollbackFails_SaysPartsAreLeft(t *testing.T) {
	labtest.RequireRoot(t)
	p := planIn(t)
	d := labtest.NewDeployer(t)
	logs := filepath.Join(p.LabDir, "logs")
	var mu sync.Mutex // route steps run in parallel
	mounted := false
	t.Cleanup(func() {
		if mounted {
			unix.Unmount(logs, unix.MNT_DETACH)
		}
		if _, err := d.Destroy(p.Lab, true); err != nil {
			t.Errorf("destroy after the failed rollback: %v", err)
		}
		labtest.AssertNothingLeft(t, p.Lab)
	})
	injected := errors.New("injected failure")
	d.BeforeStep = func(i int, s plan.Step) error {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := s.(plan.Route); !ok || mounted {
			return nil
		}
		// A mount inside the lab directory makes its removal fail (EBUSY).
		if err := unix.Mount("tmpfs", logs, "tmpfs", 0, "size=64k"); err != nil {
			return err
		}
		mounted = true
		return injected
	}
	err := d.Deploy(context.Background(), p)
	var rb *lab.RollbackError
	if !errors.As(err, &rb) || !errors.Is(err, injected) || rb.Rollback == nil {
		t.Fatalf("deploy = %v, want the injected failure and a failed rollback", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "everything this deploy made was removed") || !strings.Contains(msg, "rollback failed too") || !strings.Contains(msg, "emu destroy -t "+p.Topology) {
		t.Errorf("message after a failed rollback: %q", msg)
	}
	if rec, _ := d.Store.Get(p.Lab); rec == nil {
		t.Error("the record is gone, so destroy could not finish the job")
	}
}

// labDirWithKey makes dir/emu-NAME with a key file and returns its path.
func labDirWithKey(t *testing.T, dir, name string) string {
	t.Helper()
	labDir := topology.LabDir(filepath.Join(dir, "lab.yaml"), name)
	if err := os.Mkdir(labDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{lab.ESPSAFile, lab.MarkerFile} {
		if err := os.WriteFile(filepath.Join(labDir, f), []byte("keys"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return labDir
}

// The reviewer's repro: with no lab recorded, --cleanup removed a directory
// named like a lab directory that the user had made, notes included.
func TestDestroyCleanup_NoRecord_DirectoryEmuDidNotCreate_LeftWithAllInIt(t *testing.T) {
	dir := t.TempDir()
	name := labtest.UniqueName()
	labDir := topology.LabDir(filepath.Join(dir, "lab.yaml"), name)
	notes := []string{filepath.Join(labDir, "notes.txt"), filepath.Join(labDir, "sub", "myfile.txt")}
	if err := os.MkdirAll(filepath.Join(labDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range notes {
		if err := os.WriteFile(f, []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d := labtest.NewDeployer(t)
	rep, err := d.DestroyFrom(filepath.Join(dir, "lab.yaml"), name, labDir, true)
	var notEmu *lab.NotEmuDirError
	if !errors.As(err, &notEmu) || rep.DirRemoved || !strings.Contains(err.Error(), "emu did not create it") {
		t.Fatalf("destroy --cleanup = %+v, %v: want the directory left, saying emu did not create it", rep, err)
	}
	for _, f := range notes {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the user's %s is gone: %v", f, err)
		}
	}
}

// A deploy marks the lab directory it creates, and not one it reuses; a
// deployed lab's --cleanup then removes the first and, of the second, only
// what the deploy wrote.
func TestDeploy_MarksOnlyTheLabDirectoryItCreates_CleanupKeepsTheUsers(t *testing.T) {
	labtest.RequireRoot(t)
	for _, existed := range []bool{false, true} {
		p := planIn(t)
		notes := filepath.Join(p.LabDir, "notes.txt")
		if existed {
			if err := os.Mkdir(p.LabDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(notes, []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d := labtest.NewDeployer(t)
		t.Cleanup(func() { d.Destroy(p.Lab, true) })
		if err := d.Deploy(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		_, err := os.Lstat(filepath.Join(p.LabDir, lab.MarkerFile))
		if marked := err == nil; marked == existed {
			t.Errorf("lab directory existed before: %v; marked: %v", existed, marked)
		}
		rep, err := d.DestroyFrom(p.Topology, p.Lab, p.LabDir, true)
		if err != nil {
			t.Fatal(err)
		}
		labtest.AssertNothingLeft(t, p.Lab)
		left, _ := os.ReadDir(p.LabDir)
		switch {
		case !existed && (!rep.DirRemoved || exists(p.LabDir)):
			t.Errorf("the lab directory emu created is still there after --cleanup: %+v", rep)
		case existed && (!rep.NotEmu || len(left) != 1 || left[0].Name() != "notes.txt"):
			t.Errorf("the lab directory the user made: %+v, holds %v after --cleanup; want it kept with notes.txt alone", rep, left)
		}
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestDestroyCleanup_LabNotDeployed_RemovesTheLabDirectory(t *testing.T) {
	dir := t.TempDir()
	name := labtest.UniqueName()
	labDir := labDirWithKey(t, dir, name)
	d := labtest.NewDeployer(t) // no record: as after a reboot emptied /run
	rep, err := d.DestroyFrom(filepath.Join(dir, "lab.yaml"), name, labDir, false)
	if err != nil || rep.Found || rep.DirRemoved || rep.LabDir != labDir {
		t.Fatalf("destroy without cleanup = %+v, %v: want the kept lab directory reported", rep, err)
	}
	if _, err := os.Stat(labDir); err != nil {
		t.Fatalf("destroy without --cleanup removed the lab directory: %v", err)
	}
	rep, err = d.DestroyFrom(filepath.Join(dir, "lab.yaml"), name, labDir, true)
	if err != nil || !rep.DirRemoved {
		t.Fatalf("destroy --cleanup = %+v, %v: want the lab directory removed", rep, err)
	}
	if _, err := os.Lstat(labDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lab directory %s (with keys) still there: %v", labDir, err)
	}
}

// deployedRecord plays a deploy of lab name from file: a record and an
// empty journal, which is all destroy reads.
func deployedRecord(t *testing.T, d *lab.Deployer, file, name string) {
	t.Helper()
	if err := os.WriteFile(file, []byte("name: "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rec := lab.Record{Name: name, Topology: file, Dir: topology.LabDir(file, name), Complete: true}
	if err := d.Store.PutForTest(&rec); err != nil {
		t.Fatal(err)
	}
}

func TestDestroy_SameNameFromAnotherFile_RefusedAndNamesTheDeployingFile(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	name := labtest.UniqueName()
	d := labtest.NewDeployer(t)
	aFile, bFile := filepath.Join(a, "lab.yaml"), filepath.Join(b, "lab.yaml")
	aDir := labDirWithKey(t, a, name)
	deployedRecord(t, d, aFile, name)

	_, err := d.DestroyFrom(bFile, name, topology.LabDir(bFile, name), true)
	var other *lab.OtherFileError
	if !errors.As(err, &other) || !strings.Contains(err.Error(), "deployed from "+aFile) || !strings.Contains(err.Error(), "emu destroy -t "+aFile) {
		t.Fatalf("destroy -t %s = %v, want a refusal naming %s", bFile, err, aFile)
	}
	if rec, _ := d.Store.Get(name); rec == nil {
		t.Fatal("the refused destroy removed the other file's record")
	}
	if _, err := os.Stat(filepath.Join(aDir, lab.ESPSAFile)); err != nil {
		t.Fatalf("the refused destroy touched %s: %v", aDir, err)
	}

	rep, err := d.DestroyFrom(aFile, name, topology.LabDir(aFile, name), true)
	if err != nil || !rep.Found || rep.Topology != aFile || !rep.DirRemoved {
		t.Fatalf("destroy -t %s --cleanup = %+v, %v", aFile, rep, err)
	}
	if _, err := os.Lstat(aDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after --cleanup", aDir)
	}
}

// C.1 of issue 9: on a fresh host /run/netns is not a mount point; after a
// deploy, `ip netns add` makes it one. Every namespace of the lab must still
// go with destroy.
func TestDestroy_AfterIPNetnsAddOnAFreshHost_RemovesEveryNamespace(t *testing.T) {
	requireIPNetns(t)
	if !labtest.InPrivateRun(t) {
		return
	}
	if _, err := os.Stat(netnsx.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists in a fresh /run: %v", netnsx.Dir, err)
	}
	p := planIn(t)
	d := labtest.NewDeployer(t)
	if err := d.Deploy(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	other := "other-" + labtest.UniqueName()
	if out, err := exec.Command("ip", "netns", "add", other).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", other).Run()
	if _, err := d.Destroy(p.Lab, true); err != nil {
		t.Fatalf("destroy after `ip netns add`: %v", err)
	}
	// The mount table is the witness: a namespace lives as long as a mount
	// of it, visible or not.
	if left := labMounts(t, p.Lab); len(left) > 0 {
		t.Errorf("namespaces still mounted after destroy: %v", left)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil || strings.Contains(string(out), "emu-"+p.Lab) || !strings.Contains(string(out), other) {
		t.Errorf("ip netns list after destroy: %v\n%s", err, out)
	}
}

// A lab deployed before emu prepared /run/netns (or by any tool that mounts
// namespaces in a plain directory) is hidden by a later `ip netns add`:
// destroy cannot reach it, so it says so and how to free it, and after that
// it removes it.
func TestDeleteNamespace_HiddenBelowALaterMount_SaysHowToFreeIt(t *testing.T) {
	requireIPNetns(t)
	if !labtest.InPrivateRun(t) {
		return
	}
	lab := labtest.UniqueName()
	name := plan.NamespaceName(lab, "a")
	if err := os.MkdirAll(netnsx.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mountNewNamespace(t, netnsx.Path(name)) // in the plain directory
	other := "other-" + labtest.UniqueName()
	if out, err := exec.Command("ip", "netns", "add", other).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	err := wiring.DeleteNamespace(name)
	var hidden *netnsx.HiddenError
	if !errors.As(err, &hidden) || hidden.Name != name || !strings.Contains(hidden.HowTo(), "umount "+netnsx.Dir) {
		t.Fatalf("DeleteNamespace of a hidden namespace = %v, want a HiddenError that says to umount %s", err, netnsx.Dir)
	}
	if len(labMounts(t, lab)) == 0 {
		t.Fatal("the hidden namespace is not in the mount table: the test proves nothing")
	}
	// Do what the message says.
	if out, err := exec.Command("ip", "netns", "del", other).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	if err := unix.Unmount(netnsx.Dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := wiring.DeleteNamespace(name); err != nil {
		t.Fatalf("DeleteNamespace once uncovered: %v", err)
	}
	if left := labMounts(t, lab); len(left) > 0 {
		t.Errorf("still mounted: %v", left)
	}
}

// requireIPNetns needs iproute2's `ip netns`, the independent witness of
// these tests (busybox's ip, as in the kernel-ESP VM, has no netns).
func requireIPNetns(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%v: %s", err, firstLine(string(out)))
	}
	testenv.Require(t, err, "iproute2's `ip netns` (apt-get install iproute2)")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// mountNewNamespace mounts a new network namespace at path as `ip netns add`
// would, minus the preparation of its directory.
func mountNewNamespace(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread ends up in the new namespace: it stays locked, so the
		// runtime discards it when this goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("mount a new namespace at %s: %v", path, err)
	}
}

// labMounts lists the mounts of the lab's namespaces, visible or hidden.
func labMounts(t *testing.T, lab string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], netnsx.Path("emu-"+lab+"-")) {
			out = append(out, f[4])
		}
	}
	return out
}

// The reviewer saw an old lab's panics in a later lab's logs/: each deploy
// starts empty logs, the previous deploy's kept as logs.1.
func TestDeploy_Redeploy_StartsFreshLogs_KeepsThePreviousAsLogsDot1(t *testing.T) {
	labtest.RequireRoot(t)
	p := planIn(t)
	d := labtest.NewDeployer(t)
	t.Cleanup(func() { d.Destroy(p.Lab, true) })
	const old = "panic: a crash of the previous deploy\n"
	var logged []string
	for deploy := 1; deploy <= 3; deploy++ {
		if err := d.Deploy(context.Background(), p); err != nil {
			t.Fatalf("deploy %d: %v", deploy, err)
		}
		if _, err := d.Destroy(p.Lab, false); err != nil {
			t.Fatal(err)
		}
		if deploy == 1 {
			logs, err := filepath.Glob(filepath.Join(p.LabDir, "logs", "*.log"))
			if err != nil || len(logs) == 0 {
				t.Fatalf("no logs after the first deploy: %v", err)
			}
			for _, l := range logs {
				f, err := os.OpenFile(l, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteString(old)
				f.Close()
				logged = append(logged, filepath.Base(l))
			}
		}
		if deploy == 2 {
			for _, l := range logged {
				now, _ := os.ReadFile(filepath.Join(p.LabDir, "logs", l))
				prev, _ := os.ReadFile(filepath.Join(p.LabDir, "logs.1", l))
				if strings.Contains(string(now), old) || !strings.Contains(string(prev), old) {
					t.Errorf("%s: the first deploy's line is in logs/ (%v) or missing from logs.1/ (%v)", l, strings.Contains(string(now), old), !strings.Contains(string(prev), old))
				}
			}
		}
	}
	// A third deploy keeps one generation: logs.1 is the second's.
	for _, l := range logged {
		if prev, _ := os.ReadFile(filepath.Join(p.LabDir, "logs.1", l)); strings.Contains(string(prev), old) {
			t.Errorf("%s: logs.1 still holds the first deploy's line after a third deploy", l)
		}
	}
}

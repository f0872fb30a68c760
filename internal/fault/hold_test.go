package fault_test

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emu-lab/emu/internal/fault"
)

// A check's hold is exclusive while its process runs, names the holder's
// pid, and is free again once released.
func TestHoldCheck_ExclusiveWhileHeld_FreeAfterRelease(t *testing.T) {
	dir := t.TempDir()
	if _, held, err := fault.CheckHolder(dir, "emu-x-onprem", "to-vpc"); err != nil || held {
		t.Fatalf("no hold taken yet: held %v, %v", held, err)
	}
	h, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc")
	if err != nil {
		t.Fatal(err)
	}
	if pid, held, err := fault.CheckHolder(dir, "emu-x-onprem", "to-vpc"); err != nil || !held || pid != os.Getpid() {
		t.Fatalf("CheckHolder = %d, %v, %v; want this process (%d), held", pid, held, err, os.Getpid())
	}
	// Another connection's hold is another lock.
	other, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc-2")
	if err != nil {
		t.Fatalf("the hold of another connection: %v", err)
	}
	other.Release()
	var he *fault.HeldError
	if _, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc"); !errors.As(err, &he) || he.PID != os.Getpid() {
		t.Fatalf("a second hold while the first is held: %v, want HeldError naming pid %d", err, os.Getpid())
	}
	h.Release()
	if _, held, err := fault.CheckHolder(dir, "emu-x-onprem", "to-vpc"); err != nil || held {
		t.Fatalf("after Release: held %v, %v", held, err)
	}
	h, err = fault.HoldCheck(dir, "emu-x-onprem", "to-vpc")
	if err != nil {
		t.Fatalf("hold again after Release: %v", err)
	}
	h.Release()
}

// A process SIGKILLed while it holds a check's fault releases it: the
// kernel drops the lock, so its table reads as left over.
func TestHoldCheck_HolderKilled_HoldFree(t *testing.T) {
	if dir := os.Getenv("EMU_TEST_HOLD_DIR"); dir != "" {
		// The child: hold, say so, wait to be killed.
		if _, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc"); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("held\n")
		select {}
	}
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^TestHoldCheck_HolderKilled_HoldFree$")
	child.Env = append(os.Environ(), "EMU_TEST_HOLD_DIR="+dir)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "held\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	if pid, held, err := fault.CheckHolder(dir, "emu-x-onprem", "to-vpc"); err != nil || !held || pid != child.Process.Pid {
		t.Fatalf("while the child holds it: CheckHolder = %d, %v, %v; want pid %d, held", pid, held, err, child.Process.Pid)
	}
	var he *fault.HeldError
	if _, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc"); !errors.As(err, &he) {
		t.Fatalf("hold while the child holds it: %v, want HeldError", err)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if _, held, err := fault.CheckHolder(dir, "emu-x-onprem", "to-vpc"); err != nil || held {
		t.Fatalf("after SIGKILL: held %v, %v; want free", held, err)
	}
	h, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc")
	if err != nil {
		t.Fatalf("hold after the holder was killed: %v", err)
	}
	h.Release()
}

// A hold released with no route recorded removes its lock file; one with
// routes recorded (a check whose restore did not happen) keeps it, and the
// next holder takes the record over until it forgets it.
func TestHoldCheck_FileRemovedOnCleanRelease_KeptWhileRoutesRecorded(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "faults", "emu-x-onprem.to-vpc.check")
	h, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc")
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after a clean release: %v, want it gone", err)
	}
	route := fault.CheckRoute{Node: "vpc", Namespace: "emu-x-vpc", Dst: netip.MustParsePrefix("10.1.0.0/24"), Via: netip.MustParseAddr("172.16.1.10"), Metric: 10, Gateway: "vpngw", By: "onprem:to-vpc"}
	if h, err = fault.HoldCheck(dir, "emu-x-onprem", "to-vpc"); err != nil {
		t.Fatal(err)
	}
	if err := h.RecordRoutes([]fault.CheckRoute{route}); err != nil {
		t.Fatal(err)
	}
	h.Release()
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), `"dst":"10.1.0.0/24"`) {
		t.Fatalf("lock file after a release with a route recorded: %q, %v; want the route in it", data, err)
	}
	if h, err = fault.HoldCheck(dir, "emu-x-onprem", "to-vpc"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if want := fmt.Sprintf("%d\n", os.Getpid()); !strings.HasPrefix(string(data), want) || !strings.Contains(string(data), `"via":"172.16.1.10"`) {
		t.Fatalf("lock file of the next holder: %q, want its pid, then the route still recorded", data)
	}
	if err := h.ForgetRoutes(); err != nil {
		t.Fatal(err)
	}
	h.Release()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file after the record was forgotten: %v, want it gone", err)
	}
}

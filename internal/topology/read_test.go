package topology_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
)

// loadBoth runs the two readers of a topology file, Load and LabName, and
// returns their errors: both must refuse the same inputs.
func loadBoth(t *testing.T, path string) []error {
	t.Helper()
	done := make(chan []error, 1)
	go func() {
		_, lerr := topology.Load(path, nodes.Default())
		_, nerr := topology.LabName(path)
		done <- []error{lerr, nerr}
	}()
	select {
	case errs := <-done:
		return errs
	case <-time.After(10 * time.Second):
		t.Fatalf("reading %s still blocks after 10s", path)
		return nil
	}
}

func wantRefused(t *testing.T, path string, errs []error, words ...string) {
	t.Helper()
	for i, err := range errs {
		var te *topology.Error
		if !errors.As(err, &te) {
			t.Fatalf("reader %d on %s: error %v is not a *topology.Error (exit 2)", i, path, err)
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("reader %d on %s: %q does not say %q", i, path, err, w)
			}
		}
	}
}

func TestLoad_DevZero_RefusedAsNotARegularFile(t *testing.T) {
	wantRefused(t, "/dev/zero", loadBoth(t, "/dev/zero"), "/dev/zero", "not a regular file", "character device")
}

func TestLoad_FIFO_RefusedWithoutWaitingForAWriter(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "lab.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, fifo, loadBoth(t, fifo), "not a regular file", "FIFO")
}

func TestLoad_Directory_Refused(t *testing.T) {
	dir := t.TempDir()
	wantRefused(t, dir, loadBoth(t, dir), "not a regular file", "directory")
}

func TestLoad_OverSizeLimit_Refused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lab.yaml")
	// A valid start, so only the size can be the reason.
	head := "name: big\ntopology:\n  nodes:\n    a: {kind: host}\n"
	pad := strings.Repeat("# padding\n", topology.MaxFileSize/10+1)
	if err := os.WriteFile(path, []byte(head+pad), 0o600); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, path, loadBoth(t, path), "over the limit of 1048576 bytes")
}

func TestLoad_AtSizeLimit_Accepted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lab.yaml")
	head := "name: big\ntopology:\n  nodes:\n    a: {kind: host}\n"
	pad := strings.Repeat("#", topology.MaxFileSize-len(head)-1) + "\n"
	if err := os.WriteFile(path, []byte(head+pad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Load(path, nodes.Default()); err != nil {
		t.Fatalf("Load of a %d-byte file: %v", topology.MaxFileSize, err)
	}
	if name, err := topology.LabName(path); err != nil || name != "big" {
		t.Fatalf("LabName = %q, %v", name, err)
	}
}

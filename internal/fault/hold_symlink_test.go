package fault_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/emu-lab/emu/internal/fault"
)

// The lab directory's files are never written through a symlink (SPEC §12,
// package safefile): a check's hold file made a symlink must not truncate
// or write the file it points to.
func TestHoldCheck_SymlinkInTheFaultsDirectory_NotFollowed(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("precious data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "faults"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "faults", "emu-x-onprem.to-vpc.check")); err != nil {
		t.Fatal(err)
	}
	h, err := fault.HoldCheck(dir, "emu-x-onprem", "to-vpc")
	if err == nil {
		h.Release()
	}
	got, _ := os.ReadFile(victim)
	if string(got) != "precious data\n" {
		t.Fatalf("HoldCheck through a symlink (err %v) rewrote the file it points to: %q", err, got)
	}
}

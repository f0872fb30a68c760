package safefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A FIFO planted at a state file's name once hung `emu check` for good
// (SIGTERM could not stop it, blocked in open): it must fail at once.
func TestReadFile_FIFO_RefusedWithoutWaitingForAWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vbr.state.json")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadFile(path); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("a FIFO must be refused as not a regular file, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFile blocked on a FIFO")
	}
}

func TestReadFile_Symlink_RefusedNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "onprem.state.json")
	if err := os.WriteFile(target, []byte(`{"pid":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "vbr.state.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if data, err := ReadFile(link); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("a symlink must be refused, got %q, %v", data, err)
	}
}

func TestReadFile_RegularAndMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.json")
	if _, err := ReadFile(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing file's error must match fs.ErrNotExist, got %v", err)
	}
	if err := os.WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if data, err := ReadFile(path); err != nil || string(data) != "{}" {
		t.Fatalf("got %q, %v", data, err)
	}
}

func TestReadFile_OverTheBound_Refused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(MaxRead + 1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	f.Close()
	if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), "over 64 MiB") {
		t.Fatalf("a file over MaxRead must be refused, got %v", err)
	}
}

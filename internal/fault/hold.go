package fault

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A check's fault (ByCheck) is held by the check while it runs: a write
// lock on <lab dir>/faults/<namespace>.<connection>.check. The kernel drops
// the lock when the holder's process ends, however it ends (SIGKILL, a CI
// runner's kill), so a check table with no lock held was left by a check
// that did not finish, and nothing names a pid that could be reused. The
// lock is an open file description lock (fcntl(2) F_OFD_SETLK), not the
// flock the lab store takes, because F_OFD_GETLK tests it without taking
// it: `emu fault` and `emu inspect` looking never make a starting check
// fail. The file holds the holder's pid, only to name it to the user; it
// stays after the check (the lab directory's cleanup removes it), since
// unlinking a lock file races with its next taker.

// CheckHold is a process's hold on the check fault of one connection: while
// it is held, no other process removes that fault as left over.
type CheckHold struct{ f *os.File }

// HeldError says a running `emu check --failover` holds the check fault of
// a connection.
type HeldError struct {
	Conn string
	PID  int // the holder's, as it wrote it; 0 if not written yet
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("connection %s is held by an `emu check --failover` running now (%s): it removes its fault when it ends", e.Conn, e.Holder())
}

// Holder names the holding process: "pid N", or "pid unknown".
func (e *HeldError) Holder() string { return pidText(e.PID) }

func pidText(pid int) string {
	if pid <= 0 {
		return "pid unknown"
	}
	return "pid " + strconv.Itoa(pid)
}

func holdPath(dir, ns, conn string) string {
	return filepath.Join(dir, "faults", ns+"."+conn+".check")
}

// HoldCheck takes the hold on the check fault of conn in namespace ns of the
// lab whose directory is dir, without waiting: *HeldError if a running
// process holds it.
func HoldCheck(dir, ns, conn string) (*CheckHold, error) {
	if dir == "" {
		return nil, fmt.Errorf("hold the check's fault of %s in %s: no lab directory to hold it in", conn, ns)
	}
	path := holdPath(dir, ns, conn)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("hold the check's fault of %s: %w", conn, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hold the check's fault of %s: %w", conn, err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, &HeldError{Conn: conn, PID: readPID(path)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &CheckHold{f}, nil
}

// Release lets the hold go; the kernel does the same when the process ends.
func (h *CheckHold) Release() {
	if h != nil {
		h.f.Close()
	}
}

// CheckHolder returns the pid of the running process holding the check
// fault of conn in ns (0 if it has not written it yet), and whether one
// holds it at all: false means a check table there was left by a check
// that did not finish.
func CheckHolder(dir, ns, conn string) (pid int, held bool, err error) {
	if dir == "" {
		return 0, false, nil
	}
	path := holdPath(dir, ns, conn)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read the hold on the check's fault of %s: %w", conn, err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return 0, false, fmt.Errorf("test the lock %s: %w", path, err)
	}
	if lk.Type == unix.F_UNLCK {
		return 0, false, nil
	}
	return readPID(path), true, nil
}

func readPID(path string) int {
	data, _ := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// RemoveLeftCheck removes the check fault of conn in ns (table
// emu-check-<conn>) if no running check holds it: one that did not finish
// left it. It reports whether there was one to remove; a fault a running
// check holds is kept, with *HeldError. The hold is taken for the removal,
// so a check never breaks the connection in the middle of it: one starting
// meanwhile finds the hold taken and does not run its failover.
func RemoveLeftCheck(dir, ns, conn string) (bool, error) {
	h, err := HoldCheck(dir, ns, conn)
	if err != nil {
		return false, err
	}
	defer h.Release()
	left, err := TunnelBrokenBy(ByCheck, ns, conn)
	if err != nil || !left {
		return false, err
	}
	return true, TunnelUpBy(ByCheck, ns, conn)
}

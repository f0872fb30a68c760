package netnsx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ID is the identity of a namespace: the device and inode number of its
// nsfs file, as stat(2) shows them for /proc/<pid>/ns/<kind> and for a bind
// mount of it such as /run/netns/<name> (namespaces(7), "The /proc/[pid]/ns/
// directory": two processes are in the same namespace iff these match). A
// name can be given to another namespace; an ID names one namespace for as
// long as it lives.
type ID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func (id ID) String() string { return fmt.Sprintf("nsfs inode %d (device %d)", id.Ino, id.Dev) }

// IdentityOf returns the ID of the namespace at path (/run/netns/<name>,
// /proc/<pid>/ns/mnt...); an error wrapping fs.ErrNotExist if nothing is
// there.
func IdentityOf(path string) (ID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return ID{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// IdentityOfFD returns the ID of the namespace an open descriptor refers to.
func IdentityOfFD(fd int) (ID, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return ID{}, fmt.Errorf("stat namespace descriptor: %w", err)
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// Processes returns the pids of the processes whose namespace of kind
// ("net", "mnt": the names in /proc/<pid>/ns/) is id. A process that exits
// while it is read is skipped.
func Processes(kind string, id ID) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := IdentityOf(filepath.Join("/proc", e.Name(), "ns", kind)); err == nil && got == id {
			out = append(out, pid)
		}
	}
	return out
}

// killTimeout bounds KillAll: SIGKILL cannot be caught, so only a process
// stuck in the kernel (D state) outlasts it.
const killTimeout = 3 * time.Second

// KillAll kills every process in the namespace of kind that id names, again
// until none is left (one may fork while it is killed), so that nothing,
// not even a process that left its parent's session and process group,
// keeps the namespace alive. It refuses the namespace of the host (pid 1's)
// or of emu itself: an ID that matches those is a damaged record, not a lab.
func KillAll(kind string, id ID) error {
	own, err := IdentityOf("/proc/self/ns/" + kind)
	if err != nil {
		return fmt.Errorf("refusing to kill the processes of %s namespace %s: cannot read emu's own to tell them apart: %w", kind, id, err)
	}
	// pid 1's may be unreadable (a sandbox's init): emu's own is then the
	// host's as far as emu can tell.
	host, err := IdentityOf("/proc/1/ns/" + kind)
	if own == id || (err == nil && host == id) {
		return fmt.Errorf("refusing to kill the processes of %s namespace %s: it is the host's or emu's own, not a lab's", kind, id)
	}
	deadline := time.Now().Add(killTimeout)
	for {
		pids := Processes(kind, id)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v are still in %s namespace %s after SIGKILL (stuck in the kernel?): see `ps -o pid,stat,wchan,cmd -p %d`", pids, kind, id, pids[0])
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill process %d in %s namespace %s: %w", pid, kind, id, err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// HalfMade reports whether path is an empty regular file with no namespace
// mounted on it: what naming a namespace leaves when its maker is killed
// between creating the mount-point file and bind-mounting the namespace on
// it (as emu and `ip netns add` both do, in that order). A mounted
// namespace is on nsfs (statfs(2) f_type NSFS_MAGIC); anything else there,
// or an error reading it, is not half made.
func HalfMade(path string) bool {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false
	}
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type != unix.NSFS_MAGIC
}

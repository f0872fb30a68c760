package software

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/topology"
)

// EtcNetns is where `ip netns exec` finds a namespace's own /etc files: each
// entry of /etc/netns/<namespace>/ is bind-mounted over /etc/<entry>.
const EtcNetns = "/etc/netns"

// Mounts makes the calling thread's mount namespace (already private to it,
// with private propagation) look like the node's: /sys remounted so it shows
// the node's network namespace, /etc/netns/<ns>/* over /etc as `ip netns exec`
// does, a private tmpfs on /run if privateRun (pid files and control sockets
// of one node's daemons never meet another's), then the binds in order.
func Mounts(ns string, binds []topology.Bind, privateRun bool) error {
	// A fresh sysfs reflects the network namespace of whoever mounts it.
	if err := unix.Unmount("/sys", unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount the host's /sys: %w", err)
	}
	if err := unix.Mount(ns, "/sys", "sysfs", 0, ""); err != nil {
		return fmt.Errorf("mount sysfs of %s on /sys: %w", ns, err)
	}
	if err := etcNetns(ns); err != nil {
		return err
	}
	if privateRun {
		if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
			return fmt.Errorf("mount a private /run: %w", err)
		}
	}
	for _, b := range binds {
		if err := bind(b); err != nil {
			return err
		}
	}
	return nil
}

func etcNetns(ns string) error {
	dir := filepath.Join(EtcNetns, ns)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		src, dst := filepath.Join(dir, e.Name()), filepath.Join("/etc", e.Name())
		if _, err := os.Stat(dst); err != nil {
			continue // ip netns exec skips what /etc lacks, too
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", src, dst, err)
		}
	}
	return nil
}

// bind mounts one bind; a missing mount point is made only under /run, the
// node's own tmpfs: elsewhere it would change the host's file system.
func bind(b topology.Bind) error {
	what := fmt.Sprintf("bind %s:%s", b.Host, b.Node)
	src, err := os.Stat(b.Host)
	if err != nil {
		return fmt.Errorf("%s: %w (restore the host path)", what, err)
	}
	if _, err := os.Stat(b.Node); errors.Is(err, os.ErrNotExist) {
		if !strings.HasPrefix(b.Node, "/run/") {
			return fmt.Errorf("%s: %s does not exist in the node: bind onto an existing path, or under /run (the node's own)", what, b.Node)
		}
		if err := mountPoint(b.Node, src.IsDir()); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := unix.Mount(b.Host, b.Node, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if b.ReadOnly {
		if err := unix.Mount("", b.Node, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("%s: make it read-only: %w", what, err)
		}
	}
	return nil
}

func mountPoint(path string, dir bool) error {
	if dir {
		return os.MkdirAll(path, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// Enter switches the calling thread, locked and never handed back, to a
// node's view for a command it then execs: the keeper's mount namespace
// (keeperPID > 0), or a mount namespace of its own made like the keeper's
// but without a private /run (a node without software), and the node's
// network namespace.
func Enter(netnsPath string, ns string, keeperPID int) error {
	runtime.LockOSThread()
	// A thread sharing its file-system context with the process's other
	// threads may not change mount namespace.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare the file-system context: %w", err)
	}
	// Opened first: the keeper's private /run hides /run/netns.
	netFD, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", ns, err)
	}
	defer unix.Close(netFD)
	if keeperPID > 0 {
		if err := setns(fmt.Sprintf("/proc/%d/ns/mnt", keeperPID), unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("enter the mount namespace of node %s: %w", ns, err)
		}
	}
	if err := unix.Setns(netFD, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	if keeperPID > 0 {
		return nil
	}
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("new mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	return Mounts(ns, nil, false)
}

func setns(path string, kind int) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Setns(fd, kind)
}

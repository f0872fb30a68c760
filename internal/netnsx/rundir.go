package netnsx

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Handling of Dir itself. iproute2's `ip netns add` (ip/ipnetns.c:
// create_netns_dir and the MS_SHARED|MS_REC loop in netns_add) first makes
// /run/netns a shared mount point; when it is not one yet, it bind-mounts
// /run/netns over itself. A namespace someone mounted in /run/netns before
// then stays mounted on the directory below that new mount: unreachable by
// its path, impossible to unlink ("device or resource busy"), and leaked.
// PrepareDir does what iproute2 does before emu mounts its first namespace,
// so a later `ip netns add` finds a shared mount point and mounts nothing
// over it.

var prepared struct {
	sync.Mutex
	done bool
}

// PrepareDir creates Dir and makes it a shared mount point (bind-mounting it
// over itself if it is none), as `ip netns add` does. It does nothing once it
// succeeded in this process. If Dir is not a mount point but already holds
// namespace mounts (made by an emu without PrepareDir, or another tool), it
// leaves Dir alone: a mount over them would hide them.
func PrepareDir() error {
	prepared.Lock()
	defer prepared.Unlock()
	if prepared.done {
		return nil
	}
	// Two emu processes preparing a fresh Dir at once would both see it is no
	// mount point and stack two mounts, the second hiding what the first
	// process mounted in between: a host-wide lock (on Dir's parent, which
	// creates no file) makes the second find the work done.
	parent, err := os.Open(filepath.Dir(Dir))
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(Dir), err)
	}
	defer parent.Close()
	if err := unix.Flock(int(parent.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", filepath.Dir(Dir), err)
	}
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w (emu needs root and a writable /run)", Dir, err)
	}
	for bound := false; ; bound = true {
		err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("prepare %s for named namespaces as iproute2 does: mount --make-rshared: %w (emu needs root and a writable /run)", Dir, err)
		}
		// EINVAL: Dir is not a mount point.
		under, err := mountsUnder(Dir)
		if err != nil {
			return err
		}
		if len(under) > 0 {
			// Leave it as it is: no worse than before.
			break
		}
		if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("prepare %s for named namespaces as iproute2 does: mount --rbind on itself: %w (emu needs root and a writable /run)", Dir, err)
		}
	}
	prepared.done = true
	return nil
}

// mountsUnder lists the mounts made on entries of dir, as reached by its
// path: those whose parent is the mount holding dir. The mount table also
// lists mounts that later mounts hide, such as the host's under a private
// tmpfs on /run; those do not count.
func mountsUnder(dir string) ([]*mountinfo.Info, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, dir, 0, unix.STATX_MNT_ID, &stx); err != nil {
		return nil, fmt.Errorf("statx %s: %w", dir, err)
	}
	prefix := filepath.Clean(dir) + "/"
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return uint64(i.Parent) != stx.Mnt_id || !strings.HasPrefix(i.Mountpoint, prefix), false
	})
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	return ms, nil
}

// HiddenError says a namespace is still mounted at Path(Name) but below a
// later mount of Dir over itself, where no path reaches it.
type HiddenError struct {
	Name  string
	Cover string // mount point of the covering mount: Dir
}

func (e *HiddenError) Error() string {
	return fmt.Sprintf("namespace %s stays mounted at %s below a later mount of %s over itself, where no path reaches it", e.Name, Path(e.Name), e.Cover)
}

// HowTo says how to free namespaces hidden this way: once for all of them.
func (e *HiddenError) HowTo() string {
	return fmt.Sprintf("`ip netns add` mounts %s over itself when it is not yet a mount point, hiding the namespaces mounted there before: once no other namespace in `ip netns list` is in use, run `umount %s` (it unmounts those too) and destroy again; a reboot also frees them",
		e.Cover, e.Cover)
}

// Hidden returns a *HiddenError if the named namespace is still mounted at
// its path although the path no longer shows it, and nil otherwise.
func Hidden(name string) error {
	path := Path(name)
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil {
		return fmt.Errorf("read the mount table: %w", err)
	}
	if len(ms) == 0 {
		return nil
	}
	if visible, err := mountinfo.Mounted(path); err == nil && visible {
		return nil
	}
	return &HiddenError{Name: name, Cover: Dir}
}

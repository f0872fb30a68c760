// Package netnsx runs code inside a named network namespace.
//
// A Linux network namespace belongs to a thread, not a process, so every switch
// happens on a locked OS thread that is switched back before it is released.
// Sockets and netlink handles opened inside keep their namespace after the
// switch back, so callers open them here and use them from any goroutine.
package netnsx

import (
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
)

// Dir is where named namespaces are bind-mounted, as iproute2 expects them.
const Dir = "/run/netns"

// Path returns the bind-mount path of the named namespace.
func Path(name string) string { return filepath.Join(Dir, name) }

// Do runs fn on an OS thread switched into the named namespace.
func Do(name string, fn func() error) error {
	target, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open network namespace %q: %w", name, err)
	}
	defer target.Close()
	return DoHandle(target, fn)
}

// DoHandle runs fn on an OS thread switched into the namespace target.
func DoHandle(target netns.NsHandle, fn func() error) error {
	runtime.LockOSThread()
	origin, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("read current network namespace: %w", err)
	}
	defer origin.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace: %w", err)
	}
	fnErr := fn()
	if err := netns.Set(origin); err != nil {
		// The thread is stuck in the wrong namespace: leave it locked so the
		// runtime discards it when this goroutine ends.
		return fmt.Errorf("return to original network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

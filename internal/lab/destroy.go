package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/wiring"
)

// Destroy removes every object recorded for the lab and its record. A lab that
// is not deployed is not an error: destroy can run any number of times.
// cleanup also removes the lab directory.
func (d *Deployer) Destroy(lab string, cleanup bool) (found bool, err error) {
	unlock, err := d.Store.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	rec, err := d.Store.Get(lab)
	if err != nil || rec == nil {
		return false, err
	}
	start := time.Now()
	d.progress(Event{Stage: "destroy", Index: 1, Of: 1, Count: len(rec.Nodes)})
	if err := d.undo(lab, cleanup); err != nil {
		return true, err
	}
	if cleanup {
		if err := removeLabDir(rec.Dir); err != nil {
			return true, err
		}
	}
	d.progress(Event{Stage: "destroy", Index: 1, Of: 1, Count: len(rec.Nodes), Done: true, Elapsed: time.Since(start)})
	return true, nil
}

// undo removes the journalled objects, newest first, then the record. It
// keeps going past a failure so one stuck object does not strand the rest.
// The lab directory holds the user's artifacts (logs, captures), so it goes
// only on rollback or when asked.
func (d *Deployer) undo(lab string, removeDir bool) error {
	entries, err := d.Store.readJournal(lab)
	if err != nil {
		return fmt.Errorf("read journal of lab %s: %w", lab, err)
	}
	var errs error
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		switch e.Kind {
		case "agent":
			errs = errors.Join(errs, stopAgent(e.Name))
		case "container":
			errs = errors.Join(errs, d.removeContainer(e.Name))
		case "netns":
			errs = errors.Join(errs, wiring.DeleteNamespace(e.Name))
		case "dir":
			if removeDir {
				errs = errors.Join(errs, removeLabDir(e.Name))
			}
		default:
			errs = errors.Join(errs, fmt.Errorf("journal of lab %s names an unknown object %q: remove it by hand", lab, e.Kind))
		}
	}
	if errs != nil {
		return errs
	}
	return d.Store.remove(lab)
}

// removeLabDir refuses anything that does not look like a lab directory, so a
// damaged record can never make emu delete a user's files.
func removeLabDir(dir string) error {
	if !filepath.IsAbs(dir) || !strings.HasPrefix(filepath.Base(dir), "emu-") {
		return fmt.Errorf("refusing to remove %q: not an emu lab directory", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove lab directory: %w", err)
	}
	return nil
}

// removeContainer removes a container node and its namespace link. If no
// engine answers, the lab's record stays, so destroy can run again once
// Docker is back.
func (d *Deployer) removeContainer(name string) error {
	rt, err := d.containers()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return rt.Remove(ctx, name)
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/safefile"
	"github.com/emu-lab/emu/internal/wiring"
)

// Destroy removes every object recorded for the lab and its record, whatever
// file deployed it (destroy --all). A lab that is not deployed is not an
// error: destroy can run any number of times. cleanup also removes the lab
// directory.
func (d *Deployer) Destroy(lab string, cleanup bool) (found bool, err error) {
	rep, err := d.destroy(lab, "", "", cleanup)
	return rep.Found, err
}

// DestroyReport says what a destroy did, for the user.
type DestroyReport struct {
	Found    bool   // the lab had a record, so its objects were removed
	Topology string // the file that deployed it (when Found)
	LabDir   string // its lab directory, "" if there is none
	// DirRemoved: the lab directory was removed (cleanup); otherwise it is
	// kept, with its logs, captures and keys.
	DirRemoved bool
	// NotEmu: with cleanup, the lab directory was kept because emu did not
	// create it (no MarkerFile); the files the deploy wrote into it went.
	NotEmu bool
}

// OtherFileError refuses to act on a lab that another topology file with
// the same `name:` deployed: destroy, or (Command) a command that would
// judge or change the lab by a file that does not describe it.
type OtherFileError struct {
	Record  *Record
	File    string
	Command string // the emu command refused, as typed ("check", "fault tunnel down"); "" is destroy
}

func (e *OtherFileError) Error() string {
	r := e.Record
	if e.Command == "" {
		return fmt.Sprintf("lab %q was deployed from %s, not from %s (both name it %q): destroy it with `emu destroy -t %s`; its lab directory %s holds its keys",
			r.Name, r.Topology, e.File, r.Name, r.Topology, r.Dir)
	}
	if !exists(r.Topology) {
		return fmt.Sprintf("lab %q was deployed from %s, which is gone, not from %s (both name it %q): emu %s acts on a lab only through the file that deployed it: destroy the lab with `emu destroy -t %s`, then deploy this file",
			r.Name, r.Topology, e.File, r.Name, e.Command, e.File)
	}
	return fmt.Sprintf("lab %q was deployed from %s, not from %s (both name it %q): emu %s acts on a lab only through the file that deployed it: give it `-t %s`",
		r.Name, r.Topology, e.File, r.Name, e.Command, r.Topology)
}

// DestroyFrom destroys the lab that the topology file deployed, refusing
// (with *OtherFileError) a lab of that name deployed from another file that
// still exists. labDir is the file's lab directory: with cleanup it is
// removed even when the lab is not deployed (after a reboot emptied /run, or
// after a destroy without cleanup), since it holds keys.
func (d *Deployer) DestroyFrom(topology, lab, labDir string, cleanup bool) (DestroyReport, error) {
	return d.destroy(lab, topology, labDir, cleanup)
}

func (d *Deployer) destroy(lab, topology, labDir string, cleanup bool) (DestroyReport, error) {
	rep := DestroyReport{LabDir: labDir}
	unlock, err := d.Store.lock()
	if err != nil {
		return rep, err
	}
	defer unlock()
	rec, err := d.Store.Get(lab)
	if err != nil {
		return rep, err
	}
	if rec == nil {
		if labDir == "" || !exists(labDir) {
			rep.LabDir = ""
			return rep, nil
		}
		if cleanup {
			if err := removeMarkedLabDir(labDir); err != nil {
				return rep, err
			}
			rep.DirRemoved = true
		}
		return rep, nil
	}
	if topology != "" && rec.Topology != topology && exists(rec.Topology) {
		return rep, &OtherFileError{Record: rec, File: topology}
	}
	rep.Found, rep.Topology, rep.LabDir = true, rec.Topology, rec.Dir
	start := time.Now()
	d.progress(Event{Stage: "destroy", Index: 1, Of: 1, Count: len(rec.Nodes)})
	if err := d.undo(lab, cleanup); err != nil {
		return rep, err
	}
	if cleanup {
		// undo removed what the deploy made, the lab directory too if it
		// created it; a directory it reused keeps what the user put there.
		var notEmu *NotEmuDirError
		switch err := removeMarkedLabDir(rec.Dir); {
		case errors.As(err, &notEmu):
			rep.NotEmu = true
		case err != nil:
			return rep, err
		default:
			rep.DirRemoved = true
		}
	} else if !exists(rec.Dir) {
		rep.LabDir = ""
	}
	d.progress(Event{Stage: "destroy", Index: 1, Of: 1, Count: len(rec.Nodes), Done: true, Elapsed: time.Since(start)})
	return rep, nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// undo removes the journalled objects, newest first, then the record. It
// keeps going past a failure so one stuck object does not strand the rest.
// The lab directory holds the user's artifacts (logs, captures), so it and
// the files written into it go only on rollback or when asked.
func (d *Deployer) undo(lab string, removeDir bool) error {
	entries, err := d.Store.readJournal(lab)
	if err != nil {
		return fmt.Errorf("read journal of lab %s: %w", lab, err)
	}
	netIDs := namespaceIDs(entries)
	mntIDs := map[string]netnsx.ID{}
	for _, e := range entries {
		if e.Kind == "mntns" && e.ID != nil {
			mntIDs[e.Name] = *e.ID
		}
	}
	// in is the network namespace an agent or keeper runs in: the one emu
	// made, else (a container's) the one of that name now.
	in := func(e Entry) *netnsx.ID {
		if id, ok := netIDs[e.Netns]; ok {
			return &id
		}
		if e.Netns == "" {
			return nil // journalled by an emu that did not record it
		}
		return currentNS(e.Netns)
	}
	// First every process the lab started, newest first: agents and
	// keepers are asked to stop, then whatever is still in a namespace the
	// deploy made is killed. Only then go the files, so no process of the
	// lab still writes into the directories removed below (a worker its
	// supervisor restarted while it was being stopped, say).
	var errs error
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		switch e.Kind {
		case "agent":
			errs = errors.Join(errs, stopAgent(e.Name, in(e)))
		case "software":
			// Found by its unique config path, as agents are; a keeper
			// stops its daemons before it exits; what a killed keeper left
			// goes next, then whatever still holds the node's mount
			// namespace (a daemon's child in a session of its own).
			errs = errors.Join(errs, stopAgent(e.Name, in(e)), stopOrphans(e.Name))
			if id, ok := mntIDs[e.Name]; ok {
				errs = errors.Join(errs, netnsx.KillAll("mnt", id))
			}
		}
	}
	for name, id := range netIDs {
		if checkNamespace(name, id) == nil { // an impostor is named below
			errs = errors.Join(errs, netnsx.KillAll("net", id))
		}
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		switch e.Kind {
		case "agent", "software":
			// Stopped above.
		case "mntns":
			// An identity, for "software": nothing of its own to remove.
		case "container":
			errs = errors.Join(errs, d.removeContainer(e.Name))
		case "netns":
			errs = errors.Join(errs, removeNamespace(e))
		case "file":
			// A temporary file is no artifact: a writer killed mid-write
			// (agent, keeper) left it.
			if removeDir || strings.HasSuffix(e.Name, safefile.TmpPath("")) {
				if err := os.Remove(e.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = errors.Join(errs, fmt.Errorf("remove %s: %w", e.Name, err))
				}
			}
		case "dir":
			if removeDir {
				errs = errors.Join(errs, removeLabDir(e.Name))
			}
		default:
			errs = errors.Join(errs, fmt.Errorf("journal of lab %s names an unknown object %q: remove it by hand", lab, e.Kind))
		}
	}
	var hidden *netnsx.HiddenError
	if errors.As(errs, &hidden) {
		errs = errors.Join(errs, errors.New(hidden.HowTo()))
	}
	if errs != nil {
		return errs
	}
	return d.Store.remove(lab)
}

// removeNamespace removes a network namespace the lab's deploy made, and
// first kills every process still in it, whatever its session, process
// group or parent, so none holds it on after its name is gone. A namespace
// that took the name since is refused (*ImpostorError) and left as it is.
func removeNamespace(e Entry) error {
	if e.ID == nil {
		// Journalled by an emu that recorded no identity: by name, as it did.
		return wiring.DeleteNamespace(e.Name)
	}
	if err := checkNamespace(e.Name, *e.ID); err != nil {
		return err
	}
	// Also when the name is gone: a process may still hold the namespace.
	if err := netnsx.KillAll("net", *e.ID); err != nil {
		return fmt.Errorf("namespace %s: %w", e.Name, err)
	}
	return wiring.DeleteNamespace(e.Name)
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

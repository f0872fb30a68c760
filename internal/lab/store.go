// Package lab deploys a plan, records every object as it creates it, and
// destroys exactly what was recorded: after a failure, after Ctrl-C, or after
// the deploying process was killed.
package lab

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/safefile"
)

// DefaultStateDir holds the records of deployed labs. It is on tmpfs on
// purpose: namespaces do not survive a reboot, so neither should records.
const DefaultStateDir = "/run/emu/labs"

// Store is the directory of lab records.
type Store struct{ Dir string }

// Record is what emu knows of a deployed lab without its topology file.
type Record struct {
	Name     string `json:"name"`
	Topology string `json:"topology"`
	// TopologySHA256 is the hex SHA-256 of the topology text deployed,
	// kept beside the record (Store.Source): a command that finds the file
	// no longer hashes to it says the file changed since deploy.
	TopologySHA256 string      `json:"topology_sha256,omitempty"`
	Dir            string      `json:"lab_dir"`
	Nodes          []plan.Node `json:"nodes"`
	Started        time.Time   `json:"started"`
	Complete       bool        `json:"complete"` // false while deploying, or after a crash mid-deploy
}

// Node returns the named node of the lab, the zero Node if it has none.
func (r *Record) Node(name string) plan.Node {
	for _, n := range r.Nodes {
		if n.Name == name {
			return n
		}
	}
	return plan.Node{}
}

// Entry is one object a deploy created, in creation order.
type Entry struct {
	Kind string `json:"kind"` // "netns", "container", "agent", "software", "mntns", "dir" or "file"
	Name string `json:"name"`
	// ID is the identity of a namespace emu made: of "netns" Name, recorded
	// before the namespace gets its name; of the mount namespace of the
	// keeper whose config is "mntns" Name, recorded once it runs. Destroy
	// removes and empties only the namespace with this identity.
	ID *netnsx.ID `json:"id,omitempty"`
	// Netns is the namespace an "agent" or "software" (keeper) runs in:
	// destroy stops only a process with its config path in that namespace.
	Netns string `json:"netns,omitempty"`
}

func (s Store) recordPath(lab string) string  { return filepath.Join(s.Dir, lab+".json") }
func (s Store) journalPath(lab string) string { return filepath.Join(s.Dir, lab+".journal") }
func (s Store) sourcePath(lab string) string  { return filepath.Join(s.Dir, lab+".topology") }

// Source returns the topology text the lab was deployed from, nil for a
// lab an emu that kept none deployed. The file is root's, mode 0600: a
// topology may hold pre-shared keys.
func (s Store) Source(lab string) ([]byte, error) {
	data, err := safefile.ReadFile(s.sourcePath(lab))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the deployed topology of lab %s: %w", lab, err)
	}
	return data, nil
}

// lock serialises deploys and destroys on this host. The kernel drops the
// lock when its holder dies, so a killed deploy never blocks a destroy.
func (s Store) lock() (unlock func(), err error) {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", s.Dir, err)
	}
	f, err := os.Open(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("open state directory %s: %w", s.Dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", s.Dir, err)
	}
	return func() { f.Close() }, nil
}

// Get returns the record of a lab, or nil if it is not deployed.
func (s Store) Get(lab string) (*Record, error) {
	data, err := safefile.ReadFile(s.recordPath(lab))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read record of lab %s: %w", lab, err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("record %s is damaged (%v): remove it by hand after checking `ip netns`", s.recordPath(lab), err)
	}
	return &r, nil
}

// All returns the records of every deployed lab, sorted by name.
func (s Store) All() ([]*Record, error) {
	names, err := filepath.Glob(filepath.Join(s.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, n := range names {
		r, err := s.Get(strings.TrimSuffix(filepath.Base(n), ".json"))
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s Store) put(r *Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.recordPath(r.Name) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write record of lab %s: %w", r.Name, err)
	}
	return os.Rename(tmp, s.recordPath(r.Name))
}

func (s Store) remove(lab string) error {
	for _, p := range []string{s.journalPath(lab), s.sourcePath(lab), s.recordPath(lab)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// journal appends entries as objects are created. Each line is written with
// one write(2) before the object exists, so a kill -9 at any point leaves a
// journal that names everything that might exist.
type journal struct {
	mu sync.Mutex
	f  *os.File
}

func (s Store) openJournal(lab string) (*journal, error) {
	f, err := os.OpenFile(s.journalPath(lab), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open journal of lab %s: %w", lab, err)
	}
	return &journal{f: f}, nil
}

func (j *journal) add(e Entry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("record %s %s: %w", e.Kind, e.Name, err)
	}
	return nil
}

func (j *journal) close() error { return j.f.Close() }

// readJournal returns the recorded entries; a torn last line (the writer was
// killed mid-write) is skipped, since its object was not created yet.
func (s Store) readJournal(lab string) ([]Entry, error) {
	f, err := os.Open(s.journalPath(lab))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Entry
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Kind != "" {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}

// namespaceIDs returns the identities the journal of a lab recorded for the
// network namespaces emu made, by name.
func namespaceIDs(entries []Entry) map[string]netnsx.ID {
	ids := map[string]netnsx.ID{}
	for _, e := range entries {
		if e.Kind == "netns" && e.ID != nil {
			ids[e.Name] = *e.ID
		}
	}
	return ids
}

// ImpostorError is a namespace with a lab's name that is not the one the
// lab's deploy made: someone deleted that and made another of the name.
type ImpostorError struct {
	Namespace  string
	Want, Have netnsx.ID
}

func (e *ImpostorError) Error() string {
	return fmt.Sprintf("namespace %s is not the one this lab's deploy made (that was %s, this is %s): emu leaves it and what runs in it alone; if it is yours to remove, `ip netns del %s`, then destroy again",
		e.Namespace, e.Want, e.Have, e.Namespace)
}

// Impostors compares the lab's network namespaces with the identities its
// deploy journalled and returns, by name, those that took the name of the
// one emu made. Namespaces that are gone, and those of a journal written by
// an emu that recorded no identity, are not in it.
func (s Store) Impostors(lab string) (map[string]*ImpostorError, error) {
	entries, err := s.readJournal(lab)
	if err != nil {
		return nil, fmt.Errorf("read journal of lab %s: %w", lab, err)
	}
	out := map[string]*ImpostorError{}
	for name, want := range namespaceIDs(entries) {
		var imp *ImpostorError
		if errors.As(checkNamespace(name, want), &imp) {
			out[name] = imp
		}
	}
	return out, nil
}

// checkNamespace says whether the namespace named name is the one with
// identity want: nil if it is, or if no namespace has that name. An empty
// file with nothing mounted on it is the one a deploy killed between
// creating the name and mounting the namespace left (it journals the
// identity before it creates the file): nil too, so destroy removes it.
func checkNamespace(name string, want netnsx.ID) error {
	path := netnsx.Path(name)
	have, err := netnsx.IdentityOf(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("namespace %s: %w", name, err)
	case have != want && netnsx.HalfMade(path):
		return nil
	case have != want:
		return &ImpostorError{Namespace: name, Want: want, Have: have}
	}
	return nil
}

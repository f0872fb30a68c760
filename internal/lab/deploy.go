package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/ipsec/kernel"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/safefile"
	"github.com/emu-lab/emu/internal/wiring"
)

// Progress is told when a stage starts and ends, for the CLI to print.
type Progress func(ev Event)

// Event reports a stage of a deploy or destroy.
type Event struct {
	Stage   string
	Index   int // 1-based stage number
	Of      int // number of stages
	Count   int // objects in the stage
	Done    bool
	Elapsed time.Duration
	Warning string // set when the stage finished but not as hoped
	// Wait bounds a stage that waits for the lab rather than making
	// objects (ike, bgp: Count connections or sessions); 0 for the others.
	Wait time.Duration
}

// Deployer applies plans and destroys labs.
type Deployer struct {
	Store    Store
	Progress Progress
	// Workers bounds the steps of one stage that run at once.
	Workers int
	// BeforeStep runs before step i (0-based, in plan order) and fails the
	// deploy if it returns an error: tests inject a failure at every step.
	BeforeStep func(i int, s plan.Step) error
	// Agent starts node agents; nil runs this binary's `agent` command.
	Agent AgentCommand
	// Keeper starts the keeper of a node's software; nil runs this binary's
	// `node` command.
	Keeper AgentCommand

	docker *container.Runtime // opened on first use: labs without containers never talk to Docker
}

// containers returns the Docker runtime, connecting on first use.
func (d *Deployer) containers() (*container.Runtime, error) {
	if d.docker == nil {
		rt, err := container.New()
		if err != nil {
			return nil, err
		}
		d.docker = rt
	}
	return d.docker, nil
}

// containersAlive fails the deploy (and so rolls it back) if a container
// died while the lab was being built: its namespace outlives it through the
// /run/netns link, so nothing else would notice.
func (d *Deployer) containersAlive(ctx context.Context, p *plan.Plan) error {
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			c, ok := s.(plan.Container)
			if !ok {
				continue
			}
			rt, err := d.containers()
			if err != nil {
				return err
			}
			if err := rt.Check(ctx, c.Name); err != nil {
				return fmt.Errorf("node %s: %w", c.Node, err)
			}
		}
	}
	return nil
}

// checkContainers fails early, before anything is made, when the lab has
// container nodes but no engine answers or an image is missing.
func (d *Deployer) checkContainers(ctx context.Context, p *plan.Plan) error {
	if !p.HasContainers() {
		return nil
	}
	rt, err := d.containers()
	if err != nil {
		return err
	}
	if err := rt.Ping(ctx); err != nil {
		return err
	}
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			if c, ok := s.(plan.Container); ok {
				if err := rt.ImageExists(ctx, c.Image); err != nil {
					return fmt.Errorf("node %s: %w", c.Node, err)
				}
			}
		}
	}
	return nil
}

// DeployedError says the lab is already deployed, from File or from the
// other file Record names.
type DeployedError struct {
	Record *Record
	File   string // the topology this deploy was given
}

func (e *DeployedError) Error() string {
	r := e.Record
	if e.File != "" && e.File != r.Topology {
		return fmt.Sprintf("a lab named %q is already deployed from %s: rename this lab (`name:` in %s) or destroy the other one", r.Name, r.Topology, e.File)
	}
	if !r.Complete {
		return fmt.Sprintf("lab %q has a deploy that did not finish (from %s): run `emu destroy -t %s` first", r.Name, r.Topology, r.Topology)
	}
	return fmt.Sprintf("lab %q is already deployed from %s: use --reconfigure to redeploy it, or `emu destroy -t %s`", r.Name, r.Topology, r.Topology)
}

// InterruptedError is a deploy stopped by its context (Ctrl-C, SIGTERM)
// rather than failed, whatever the stage under way made of the
// cancellation. It unwraps to the context's error.
type InterruptedError struct{ Cause error }

func (e *InterruptedError) Error() string { return "interrupted" }

func (e *InterruptedError) Unwrap() error { return e.Cause }

// RollbackError is a deploy that failed after it began to make objects, and
// what became of them.
type RollbackError struct {
	Err      error
	Rollback error // nil: everything the deploy made was removed
	Topology string
	// LabDirRemoved is the lab directory when the rollback removed it
	// (the deploy had made it), logs included; "" when it is still there.
	LabDirRemoved string
}

func (e *RollbackError) Error() string {
	if e.Rollback != nil {
		return fmt.Sprintf("%v\nrollback failed too, so parts of the lab are left: %v\nrun `emu destroy -t %s` once the cause is fixed", e.Err, e.Rollback, e.Topology)
	}
	msg := fmt.Sprintf("%v\nrolled back: everything this deploy made was removed", e.Err)
	// The error may point into the lab directory (a daemon's log): say the
	// file is gone rather than send the user to it.
	if d := e.LabDirRemoved; d != "" && strings.Contains(e.Err.Error(), d+string(filepath.Separator)) {
		msg += fmt.Sprintf(", the lab directory %s too: the files named above in it are gone (their last lines are shown above)", d)
	}
	return msg
}

func (e *RollbackError) Unwrap() error { return e.Err }

// Deploy creates every object of the plan. On any error, or when ctx is
// cancelled, it removes exactly what it created before returning.
func (d *Deployer) Deploy(ctx context.Context, p *plan.Plan) (err error) {
	unlock, err := d.Store.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := d.checkFree(p); err != nil {
		return err
	}
	if err := d.checkContainers(ctx, p); err != nil {
		return err
	}
	// makeLabDir checks again when it uses it.
	if err := checkLabDir(p.LabDir); err != nil {
		return err
	}
	sum := sha256.Sum256(p.Source)
	rec := &Record{Name: p.Lab, Topology: p.Topology, TopologySHA256: hex.EncodeToString(sum[:]), Dir: p.LabDir, Nodes: p.Nodes, Started: time.Now().UTC()}
	if err := d.Store.put(rec); err != nil {
		return err
	}
	if err := safefile.WriteFile(d.Store.sourcePath(p.Lab), p.Source, 0o600); err != nil {
		d.Store.remove(p.Lab)
		return err
	}
	j, err := d.Store.openJournal(p.Lab)
	if err != nil {
		d.Store.remove(p.Lab)
		return err
	}
	defer func() {
		j.close()
		if err != nil {
			if ctx.Err() != nil {
				err = &InterruptedError{Cause: ctx.Err()}
			}
			rb := &RollbackError{Err: err, Rollback: d.undo(p.Lab, true), Topology: p.Topology}
			if _, statErr := os.Lstat(p.LabDir); errors.Is(statErr, fs.ErrNotExist) {
				rb.LabDirRemoved = p.LabDir
			}
			err = rb
		}
	}()
	if err := d.makeLabDir(j, p.LabDir); err != nil {
		return err
	}
	if err := rotateLogs(p.LabDir); err != nil {
		return err
	}
	if err := writeSecrets(j, p); err != nil {
		return err
	}
	w := wiring.New()
	defer w.Close()
	first := 0
	waits := awaitedStages(p)
	of := len(p.Stages) + len(waits) // waiting for IKE and BGP ends the deploy
	for si, stage := range p.Stages {
		start := time.Now()
		d.progress(Event{Stage: stage.Name, Index: si + 1, Of: of, Count: len(stage.Steps)})
		if err := d.runStage(ctx, w, j, p.LabDir, stage, first); err != nil {
			return err
		}
		first += len(stage.Steps)
		d.progress(Event{Stage: stage.Name, Index: si + 1, Of: of, Count: len(stage.Steps), Done: true, Elapsed: time.Since(start)})
	}
	if err := d.containersAlive(ctx, p); err != nil {
		return err
	}
	rec.Complete = true
	if err := d.Store.put(rec); err != nil {
		return err
	}
	return d.converge(ctx, p, waits)
}

// converge waits for IKE and BGP after the lab is complete (the last
// stages of the deploy): a connection or session that stays down is
// reported, not rolled back, so the user can look at why. Interrupted, it
// judges nothing: the caller rolls back.
func (d *Deployer) converge(ctx context.Context, p *plan.Plan, waits []awaited) error {
	for i, w := range waits {
		ev := Event{Stage: w.stage, Index: len(p.Stages) + i + 1, Of: len(p.Stages) + len(waits), Count: w.count, Wait: ConvergeTimeout}
		d.progress(ev)
		start := time.Now()
		down, err := w.await(ctx, ConvergeTimeout)
		if err != nil {
			return err
		}
		ev.Done, ev.Elapsed = true, time.Since(start)
		if len(down) > 0 {
			ev.Warning = fmt.Sprintf("not established after %s: %s (see the agents' and daemons' logs in %s)", ev.Elapsed.Round(100*time.Millisecond), strings.Join(down, "; "), filepath.Join(p.LabDir, "logs"))
		}
		d.progress(ev)
	}
	return nil
}

// checkFree refuses a deploy that would collide with a deployed lab or with a
// namespace emu does not own.
func (d *Deployer) checkFree(p *plan.Plan) error {
	rec, err := d.Store.Get(p.Lab)
	if err != nil {
		return err
	}
	if rec != nil {
		return &DeployedError{Record: rec, File: p.Topology}
	}
	owners := map[string]string{}
	all, err := d.Store.All()
	if err != nil {
		return err
	}
	for _, r := range all {
		for _, n := range r.Nodes {
			owners[n.Namespace] = r.Name
		}
	}
	for _, n := range p.Nodes {
		if !wiring.NamespaceExists(n.Namespace) {
			continue
		}
		if owner, ok := owners[n.Namespace]; ok {
			return fmt.Errorf("node %q: namespace %s already belongs to lab %q (their names overlap): rename this lab or that one", n.Name, n.Namespace, owner)
		}
		return fmt.Errorf("node %q: namespace %s already exists and emu did not create it: remove it (`ip netns del %s`) or rename the lab", n.Name, n.Namespace, n.Namespace)
	}
	return nil
}

// makeLabDir creates the lab directory, or reuses it if emu can trust it
// (see checkOwnDir), before anything else is made. A directory it creates
// gets the marker file, which alone lets a later --cleanup without a record
// remove it; one it reuses does not, since what the user keeps there is not
// emu's to delete.
func (d *Deployer) makeLabDir(j *journal, dir string) error {
	if err := checkParent(dir); err != nil {
		return err
	}
	existed, err := checkOwnDir(dir)
	if err == nil {
		err = ownDir(j, dir, 0o755)
	}
	if err == nil && !existed {
		err = safefile.WriteFile(filepath.Join(dir, MarkerFile), []byte("emu made this lab directory; `emu destroy --cleanup` removes it\n"), 0o644)
	}
	if err != nil {
		return fmt.Errorf("lab directory: %w", err)
	}
	return nil
}

// runStage runs the steps of one stage on a bounded pool of workers and
// returns the first error; the other workers stop taking new steps.
func (d *Deployer) runStage(ctx context.Context, w *wiring.Net, j *journal, labDir string, stage plan.Stage, first int) error {
	workers := d.Workers
	if workers <= 0 {
		workers = 8
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range min(workers, max(len(stage.Steps), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := d.runStep(ctx, w, j, labDir, first+i, stage.Steps[i]); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := range stage.Steps {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	for e := range errs {
		err = errors.Join(err, e)
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("deploy interrupted: %w", context.Cause(ctx))
	}
	return err
}

func (d *Deployer) runStep(ctx context.Context, w *wiring.Net, j *journal, labDir string, i int, s plan.Step) error {
	if d.BeforeStep != nil {
		if err := d.BeforeStep(i, s); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, s, err)
		}
	}
	switch s := s.(type) {
	case plan.Namespace:
		// Journalled with its identity before it has its name, so destroy
		// never removes a namespace that took the name after this one.
		return w.CreateNamespaceRecorded(s.Name, s.Forwarding, s.IPv6, func(id netnsx.ID) error {
			return j.add(Entry{Kind: "netns", Name: s.Name, ID: &id})
		})
	case plan.Container:
		rt, err := d.containers()
		if err != nil {
			return err
		}
		if err := j.add(Entry{Kind: "container", Name: s.Name}); err != nil {
			return err
		}
		if _, err := rt.Create(ctx, s.Lab, s.Node, s.Image, s.Software); err != nil {
			return err
		}
		return w.Adopt(s.Name, s.Forwarding, s.IPv6)
	case plan.Veth:
		return w.AddVeth(s.A.Namespace, s.A.Interface, s.B.Namespace, s.B.Interface, s.MTU)
	case plan.Address:
		return w.AddAddress(s.Namespace, s.Interface, wiring.IPNet(s.Prefix))
	case plan.RateLimit:
		return w.LimitRate(s.Namespace, s.Interface, uint64(s.Mbit)*1_000_000, s.SplitESP)
	case plan.Agent:
		return d.startAgent(j, labDir, s)
	case plan.KernelTunnel:
		return addKernelTunnel(s)
	case plan.Route:
		// The agents start before this stage and keep the routes their
		// monitors manage converged (a health check puts the VPN gateway's
		// published routes in as soon as its first probe is answered), so
		// the route may be there already: made exactly as planned either way.
		return w.SetRoute(s.Namespace, wiring.IPNet(s.Dst), wiring.IP(s.Via), s.Dev, s.Metric)
	case plan.Software:
		return d.startKeeper(ctx, j, s)
	}
	return fmt.Errorf("step %d: unknown step type %T", i+1, s)
}

func (d *Deployer) progress(ev Event) {
	if d.Progress != nil {
		d.Progress(ev)
	}
}

// addKernelTunnel programs one tunnel into the namespace's XFRM: policies,
// states and the XFRM interface. They live in the namespace, so destroying
// the namespace removes them.
func addKernelTunnel(s plan.KernelTunnel) error {
	ns, err := netns.GetFromName(s.Namespace)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", s.Namespace, err)
	}
	defer ns.Close()
	d, err := kernel.Open(ns)
	if err != nil {
		return fmt.Errorf("xfrm in %s: %w", s.Namespace, err)
	}
	defer d.Close()
	return d.Up(s.Conn, s.IfID)
}

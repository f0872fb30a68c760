package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
	"github.com/emu-lab/emu/nodes"
)

// Runner deploys and destroys labs, with emu and with shell scripts, inside a
// temporary directory of its own (topology paths, lab directories, emu's
// state). Every lab name starts with a random prefix, so every namespace it
// makes is named emu-<prefix>-...; Close removes exactly the namespaces of the
// plans it ran, never anything found by name.
type Runner struct {
	// Workers is lab.Deployer.Workers (0: emu's default).
	Workers int

	dir    string
	prefix string
	kinds  *nodes.Registry
	owned  []string // namespaces of every plan run so far
	seq    int
}

// Deployed is one deployed lab and how long its deploy took.
type Deployed struct {
	Lab          string
	Nodes, Links int
	Took         time.Duration // the whole deploy, Prepare included
	Prepare      time.Duration // emu: parse and plan
	Stages       []Stage       // emu: the stages of the apply, from Deployer.Progress

	namespaces []string
	teardown   string // shell: path of the teardown script
}

// Stage is the duration of one stage of an emu deploy.
type Stage struct {
	Name string
	Took time.Duration
}

// NewRunner makes the temporary directory and picks the name prefix.
func NewRunner() (*Runner, error) {
	dir, err := os.MkdirTemp("", "emu-bench-")
	if err != nil {
		return nil, err
	}
	return &Runner{dir: dir, prefix: "bench" + strings.ToLower(rand.Text()[:5]), kinds: nodes.Default()}, nil
}

// NamespacePrefix starts the name of every namespace the runner creates.
func (r *Runner) NamespacePrefix() string { return plan.NamespaceName(r.prefix, "") }

func (r *Runner) deployer() *lab.Deployer {
	return &lab.Deployer{Store: lab.Store{Dir: filepath.Join(r.dir, "state")}, Workers: r.Workers}
}

// plan parses the lab under a fresh name, as `emu deploy` loads a file, and
// records its namespaces as the runner's before anything creates them.
func (r *Runner) plan(l Lab, tool string) (*plan.Plan, time.Duration, error) {
	r.seq++
	name := fmt.Sprintf("%s-%s-%d%s", r.prefix, l.Label, r.seq, tool)
	data := l.YAML(name)
	start := time.Now()
	t, err := topology.Parse(filepath.Join(r.dir, name+".yaml"), data, r.kinds)
	if err != nil {
		return nil, 0, fmt.Errorf("lab %s: %w", l.Label, err)
	}
	// The benchmark labs have no tunnels, so they need no secrets and the
	// dataplane choice does not matter.
	p, err := plan.Build(t, r.kinds, nil, plan.Kernel)
	if err != nil {
		return nil, 0, fmt.Errorf("lab %s: %w", l.Label, err)
	}
	took := time.Since(start)
	for _, n := range p.Nodes {
		if wiring.NamespaceExists(n.Namespace) {
			return nil, 0, fmt.Errorf("namespace %s exists already: the runner did not create it, so it stops", n.Namespace)
		}
		r.owned = append(r.owned, n.Namespace)
	}
	return p, took, nil
}

func deployed(p *plan.Plan) Deployed {
	d := Deployed{Lab: p.Lab}
	for _, n := range p.Nodes {
		d.namespaces = append(d.namespaces, n.Namespace)
	}
	d.Nodes = len(p.Nodes)
	if len(p.Stages) > 1 {
		d.Links = len(p.Stages[1].Steps)
	}
	return d
}

// EmuDeploy deploys the lab as `emu deploy` does: parse, plan, apply.
func (r *Runner) EmuDeploy(ctx context.Context, l Lab) (Deployed, error) {
	p, prepare, err := r.plan(l, "e")
	if err != nil {
		return Deployed{}, err
	}
	dep := deployed(p)
	d := r.deployer()
	d.Progress = func(ev lab.Event) {
		if ev.Done {
			dep.Stages = append(dep.Stages, Stage{Name: ev.Stage, Took: ev.Elapsed})
		}
	}
	start := time.Now()
	if err := d.Deploy(ctx, p); err != nil {
		return Deployed{}, fmt.Errorf("emu deploy %s: %w", p.Lab, err)
	}
	dep.Took = prepare + time.Since(start)
	dep.Prepare = prepare
	return dep, nil
}

// EmuDestroy destroys the lab as `emu destroy --cleanup` does.
func (r *Runner) EmuDestroy(dep Deployed) (time.Duration, error) {
	start := time.Now()
	found, err := r.deployer().Destroy(dep.Lab, true)
	took := time.Since(start)
	if err == nil && !found {
		err = errors.New("emu has no record of it")
	}
	if err != nil {
		return 0, fmt.Errorf("emu destroy %s: %w", dep.Lab, err)
	}
	return took, nil
}

// ShellDeploy builds the same lab with the script of Script, run by bash. On
// failure it deletes the namespaces the script may have made.
func (r *Runner) ShellDeploy(ctx context.Context, l Lab) (Deployed, error) {
	p, _, err := r.plan(l, "s")
	if err != nil {
		return Deployed{}, err
	}
	dep := deployed(p)
	deploy, teardown, err := Script(p)
	if err != nil {
		return Deployed{}, err
	}
	script := filepath.Join(r.dir, p.Lab+"-deploy.sh")
	dep.teardown = filepath.Join(r.dir, p.Lab+"-teardown.sh")
	if err := os.WriteFile(script, []byte(deploy), 0o644); err != nil {
		return Deployed{}, err
	}
	if err := os.WriteFile(dep.teardown, []byte(teardown), 0o644); err != nil {
		return Deployed{}, err
	}
	start := time.Now()
	err = runScript(ctx, script)
	dep.Took = time.Since(start)
	if err != nil {
		return Deployed{}, errors.Join(fmt.Errorf("shell deploy %s: %w", p.Lab, err), deleteNamespaces(dep.namespaces))
	}
	return dep, nil
}

// ShellDestroy runs the teardown script of a shell deploy.
func (r *Runner) ShellDestroy(ctx context.Context, dep Deployed) (time.Duration, error) {
	start := time.Now()
	err := runScript(ctx, dep.teardown)
	took := time.Since(start)
	if err != nil {
		return 0, errors.Join(fmt.Errorf("shell destroy %s: %w", dep.Lab, err), deleteNamespaces(dep.namespaces))
	}
	return took, nil
}

// runScript runs bash in its own process group and kills the whole group when
// ctx ends, so no ip command outlives the script and creates something after
// the cleanup looked.
func runScript(ctx context.Context, path string) error {
	cmd := exec.CommandContext(ctx, "bash", path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bash %s: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func deleteNamespaces(names []string) error {
	var errs error
	for _, ns := range names {
		if wiring.NamespaceExists(ns) {
			errs = errors.Join(errs, wiring.DeleteNamespace(ns))
		}
	}
	return errs
}

// Close destroys every lab emu still has a record of, deletes every
// namespace of the runner's plans that still exists, removes the temporary
// directory, and fails if a namespace with the runner's prefix is left.
func (r *Runner) Close() error {
	var errs error
	d := r.deployer()
	recs, err := d.Store.All()
	errs = errors.Join(errs, err)
	for _, rec := range recs {
		_, err := d.Destroy(rec.Name, true)
		errs = errors.Join(errs, err)
	}
	errs = errors.Join(errs, deleteNamespaces(r.owned), os.RemoveAll(r.dir))
	if left := r.Leftovers(); len(left) > 0 {
		errs = errors.Join(errs, fmt.Errorf("namespaces left behind: %s", strings.Join(left, " ")))
	}
	return errs
}

// Leftovers lists the mounted namespaces with the runner's prefix.
func (r *Runner) Leftovers() []string {
	entries, _ := os.ReadDir(netnsx.Dir)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), r.NamespacePrefix()) {
			out = append(out, e.Name())
		}
	}
	return out
}

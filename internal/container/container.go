// Package container runs nodes as Docker containers (SPEC §9). A container
// holds nothing but a network namespace: emu links that namespace under
// /run/netns with the node's namespace name, so wiring, agents, probes and
// `ip netns exec` treat it like a namespace emu created itself.
package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	dcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// Image is the tag `make images` builds from images/.
const Image = "emu-node:latest"

// Labels on every container emu creates: List finds a lab's containers by
// them, and Remove refuses a container that lacks them.
const (
	LabelLab  = "emu.lab"
	LabelNode = "emu.node"
)

// removeTimeout bounds the clean-up after a failed Create, which runs on a
// fresh context: the caller's may be the one that was cancelled.
const removeTimeout = 30 * time.Second

// Runtime creates and removes container nodes through the Docker engine API.
type Runtime struct{ cli *client.Client }

// New connects to the engine named by DOCKER_HOST, or the local socket. The
// client negotiates the engine's API version down to 1.40 (Debian's 20.10
// speaks 1.41).
func New() (*Runtime, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	return &Runtime{cli: cli}, nil
}

// Close releases the connection to the engine.
func (r *Runtime) Close() error { return r.cli.Close() }

// Ping checks that an engine answers.
func (r *Runtime) Ping(ctx context.Context) error {
	_, err := r.cli.Ping(ctx, client.PingOptions{})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("the Docker engine at %s refuses this user: run emu as root", r.cli.DaemonHost())
	}
	return fmt.Errorf("no Docker engine answers at %s: start it (systemctl start docker) or use runtime: namespace", r.cli.DaemonHost())
}

// ErrNoImage says the node image is not built.
var ErrNoImage = errors.New("image not built")

// ImageExists returns nil if the engine has the image, or an error wrapping
// ErrNoImage that says how to build it.
func (r *Runtime) ImageExists(ctx context.Context, image string) error {
	_, err := r.cli.ImageInspect(ctx, image)
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("container nodes need image %s, which is not built (%w): run `make images` in the emu source tree", image, ErrNoImage)
	}
	if err != nil {
		return fmt.Errorf("inspect image %s: %w", image, err)
	}
	return nil
}

// Container is a container node as the engine reports it.
type Container struct {
	// Name is both the container's name and its namespace's name under
	// /run/netns: emu-<lab>-<node>.
	Name  string
	ID    string
	Lab   string
	Node  string
	State string // the engine's word: created, running, exited, ...
	PID   int    // of its init, while running; 0 from List
}

// Running reports whether the container's init is alive.
func (c Container) Running() bool { return c.State == "running" }

// DeadError says a container node stopped: its namespace, held by the
// /run/netns link, still exists, but nothing runs in it any more.
type DeadError struct {
	Name     string
	State    string // "removed" if the engine no longer knows it
	ExitCode int
	Finished time.Time
}

func (e *DeadError) Error() string {
	if e.State == "removed" {
		return fmt.Sprintf("container %s was removed behind emu's back: destroy the lab and deploy it again", e.Name)
	}
	at := ""
	if !e.Finished.IsZero() {
		at = " at " + e.Finished.Local().Format(time.TimeOnly)
	}
	return fmt.Sprintf("container %s is %s (exit code %d%s): destroy the lab and deploy it again (`docker logs %s` may say why)", e.Name, e.State, e.ExitCode, at, e.Name)
}

// Create starts a container for a node and links its network namespace at
// /run/netns/emu-<lab>-<node>. The node's binds and env (containerlab's
// fields) go to the container; its exec commands run later, through Exec.
// On error it removes what it made; a caller that journals the name before
// calling can also undo a crash with Remove.
func (r *Runtime) Create(ctx context.Context, lab, node, image string, sw topology.Software) (c Container, err error) {
	name := plan.NamespaceName(lab, node)
	if err := r.ImageExists(ctx, image); err != nil {
		return Container{}, err
	}
	if wiring.NamespaceExists(name) {
		return Container{}, fmt.Errorf("node %q: namespace %s already exists and this container would hide it: remove it (`ip netns del %s`) or rename the lab", node, name, name)
	}
	cfg := &dcontainer.Config{
		Image:    image,
		Hostname: node,
		Labels:   map[string]string{LabelLab: lab, LabelNode: node},
		Env:      sw.Env,
	}
	host := &dcontainer.HostConfig{
		// emu wires the namespace from the host: the engine adds nothing
		// but the loopback, and the init needs no capability at all.
		NetworkMode:    "none",
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: true,
	}
	for _, b := range sw.Binds {
		bind := b.Host + ":" + b.Node
		if b.ReadOnly {
			bind += ":ro"
		}
		host.Binds = append(host.Binds, bind)
	}
	if sw.Runs() {
		// The user's programs configure the node, as in a containerlab
		// linux node: addresses and routes, files of their own.
		host.CapAdd = []string{"NET_ADMIN", "NET_RAW"}
		host.ReadonlyRootfs = false
	}
	created, err := r.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Config: cfg, HostConfig: host, Name: name})
	if cerrdefs.IsConflict(err) {
		return Container{}, fmt.Errorf("node %q: a container named %s already exists: remove it (`docker rm -f %s`) if it is left over, or rename the lab", node, name, name)
	}
	if err != nil {
		return Container{}, fmt.Errorf("create container %s: %w", name, err)
	}
	linked := false
	defer func() {
		if err == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
		defer cancel()
		rerr := r.removeContainer(rctx, created.ID, name)
		if linked {
			rerr = errors.Join(wiring.DeleteNamespace(name), rerr)
		}
		if rerr != nil {
			err = fmt.Errorf("%w\nremoving it failed too: %v", err, rerr)
		}
	}()
	if _, err := r.cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		return Container{}, fmt.Errorf("start container %s: %w", name, err)
	}
	c, err = r.inspect(ctx, name)
	if err != nil {
		return Container{}, err
	}
	if err := link(name, created.ID, c.PID); err != nil {
		return Container{}, err
	}
	linked = true
	// The init may have died, and its PID been reused, between inspect and
	// link.
	if err := r.Check(ctx, name); err != nil {
		return Container{}, err
	}
	return c, nil
}

// Check returns a *DeadError if the container is not running, and an error
// if it runs in another namespace than the one linked under /run/netns. The
// link keeps the wired namespace, and so the node's links and agent, alive
// after the container dies; a restarted container gets a fresh, unwired one.
func (r *Runtime) Check(ctx context.Context, name string) error {
	c, err := r.inspect(ctx, name)
	if err != nil {
		return err
	}
	var linked, current unix.Stat_t
	if err := unix.Stat(netnsx.Path(name), &linked); err != nil {
		return fmt.Errorf("container %s: its namespace link %s: %w", name, netnsx.Path(name), err)
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", c.PID), &current); err != nil {
		return fmt.Errorf("container %s: namespace of its init: %w", name, err)
	}
	if linked.Dev != current.Dev || linked.Ino != current.Ino {
		return fmt.Errorf("container %s restarted into a new network namespace that emu did not wire: destroy the lab and deploy it again", name)
	}
	return nil
}

// inspect returns a running container, or a *DeadError.
func (r *Runtime) inspect(ctx context.Context, name string) (Container, error) {
	res, err := r.cli.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	info := res.Container
	if cerrdefs.IsNotFound(err) {
		return Container{}, &DeadError{Name: name, State: "removed"}
	}
	if err != nil {
		return Container{}, fmt.Errorf("inspect container %s: %w", name, err)
	}
	c := Container{Name: name, ID: info.ID}
	if info.Config != nil {
		c.Lab, c.Node = info.Config.Labels[LabelLab], info.Config.Labels[LabelNode]
	}
	if s := info.State; s != nil {
		c.State = string(s.Status)
		if s.Running && !s.Restarting && s.Pid > 0 {
			c.PID = s.Pid
			return c, nil
		}
		finished, _ := time.Parse(time.RFC3339Nano, s.FinishedAt)
		return c, &DeadError{Name: name, State: c.State, ExitCode: s.ExitCode, Finished: finished}
	}
	return c, &DeadError{Name: name, State: "unknown"}
}

// Remove unlinks a container node's namespace and removes the container,
// killing it. What is already gone is not an error, so destroy can run any
// number of times; a container emu did not label is left alone.
func (r *Runtime) Remove(ctx context.Context, name string) error {
	res, err := r.cli.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	info := res.Container
	found := err == nil
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect container %s: %w", name, err)
	}
	if found && (info.Config == nil || info.Config.Labels[LabelLab] == "") {
		return fmt.Errorf("container %s has no %s label, so emu did not create it: leaving it and its namespace alone", name, LabelLab)
	}
	if err := wiring.DeleteNamespace(name); err != nil {
		return err
	}
	if !found {
		return nil
	}
	return r.removeContainer(ctx, info.ID, name)
}

func (r *Runtime) removeContainer(ctx context.Context, id, name string) error {
	_, err := r.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", name, err)
	}
	return nil
}

// List returns the containers of a lab, running or not, found by label.
func (r *Runtime) List(ctx context.Context, lab string) ([]Container, error) {
	found, err := r.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelLab+"="+lab),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers of lab %s: %w", lab, err)
	}
	var out []Container
	for _, s := range found.Items {
		c := Container{ID: s.ID, Lab: s.Labels[LabelLab], Node: s.Labels[LabelNode], State: string(s.State)}
		if len(s.Names) > 0 {
			c.Name = strings.TrimPrefix(s.Names[0], "/")
		}
		out = append(out, c)
	}
	return out, nil
}

// link bind-mounts the network namespace of the container's init at
// /run/netns/name, as `ip netns attach` does. The mount holds the namespace:
// it outlives the container until Remove unmounts it.
func link(name, id string, pid int) error {
	// A PID the engine reports is only meaningful here if the engine shares
	// our PID namespace; the init's cgroup names its container either way.
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil || !strings.Contains(string(cg), id) {
		return fmt.Errorf("container %s: PID %d is not its init on this host (is the Docker engine remote, rootless or in another PID namespace?): container nodes need a local, rootful engine", name, pid)
	}
	if err := netnsx.PrepareDir(); err != nil {
		return fmt.Errorf("link namespace of container %s: %w", name, err)
	}
	path := netnsx.Path(name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("link namespace of container %s: %w", name, err)
	}
	f.Close()
	src := fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("link namespace of container %s: mount %s on %s: %w", name, src, path, err)
	}
	return nil
}

// Exec runs one command in a running container through /bin/sh -c, as the
// node's exec commands run in a namespace node, and returns its combined
// output and exit code.
func (r *Runtime) Exec(ctx context.Context, name, command string) (output string, code int, err error) {
	var out strings.Builder
	p, err := r.Start(ctx, name, []string{"/bin/sh", "-c", command}, nil, &out, &out)
	if err != nil {
		return "", 0, err
	}
	code, err = p.Wait()
	return out.String(), code, err
}

// Process is a program started in a container through the engine (`docker
// exec`); its output streams to the writers given to Start until it ends.
type Process struct {
	// PID is its pid on the host (link makes sure the engine shares emu's PID
	// namespace), 0 if it ended before the engine reported one.
	PID  int
	done chan struct{}
	code int
	err  error
}

// Wait returns the exit code once the process ended, or why it is unknown.
func (p *Process) Wait() (int, error) {
	<-p.done
	return p.code, p.err
}

// Done is closed once the process ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// pidWait bounds how long Start waits for the engine to report the pid of
// what it started, and exitWait how long Wait waits for the engine to notice
// the end of a process whose output stream closed.
const (
	pidWait  = 5 * time.Second
	exitWait = 5 * time.Second
)

// Start runs argv (no shell: the image may have none) in a running container
// with the container's env, its output copied to stdout and stderr, and
// stdin (if not nil) to its standard input. ctx bounds only the start; the
// process runs until it ends or the container is removed.
func (r *Runtime) Start(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (*Process, error) {
	ex, err := r.cli.ExecCreate(ctx, name, client.ExecCreateOptions{
		Cmd: argv, AttachStdin: stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", name, err)
	}
	att, err := r.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", name, err)
	}
	p := &Process{done: make(chan struct{})}
	if stdin != nil {
		go func() {
			io.Copy(att.Conn, stdin)
			att.CloseWrite()
		}()
	}
	go func() {
		defer close(p.done)
		_, cerr := stdcopy.StdCopy(stdout, stderr, att.Reader)
		att.Close()
		// The stream ends as the process does; the engine records its exit
		// a moment later.
		ictx, cancel := context.WithTimeout(context.Background(), exitWait)
		defer cancel()
		for {
			st, err := r.cli.ExecInspect(ictx, ex.ID, client.ExecInspectOptions{})
			switch {
			case err != nil:
				p.err = fmt.Errorf("exec in container %s: %w", name, errors.Join(cerr, err))
				return
			case !st.Running:
				p.code = st.ExitCode
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// It runs now: its pid is wanted even if ctx ends, to signal it.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pidWait)
	defer cancel()
	for ictx.Err() == nil {
		st, err := r.cli.ExecInspect(ictx, ex.ID, client.ExecInspectOptions{})
		if ictx.Err() != nil {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("exec in container %s: %w", name, err)
		}
		if st.PID > 0 {
			p.PID = st.PID
			return p, nil
		}
		select {
		case <-p.done:
			return p, nil
		case <-time.After(10 * time.Millisecond):
		}
	}
	return p, nil
}

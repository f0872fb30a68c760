// Package software runs the host programs of a node (SPEC §11): its mount
// namespace, its daemons and its exec commands. One keeper process per node,
// started by deploy inside the node's network namespace and in a mount
// namespace of its own, holds that mount namespace for the node's life:
// it mounts what the node sees, starts the daemons in order and waits until
// each is ready, runs the exec commands, then watches the daemons, publishing
// their state, until destroy stops it; it stops its daemons before it exits,
// and the kernel kills those that keep their user (parent-death signal) if
// it is killed; destroy kills the rest.
package software

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/safefile"
	"github.com/emu-lab/emu/internal/topology"
)

// Config is what the keeper of one node runs; deploy writes it as JSON.
type Config struct {
	Topology  string // the topology file, for file:line in errors
	Node      string
	Namespace string
	LogDir    string // daemons' and exec's output: <node>.<daemon>.log, <node>.exec.log
	State     string // where the keeper publishes the daemons' state
	Software  topology.Software
	// Container names the container of a `runtime: docker` node: its
	// daemons and exec commands run there through the engine (`docker
	// exec`), in the container's filesystem and env, and the keeper mounts
	// nothing, the container having its own mount namespace.
	Container string `json:",omitempty"`
}

// ReadyFD is the descriptor (the first of ExtraFiles) the keeper reports on:
// Ready, or "error: " and what failed, possibly over several lines.
const ReadyFD = 3

// Ready is what the keeper writes once every daemon is up and every exec
// command succeeded.
const Ready = "ready"

// Timing of daemon start-up: a daemon without wait-for must stay up
// DaemonSettle; one with wait-for has DaemonReadyTimeout to make its path.
const (
	DaemonSettle       = 300 * time.Millisecond
	DaemonReadyTimeout = 10 * time.Second
	stopGrace          = 1500 * time.Millisecond // below the grace destroy gives the keeper (lab.stopGrace)
	logTail            = 8                       // log lines shown when a daemon dies at start
)

// Daemon is the published state of one daemon.
type Daemon struct {
	Name    string    `json:"name"`
	PID     int       `json:"pid"`
	Start   uint64    `json:"start,omitempty"` // of PID, clock ticks since boot (proc(5) starttime): tells it from a reused pid
	Running bool      `json:"running"`
	Exit    string    `json:"exit,omitempty"` // how it ended, when not running
	Since   time.Time `json:"since"`
	Log     string    `json:"log"`
}

// State is what the keeper publishes; Keeper is its own pid, so a reader can
// tell a live keeper's state from one left by a dead keeper.
type State struct {
	Keeper  int      `json:"keeper"`
	Daemons []Daemon `json:"daemons"`
}

// ReadState reads the state a keeper published.
func ReadState(path string) (*State, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	return &s, nil
}

// Run is the keeper: it returns when stopped (SIGTERM, SIGINT) or when
// setting up fails; setup errors are reported on the ready pipe too.
func Run(configPath string) error {
	// Every daemon is forked from this thread: a parent-death signal fires
	// when the forking thread ends, so it must live as long as the keeper.
	runtime.LockOSThread()
	// Inherited without close-on-exec: the daemons must not hold it, or
	// deploy would wait for them to close it.
	unix.CloseOnExec(ReadyFD)
	ready := os.NewFile(ReadyFD, "ready")
	report := func(msg string) {
		if ready != nil {
			fmt.Fprintln(ready, msg)
			ready.Close()
			ready = nil
		}
	}
	k, err := start(configPath)
	if err != nil {
		report("error: " + err.Error())
		return err
	}
	report(Ready)
	k.watch()
	return nil
}

type keeper struct {
	cfg  Config
	rt   *container.Runtime // for a container node, else nil
	mu   sync.Mutex
	runs []*daemonRun
	stop context.Context
}

type daemonRun struct {
	d    topology.Daemon
	pid  int
	log  string
	done chan struct{}
	st   Daemon
	// signal reaches the daemon: its process group on the host, the process
	// the engine started in a container.
	signal func(syscall.Signal)
}

func start(configPath string) (*keeper, error) {
	data, err := safefile.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	k := &keeper{}
	if err := json.Unmarshal(data, &k.cfg); err != nil {
		return nil, fmt.Errorf("config %s: %w", configPath, err)
	}
	// Orphans of the daemons (a daemon that forks) become the keeper's, so
	// none escapes the stop.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become the node's subreaper: %w", err)
	}
	if k.cfg.Container != "" {
		if k.rt, err = container.New(); err != nil {
			return nil, fmt.Errorf("node %s: %w", k.cfg.Node, err)
		}
	} else if err := Mounts(k.cfg.Namespace, k.cfg.Software.Binds, true); err != nil {
		return nil, fmt.Errorf("node %s: %w", k.cfg.Node, err)
	}
	// Never cancelled: the keeper ends when it is signalled.
	k.stop, _ = signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	for _, d := range k.cfg.Software.Daemons {
		if err := k.startDaemon(d); err != nil {
			k.stopAll()
			return nil, err
		}
	}
	for _, c := range k.cfg.Software.Exec {
		if err := k.exec(c); err != nil {
			k.stopAll()
			return nil, err
		}
	}
	return k, nil
}

func (k *keeper) env() []string { return append(os.Environ(), k.cfg.Software.Env...) }

func (k *keeper) logPath(name string) string {
	return filepath.Join(k.cfg.LogDir, k.cfg.Node+"."+name+".log")
}

func (k *keeper) startDaemon(d topology.Daemon) error {
	where := fmt.Sprintf("%s:%d: node %s daemon %s", k.cfg.Topology, d.Line, k.cfg.Node, d.Name)
	logPath := k.logPath(d.Name)
	logFile, err := safefile.OpenAppend(logPath, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open its log: %w", where, err)
	}
	defer logFile.Close()
	// Its state is set before it starts, so that its end, which may come
	// at once, is never overwritten.
	r := &daemonRun{d: d, log: logPath, done: make(chan struct{}),
		st: Daemon{Name: d.Name, Running: true, Since: time.Now().UTC(), Log: logPath}}
	if k.rt != nil {
		err = k.startInContainer(r, logFile)
	} else {
		err = k.startOnHost(r, logFile)
	}
	if err != nil {
		return fmt.Errorf("%s: start %q: %w", where, d.Command, err)
	}
	k.mu.Lock()
	r.st.PID = r.pid
	r.st.Start, _ = agent.StartTime(r.pid)
	k.runs = append(k.runs, r)
	k.mu.Unlock()
	k.publish()
	deadline := time.Now().Add(DaemonSettle)
	if d.WaitFor != "" {
		deadline = time.Now().Add(DaemonReadyTimeout)
	}
	for {
		select {
		case <-r.done:
			hint := ""
			if k.rt != nil && (r.st.Exit == "exit status 126" || r.st.Exit == "exit status 127") {
				// The engine's codes for a program it could not run.
				hint = "\nthe program must be in the node's image, or bound into it (binds: host-path:node-path:ro), with the libraries it needs"
			}
			return fmt.Errorf("%s exited at start (%s); last lines of %s:\n%s%s", where, r.st.Exit, logPath, tail(logPath, logTail), hint)
		case <-time.After(20 * time.Millisecond):
		}
		if d.WaitFor != "" {
			if _, err := os.Stat(k.nodePath(r, d.WaitFor)); err == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %s did not appear within %s; last lines of %s:\n%s", where, d.WaitFor, DaemonReadyTimeout, logPath, tail(logPath, logTail))
			}
		} else if time.Now().After(deadline) {
			return nil
		}
	}
}

// exec runs one exec command to its end; its output goes to the node's exec
// log and, when it fails, into the error.
// execWaitDelay is how long an exec command's output is read after its
// shell exited.
const execWaitDelay = time.Second

func (k *keeper) exec(c topology.Command) error {
	var out bytes.Buffer
	var err error
	if k.rt != nil {
		var code int
		var text string
		text, code, err = k.rt.Exec(k.stop, k.cfg.Container, c.Text)
		out.WriteString(text)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit status %d", code)
		}
	} else {
		cmd := exec.CommandContext(k.stop, "/bin/sh", "-c", c.Text)
		cmd.Env, cmd.Dir = k.env(), "/"
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		// A command that leaves a child in the background (`server &`,
		// `setsid -f ...`) ends when its shell does; the child keeps the
		// output pipe open, which must not hold the deploy.
		cmd.WaitDelay = execWaitDelay
		err = cmd.Run()
		if errors.Is(err, exec.ErrWaitDelay) {
			err = nil
			out.WriteString("(a background child of this command still holds its output: not read further)\n")
		}
	}
	if f, ferr := safefile.OpenAppend(k.logPath("exec"), 0o644); ferr == nil {
		fmt.Fprintf(f, "$ %s\n%s", c.Text, out.Bytes())
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("%s:%d: node %s exec %q failed (%s): %s", k.cfg.Topology, c.Line, k.cfg.Node, c.Text, exitText(err), strings.TrimSpace(lastLines(out.String(), logTail)))
	}
	return nil
}

// startOnHost starts a daemon of a namespace node: through /bin/sh, in its
// own process group, killed with the keeper.
func (k *keeper) startOnHost(r *daemonRun, logFile *os.File) error {
	line := r.d.Command
	if !strings.ContainsAny(line, shellChars) && !strings.HasPrefix(line, "exec ") {
		// A plain command replaces the shell, so the pid inspect shows is
		// the daemon's own.
		line = "exec " + line
	}
	cmd := exec.Command("/bin/sh", "-c", line)
	cmd.Env, cmd.Dir = k.env(), "/"
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	r.pid = cmd.Process.Pid
	r.signal = func(sig syscall.Signal) { syscall.Kill(-r.pid, sig) }
	go func() {
		err := cmd.Wait()
		// A daemon is its process group: what it left behind goes with it,
		// so nothing runs on that inspect reports dead.
		syscall.Kill(-r.pid, syscall.SIGKILL)
		// Its orphans were re-parented to the keeper (the subreaper): reap
		// them, by group, so no zombie stays.
		for {
			var ws unix.WaitStatus
			if _, err := unix.Wait4(-r.pid, &ws, 0, nil); err != nil && err != unix.EINTR {
				break
			}
		}
		k.ended(r, exitText(err))
	}()
	return nil
}

// startInContainer starts a daemon of a container node through the engine,
// its output streamed into its log. A plain command runs as is, since the
// image may have no shell; one with shell syntax needs /bin/sh in the image.
// The daemon is not the keeper's child: stopping it signals its host pid,
// and what it leaves goes with the container on destroy.
func (k *keeper) startInContainer(r *daemonRun, logFile *os.File) error {
	argv := strings.Fields(r.d.Command)
	if strings.ContainsAny(r.d.Command, shellChars) {
		argv = []string{"/bin/sh", "-c", r.d.Command}
	}
	// The log stays open as long as the engine streams into it.
	out, err := safefile.OpenAppend(logFile.Name(), 0o644)
	if err != nil {
		return err
	}
	p, err := k.rt.Start(k.stop, k.cfg.Container, argv, nil, out, out)
	if err != nil {
		out.Close()
		return err
	}
	r.pid = p.PID
	r.signal = func(sig syscall.Signal) {
		select {
		case <-r.done: // its pid may be another's by now
		default:
			if r.pid > 0 {
				syscall.Kill(r.pid, sig)
			}
		}
	}
	go func() {
		code, err := p.Wait()
		out.Close()
		exit := fmt.Sprintf("exit status %d", code)
		if err != nil {
			exit = err.Error()
		}
		k.ended(r, exit)
	}()
	return nil
}

// shellChars make a command line need a shell.
const shellChars = ";&|<>()$`\\\"'*?[#~=%\n"

// ended records that a daemon ended, and how.
func (k *keeper) ended(r *daemonRun, exit string) {
	k.mu.Lock()
	r.st.Running, r.st.Since, r.st.Exit = false, time.Now().UTC(), exit
	k.mu.Unlock()
	close(r.done)
	k.publish()
}

// nodePath is a path as the node sees it: a container's, through its
// daemon's root.
func (k *keeper) nodePath(r *daemonRun, path string) string {
	if k.rt == nil {
		return path
	}
	return filepath.Join("/proc", strconv.Itoa(r.pid), "root", path)
}

// watch publishes the daemons' state until the keeper is stopped, then stops
// them. A daemon that dies later stays dead: inspect shows it, and the
// checks judge what follows.
func (k *keeper) watch() {
	<-k.stop.Done()
	k.stopAll()
}

// stopAll ends every daemon's process group: SIGTERM, then SIGKILL after
// stopGrace.
func (k *keeper) stopAll() {
	k.mu.Lock()
	runs := append([]*daemonRun(nil), k.runs...)
	k.mu.Unlock()
	for _, r := range runs {
		r.signal(syscall.SIGTERM)
	}
	deadline := time.After(stopGrace)
	for _, r := range runs {
		select {
		case <-r.done:
		case <-deadline:
		}
	}
	for _, r := range runs {
		r.signal(syscall.SIGKILL)
	}
	for _, r := range runs {
		<-r.done
	}
}

func (k *keeper) publish() {
	k.mu.Lock()
	s := State{Keeper: os.Getpid()}
	for _, r := range k.runs {
		s.Daemons = append(s.Daemons, r.st)
	}
	k.mu.Unlock()
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return
	}
	safefile.Replace(k.cfg.State, data, 0o644)
}

func exitText(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	}
	return err.Error()
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return lastLines(string(data), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

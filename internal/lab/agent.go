package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec/kernel"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/safefile"
)

// agentReadyTimeout bounds how long deploy waits for an agent to serve.
const agentReadyTimeout = 10 * time.Second

// AgentCommand returns the command that runs `emu agent --config path`.
// Tests replace it so their own binary plays the agent.
type AgentCommand func(configPath string) (*exec.Cmd, error)

// SelfAgent runs the agent from the running emu binary.
func SelfAgent(configPath string) (*exec.Cmd, error) { return selfCommand("agent", configPath) }

// selfCommand runs `emu SUBCOMMAND --config path` from the running binary.
func selfCommand(sub, configPath string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the emu binary: %w", err)
	}
	return exec.Command(exe, sub, "--config", configPath), nil
}

// agentConfigPath is where a node's agent config lives; its state file is
// beside it (agent.StatePath).
func agentConfigPath(labDir, node string) string {
	return filepath.Join(labDir, "agents", node+".json")
}

// startAgent writes the agent's config (it holds keys: 0600), records the
// agent by that unique config path before starting it, starts it inside the
// node's namespace and waits until it serves.
func (d *Deployer) startAgent(j *journal, labDir string, s plan.Agent) error {
	if err := ownDir(j, filepath.Join(labDir, "agents"), 0o700); err != nil {
		return err
	}
	cfgPath := agentConfigPath(labDir, s.Node)
	data, err := json.MarshalIndent(agent.Config{Lab: filepath.Base(labDir), Node: s.Node, Tunnels: s.Tunnels, XFRM: xfrmTunnels(s.XFRM), Monitors: s.Monitors, BGP: s.BGP, Routes: s.Routes}, "", "  ")
	if err != nil {
		return err
	}
	// The agent writes its state, its supervisor's status and the keys of
	// the SAs it negotiates by IKE beside its config.
	for _, f := range append([]string{cfgPath}, agent.Files(cfgPath)...) {
		if err := j.add(Entry{Kind: "file", Name: f}); err != nil {
			return err
		}
	}
	if err := safefile.WriteFile(cfgPath, data, 0o600); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	if err := j.add(Entry{Kind: "agent", Name: cfgPath, Netns: s.Namespace}); err != nil {
		return err
	}
	// A new deploy is a new generation: a previous one's state must neither
	// be read as this agent's nor resumed from (the keys may be the same).
	for _, old := range []string{agent.StatePath(cfgPath), agent.StatusPath(cfgPath)} {
		if err := os.Remove(old); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the previous deploy's %s: %w", old, err)
		}
	}
	logPath := agent.LogPath(cfgPath)
	if err := ownDir(j, filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	logFile, err := safefile.OpenAppend(logPath, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	mk := d.Agent
	if mk == nil {
		mk = SelfAgent
	}
	cmd, err := mk(cfgPath)
	if err != nil {
		return err
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", agent.ReadyEnv, agent.ReadyFD))
	// Its own session: a Ctrl-C meant for a later command must not stop it.
	r, err := startInNode(s.Namespace, cmd, logFile, &syscall.SysProcAttr{Setsid: true})
	if err != nil {
		return fmt.Errorf("start agent of %s: %w", s.Node, err)
	}
	defer r.Close()
	line, err := agent.ReadLine(r, agentReadyTimeout)
	if err != nil || line != agent.Ready {
		if line == "" {
			line = fmt.Sprint(err)
		}
		return fmt.Errorf("agent of %s did not start: %s (log: %s)", s.Node, strings.TrimPrefix(line, "error: "), logPath)
	}
	return nil
}

// startInNode starts cmd in network namespace ns (the child inherits the
// namespace of the thread that forks it) with its output into logFile and
// the write end of a pipe as its first extra file (descriptor 3), on which
// it says whether it is ready; it returns the read end. The child is reaped
// if it exits while deploy still runs.
func startInNode(ns string, cmd *exec.Cmd, logFile *os.File, attr *syscall.SysProcAttr) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = attr
	err = netnsx.Do(ns, cmd.Start)
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	go cmd.Wait()
	return r, nil
}

// stopAgent ends every process started with that config path (an agent's
// supervisor and its worker, a node's software keeper), found by its exact
// command line, never by a pattern, and, when in is known, in the network
// namespace in; it returns only once they are gone: SIGTERM, SIGKILL to
// those still running after the supervisor's own grace to stop its worker,
// then a wait for the exit itself, since a killed process first finishes
// its system call, which may be a write into the lab directory that
// destroy removes next. Each process is held by a pidfd, so a pid reused
// meanwhile is never signalled. A scan after the stop finds a process
// started in the meantime (a worker its supervisor restarted); an empty
// scan after a stop is trusted only once a second one, restartSettle
// later, is empty too: in the VM's CI a worker that its stopped parent had
// just started was missed by the first (1 run in about 10).
func stopAgent(cfgPath string, in *netnsx.ID) error {
	stopped, settled := 0, false
	for {
		procs, err := agentProcs(cfgPath, in)
		if err != nil {
			return err
		}
		if len(procs) == 0 {
			if stopped == 0 || settled {
				return nil
			}
			settled = true
			time.Sleep(restartSettle)
			continue
		}
		if stopped == stopRounds {
			for _, p := range procs {
				unix.Close(p.fd)
			}
			return fmt.Errorf("stop agent %s: processes with this config keep starting after %d rounds of SIGTERM and SIGKILL: find them with `pgrep -af %s`", cfgPath, stopRounds, cfgPath)
		}
		stopped, settled = stopped+1, false
		err = stopProcs(cfgPath, procs)
		for _, p := range procs {
			unix.Close(p.fd)
		}
		if err != nil {
			return err
		}
	}
}

const (
	stopRounds = 3
	// childGrace is how long a process whose parent was stopped first has
	// to answer its own SIGTERM (its parent normally stopped it already).
	childGrace = time.Second
	// restartSettle is the pause before the scan that confirms an empty one.
	restartSettle = 50 * time.Millisecond
	// stopGrace outlasts the supervisor's grace for its worker, so a
	// supervisor stops its worker itself rather than being killed first.
	stopGrace = agent.StopGrace + time.Second
	// killWait bounds the wait for a SIGKILLed process to exit: only one in
	// an uninterruptible sleep (a stuck disk, a hung mount) takes longer.
	killWait = 5 * time.Second
)

// proc is a process found by its command line, held by a pidfd.
type proc struct {
	pid, fd int
}

// stopProcs stops procs: first those whose parent is not among them (an
// agent's supervisor, a keeper), each of which stops what it started
// within its own grace, so a supervisor never sees its worker end before
// its own stop arrived and restarts it; then the rest; then SIGKILL to
// whatever is still running.
func stopProcs(cfgPath string, procs []proc) error {
	var roots, children []proc
	for _, p := range procs {
		ppid := parentOf(p.pid)
		if slices.ContainsFunc(procs, func(q proc) bool { return q.pid == ppid }) {
			children = append(children, p)
		} else {
			roots = append(roots, p)
		}
	}
	for _, p := range roots {
		unix.PidfdSendSignal(p.fd, unix.SIGTERM, nil, 0)
	}
	alive := waitExit(roots, stopGrace)
	for _, p := range children {
		unix.PidfdSendSignal(p.fd, unix.SIGTERM, nil, 0)
	}
	alive = waitExit(append(alive, children...), childGrace)
	for _, p := range alive {
		unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0)
	}
	if left := waitExit(alive, killWait); len(left) > 0 {
		return fmt.Errorf("stop agent %s: pid %d still running %s after SIGKILL (in an uninterruptible sleep?): its lab directory is left in place", cfgPath, left[0].pid, killWait)
	}
	return nil
}

// waitExit waits until every process has exited or timeout passed, and
// returns those still running. A pidfd polls readable once its process has
// exited (pidfd_open(2)), whoever its parent is.
func waitExit(procs []proc, timeout time.Duration) []proc {
	deadline := time.Now().Add(timeout)
	for len(procs) > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			return procs
		}
		fds := make([]unix.PollFd, len(procs))
		for i, p := range procs {
			fds[i] = unix.PollFd{Fd: int32(p.fd), Events: unix.POLLIN}
		}
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return procs
		}
		var running []proc
		for i, p := range procs {
			if fds[i].Revents == 0 {
				running = append(running, p)
			}
		}
		procs = running
	}
	return nil
}

// agentProcs opens a pidfd on each process agentPIDs finds. The process is
// matched again once the pidfd is open: a pid that ended and was reused
// between the scan and the open is not taken.
func agentProcs(cfgPath string, in *netnsx.ID) ([]proc, error) {
	pids, err := agentPIDs(cfgPath, in)
	if err != nil {
		return nil, err
	}
	var out []proc
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if errors.Is(err, unix.ESRCH) {
			continue // ended since the scan
		}
		if err != nil {
			for _, p := range out {
				unix.Close(p.fd)
			}
			return nil, fmt.Errorf("stop agent %s: pidfd of pid %d: %w", cfgPath, pid, err)
		}
		if !runsWith(pid, cfgPath, in) {
			unix.Close(fd)
			continue
		}
		out = append(out, proc{pid, fd})
	}
	return out, nil
}

// agentPIDs finds the processes run with `--config cfgPath`, and in the
// network namespace in unless it is nil: a process elsewhere with the same
// arguments is not the lab's.
//
// A process in the middle of execve(2) shows an empty command line:
// fs/exec.c switches to the new memory, and closes the close-on-exec
// descriptor its parent waits on to learn that the exec went through,
// before the ELF loader sets up the argument pages. A worker that its
// supervisor (or a test's writer) started just before it was stopped is
// such a process; a scan that passed it over let stopAgent return with it
// running (TestStopAgent_WritersRacingTheRemoval_AllGoneBeforeItReturns/
// restart, 2 runs in 15 in the VM). So such processes are read again
// until their command line shows, for up to execSettle.
func agentPIDs(cfgPath string, in *netnsx.ID) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids, unsure []int
	classify := func(candidates []int) {
		unsure = nil
		for _, pid := range candidates {
			switch match, execing := identify(pid, cfgPath, in); {
			case match:
				pids = append(pids, pid)
			case execing:
				unsure = append(unsure, pid)
			}
		}
	}
	var all []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			all = append(all, pid)
		}
	}
	classify(all)
	for deadline := time.Now().Add(execSettle); len(unsure) > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		classify(unsure)
	}
	return pids, nil
}

// execSettle bounds how long agentPIDs waits for a process in execve(2)
// to show its command line: the kernel loading a binary, even on an
// emulated CPU under load, takes milliseconds.
const execSettle = time.Second

// runsWith reports whether pid's command line holds `--config cfgPath` and,
// unless in is nil, it runs in the network namespace in.
func runsWith(pid int, cfgPath string, in *netnsx.ID) bool {
	match, _ := identify(pid, cfgPath, in)
	return match
}

// identify is runsWith, and also reports whether pid (in the namespace in
// unless it is nil) cannot be told yet: a user process, neither a zombie
// nor exited, with an empty command line, which is one in execve(2).
func identify(pid int, cfgPath string, in *netnsx.ID) (match, execing bool) {
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return false, false
	}
	if in != nil {
		if ns, err := netnsx.IdentityOf(filepath.Join(dir, "ns", "net")); err != nil || ns != *in {
			return false, false
		}
	}
	if len(cmdline) == 0 {
		return false, userAndLive(pid)
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) == "--config" && string(args[i+1]) == cfgPath {
			return true, false
		}
	}
	return false, false
}

// parentOf returns pid's parent's pid, or 0 if it cannot be read.
func parentOf(pid int) int {
	f := agent.StatFields(pid)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(string(f[1]))
	return ppid
}

// userAndLive reports whether process pid is neither a kernel thread (their
// command line is always empty) nor a zombie or dead one (/proc/<pid>/stat:
// state, field 3; flags, field 9, PF_KTHREAD).
func userAndLive(pid int) bool {
	const pfKthread = 0x00200000 // include/linux/sched.h
	f := agent.StatFields(pid)
	if len(f) < 7 || bytes.ContainsAny(f[0], "ZXx") {
		return false
	}
	flags, err := strconv.ParseUint(string(f[6]), 10, 64)
	return err == nil && flags&pfKthread == 0
}

// xfrmTunnels are the IKE-keyed kernel tunnels an agent keys, as its config holds them.
func xfrmTunnels(steps []plan.KernelTunnel) []kernel.Tunnel {
	var out []kernel.Tunnel
	for _, k := range steps {
		out = append(out, kernel.Tunnel{Conn: k.Conn, IfID: k.IfID})
	}
	return out
}

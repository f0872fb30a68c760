package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/software"
)

// keeperReadyTimeout bounds a node's start-up: every daemon may take
// software.DaemonReadyTimeout, and exec commands their own time.
const keeperReadyTimeout = 2 * time.Minute

// SelfKeeper runs the keeper of a node's software from the running emu
// binary (`emu node --config path`).
func SelfKeeper(configPath string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the emu binary: %w", err)
	}
	return exec.Command(exe, "node", "--config", configPath), nil
}

// KeeperConfigPath is where the keeper of a node's software finds its
// config; SoftwareStatePath where it publishes its daemons' state.
func KeeperConfigPath(labDir, node string) string {
	return filepath.Join(labDir, "nodes", node+".json")
}

// SoftwareStatePath is the daemons' state a node's keeper publishes.
func SoftwareStatePath(labDir, node string) string {
	return filepath.Join(labDir, "nodes", node+".state.json")
}

// startKeeper records the keeper by its config path, then starts it inside
// the node's network namespace and in a new mount namespace (which it holds
// for the node's life), and waits until its daemons run and its exec
// commands succeeded. Destroy finds it by that config path and stops it; it
// stops its daemons first.
func (d *Deployer) startKeeper(j *journal, s plan.Software) error {
	cfgPath := KeeperConfigPath(s.LabDir, s.Node)
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		return err
	}
	logDir := filepath.Join(s.LabDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	cfg := software.Config{Topology: s.Topology, Node: s.Node, Namespace: s.Namespace, LogDir: logDir,
		State: SoftwareStatePath(s.LabDir, s.Node), Software: s.Software, Container: s.Container}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath, data, 0o600); err != nil {
		return fmt.Errorf("write the config of %s's software: %w", s.Node, err)
	}
	if err := j.add(Entry{Kind: "software", Name: cfgPath}); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(logDir, s.Node+".keeper.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	mk := d.Keeper
	if mk == nil {
		mk = SelfKeeper
	}
	cmd, err := mk(cfgPath)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{w}
	// Its own session, so a Ctrl-C meant for a later command spares it; its
	// own mount namespace, with private propagation, for the node's /run,
	// /sys and binds.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	err = netnsx.Do(s.Namespace, cmd.Start)
	w.Close()
	if err != nil {
		return fmt.Errorf("start the software of %s: %w", s.Node, err)
	}
	go cmd.Wait()
	r.SetReadDeadline(time.Now().Add(keeperReadyTimeout))
	out, err := io.ReadAll(r)
	msg := strings.TrimSpace(string(out))
	switch {
	case msg == software.Ready:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("node %s: its daemons and exec commands did not finish within %s (logs in %s)", s.Node, keeperReadyTimeout, logDir)
	case msg == "":
		return fmt.Errorf("node %s: the keeper of its software exited before it was ready (log: %s)", s.Node, logFile.Name())
	}
	return errors.New(strings.TrimPrefix(msg, "error: "))
}

// NodeSoftware returns the running keeper of a node's software and its
// config, or 0 and nil when the node runs none.
func NodeSoftware(labDir, node string) (int, *software.Config, error) {
	cfgPath := KeeperConfigPath(labDir, node)
	data, err := os.ReadFile(cfgPath)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	var cfg software.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return 0, nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	pids, err := agentPIDs(cfgPath)
	if err != nil {
		return 0, nil, err
	}
	if len(pids) == 0 {
		return 0, &cfg, fmt.Errorf("node %s: the keeper of its software is not running (see %s): redeploy the lab", node, filepath.Join(labDir, "logs", node+".keeper.log"))
	}
	return pids[0], &cfg, nil
}

// DaemonStatus is a daemon of a node as inspect shows it: from the state
// its keeper publishes, confirmed against the live processes.
type DaemonStatus struct {
	Name  string `json:"name"`
	State string `json:"state"` // "running", "dead: <how it ended>", or "unknown: <why>"
	PID   int    `json:"pid,omitempty"`
	Log   string `json:"log,omitempty"`
}

// Daemons reports the daemons of a node, nil if it runs none. A state file
// left by a keeper that is no longer running is not believed.
func Daemons(labDir, node string) []DaemonStatus {
	pid, cfg, err := NodeSoftware(labDir, node)
	if cfg == nil || len(cfg.Software.Daemons) == 0 {
		return nil
	}
	st, serr := software.ReadState(SoftwareStatePath(labDir, node))
	var out []DaemonStatus
	for _, d := range cfg.Software.Daemons {
		ds := DaemonStatus{Name: d.Name, State: "unknown: its keeper published nothing"}
		switch {
		case err != nil:
			ds.State = "dead: the node's keeper is not running"
		case serr == nil && st.Keeper == pid:
			for _, s := range st.Daemons {
				if s.Name != d.Name {
					continue
				}
				ds.PID, ds.Log = s.PID, s.Log
				switch {
				case !s.Running:
					ds.State = "dead: " + s.Exit
				case agent.Alive(s.PID):
					ds.State = "running"
				default:
					ds.State = "dead: gone without a trace"
				}
			}
		}
		out = append(out, ds)
	}
	return out
}

// stopOrphans kills what is left of a node's daemons when their keeper could
// not stop them (it was killed): the processes of the daemons' process
// groups, from the state the keeper recorded, that still run in the node's
// network namespace. Both must match, so a reused process group id never
// hits a stranger.
func stopOrphans(cfgPath string) error {
	data, err := os.ReadFile(cfgPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the deploy stopped before writing it: nothing started
	}
	if err != nil {
		return err
	}
	var cfg software.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	st, err := software.ReadState(cfg.State)
	if err != nil {
		return nil // no daemon was started
	}
	var nsStat syscall.Stat_t
	if err := syscall.Stat(netnsx.Path(cfg.Namespace), &nsStat); err != nil {
		return nil // the namespace is gone, and with it every process's network
	}
	groups := map[int]bool{}
	for _, d := range st.Daemons {
		groups[d.PID] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pgid, err := syscall.Getpgid(pid)
		if err != nil || !groups[pgid] {
			continue
		}
		var ns syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &ns) == nil && ns.Ino == nsStat.Ino && ns.Dev == nsStat.Dev {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return nil
}

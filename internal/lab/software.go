package lab

import (
	"context"
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
	"github.com/emu-lab/emu/internal/safefile"
	"github.com/emu-lab/emu/internal/software"
)

// keeperReadyTimeout bounds a node's start-up: every daemon may take
// software.DaemonReadyTimeout, and exec commands their own time.
const keeperReadyTimeout = 2 * time.Minute

// SelfKeeper runs the keeper of a node's software from the running emu
// binary (`emu node --config path`).
func SelfKeeper(configPath string) (*exec.Cmd, error) { return selfCommand("node", configPath) }

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
// commands succeeded, or ctx is cancelled (the deploy was interrupted, or
// another step failed): then it returns ctx's cause at once and leaves the
// keeper to the rollback. Destroy finds it by that config path and stops
// it; it stops its daemons first.
func (d *Deployer) startKeeper(ctx context.Context, j *journal, s plan.Software) error {
	cfgPath := KeeperConfigPath(s.LabDir, s.Node)
	logDir := filepath.Join(s.LabDir, "logs")
	for _, dir := range []string{filepath.Dir(cfgPath), logDir} {
		if err := ownDir(j, dir, 0o755); err != nil {
			return err
		}
	}
	cfg := software.Config{Topology: s.Topology, Node: s.Node, Namespace: s.Namespace, LogDir: logDir,
		State: SoftwareStatePath(s.LabDir, s.Node), Software: s.Software, Container: s.Container}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	// The keeper publishes its state through a temporary file: a killed
	// keeper may leave it, so it is journalled with the state.
	for _, f := range []string{cfgPath, cfg.State, safefile.TmpPath(cfg.State)} {
		if err := j.add(Entry{Kind: "file", Name: f}); err != nil {
			return err
		}
	}
	if err := safefile.WriteFile(cfgPath, data, 0o600); err != nil {
		return fmt.Errorf("write the config of %s's software: %w", s.Node, err)
	}
	if err := j.add(Entry{Kind: "software", Name: cfgPath, Netns: s.Namespace}); err != nil {
		return err
	}
	logFile, err := safefile.OpenAppend(filepath.Join(logDir, s.Node+".keeper.log"), 0o644)
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
	// Its own session, so a Ctrl-C meant for a later command spares it; its
	// own mount namespace, with private propagation, for the node's /run,
	// /sys and binds.
	r, err := startInNode(s.Namespace, cmd, logFile, &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS})
	if err != nil {
		return fmt.Errorf("start the software of %s: %w", s.Node, err)
	}
	defer r.Close()
	// The node's mount namespace, made for the keeper: destroy empties it of
	// whatever its daemons left, in whatever session or network namespace.
	// A keeper already gone (it failed at once, and says why below) stopped
	// what it started.
	if mnt, err := netnsx.IdentityOf(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)); err == nil {
		if err := j.add(Entry{Kind: "mntns", Name: cfgPath, ID: &mnt}); err != nil {
			return err
		}
	}
	r.SetReadDeadline(time.Now().Add(keeperReadyTimeout))
	// A deadline in the past ends the read at once.
	defer context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Now()) })()
	out, err := io.ReadAll(r)
	msg := strings.TrimSpace(string(out))
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("node %s: stopped waiting for its daemons and exec commands: %w", s.Node, context.Cause(ctx))
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
	data, err := safefile.ReadFile(cfgPath)
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
	pids, err := agentPIDs(cfgPath, currentNS(cfg.Namespace))
	if err != nil {
		return 0, nil, err
	}
	if len(pids) == 0 {
		return 0, &cfg, fmt.Errorf("node %s: the keeper of its software is not running (see %s): redeploy the lab", node, filepath.Join(labDir, "logs", node+".keeper.log"))
	}
	return pids[0], &cfg, nil
}

// currentNS is the identity of the named network namespace now, nil if it
// has none.
func currentNS(name string) *netnsx.ID {
	id, err := netnsx.IdentityOf(netnsx.Path(name))
	if err != nil {
		return nil
	}
	return &id
}

// DaemonStatus is a daemon of a node as inspect shows it: its liveness
// from the process itself (its pid and start time, from the state its
// keeper published), whether or not its keeper still runs.
type DaemonStatus struct {
	Name  string `json:"name"`
	State string `json:"state"` // "running", "dead: <how it ended>", or "unknown: <why>"
	PID   int    `json:"pid,omitempty"`
	Log   string `json:"log,omitempty"`
	// Unwatched says why no keeper watches the daemon any more (it was
	// killed): a death is not recorded, and only destroy stops it.
	Unwatched string `json:"unwatched,omitempty"`
}

// Daemons reports the daemons of a node, nil if it runs none. A daemon is
// running when the process its keeper started (same pid, same start time)
// is: a killed keeper does not take a daemon that changed its user (the
// kernel then clears its parent-death signal, as FRR's do) along, nor one's
// children.
func Daemons(labDir, node string) []DaemonStatus {
	keeper, cfg, kerr := NodeSoftware(labDir, node)
	if cfg == nil || len(cfg.Software.Daemons) == 0 {
		return nil
	}
	st, serr := software.ReadState(SoftwareStatePath(labDir, node))
	unwatched := ""
	if kerr != nil || serr != nil || st.Keeper != keeper {
		unwatched = fmt.Sprintf("the node's keeper is not running (log: %s): `emu destroy` stops what is left", filepath.Join(labDir, "logs", node+".keeper.log"))
	}
	var out []DaemonStatus
	for _, d := range cfg.Software.Daemons {
		ds := DaemonStatus{Name: d.Name, State: "unknown: its keeper published nothing", Unwatched: unwatched}
		if serr != nil {
			out = append(out, ds)
			continue
		}
		for _, s := range st.Daemons {
			if s.Name != d.Name {
				continue
			}
			ds.PID, ds.Log = s.PID, s.Log
			switch {
			case !s.Running:
				ds.State, ds.Unwatched = "dead: "+s.Exit, ""
			case s.Start != 0 && agent.Same(s.PID, s.Start), s.Start == 0 && agent.Alive(s.PID):
				ds.State = "running"
			case unwatched != "":
				ds.State = "dead: ended while no keeper watched it"
			default:
				ds.State = "dead: gone without a trace"
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
	data, err := safefile.ReadFile(cfgPath)
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

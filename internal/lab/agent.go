package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
)

// agentReadyTimeout bounds how long deploy waits for an agent to serve.
const agentReadyTimeout = 10 * time.Second

// AgentCommand returns the command that runs `emu agent --config path`.
// Tests replace it so their own binary plays the agent.
type AgentCommand func(configPath string) (*exec.Cmd, error)

// SelfAgent runs the agent from the running emu binary.
func SelfAgent(configPath string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the emu binary: %w", err)
	}
	return exec.Command(exe, "agent", "--config", configPath), nil
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
	data, err := json.MarshalIndent(agent.Config{Lab: filepath.Base(labDir), Node: s.Node, Tunnels: s.Tunnels, Monitors: s.Monitors, BGP: s.BGP, Routes: s.Routes}, "", "  ")
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
	if err := writeSecret(cfgPath, data); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	if err := j.add(Entry{Kind: "agent", Name: cfgPath}); err != nil {
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
	logFile, err := openLog(logPath)
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
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{w}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", agent.ReadyEnv, agent.ReadyFD))
	// Its own session: a Ctrl-C meant for a later command must not stop it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// The child inherits the namespace of the thread that forks it.
	err = netnsx.Do(s.Namespace, cmd.Start)
	w.Close()
	if err != nil {
		return fmt.Errorf("start agent of %s: %w", s.Node, err)
	}
	go cmd.Wait() // reap it if it exits while deploy still runs
	line, err := agent.ReadLine(r, agentReadyTimeout)
	if err != nil || line != agent.Ready {
		if line == "" {
			line = fmt.Sprint(err)
		}
		return fmt.Errorf("agent of %s did not start: %s (log: %s)", s.Node, strings.TrimPrefix(line, "error: "), logPath)
	}
	return nil
}

// stopAgent ends the agent started with that config path, found by its exact
// command line, never by a pattern: SIGTERM, then SIGKILL after a grace.
func stopAgent(cfgPath string) error {
	pids, err := agentPIDs(cfgPath)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, pid := range pids {
		for agent.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if agent.Alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return nil
}

func agentPIDs(cfgPath string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) == "--config" && string(args[i+1]) == cfgPath {
				pids = append(pids, pid)
			}
		}
	}
	return pids, nil
}

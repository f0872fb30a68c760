package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
	"github.com/emu-lab/emu/internal/routing"
	"github.com/emu-lab/emu/internal/safefile"
)

// State is what an agent's worker publishes of itself every PublishEvery, for
// deploy to wait on and for `emu check`, `emu inspect` and `emu ipsec` to
// read, without a control socket. Updated is its heartbeat; the tunnel
// counters are also the checkpoint a restarted worker resumes its SAs from.
type State struct {
	Updated time.Time `json:"updated"`
	// PID and PIDStart (clock ticks since boot, /proc/<pid>/stat field 22)
	// identify the worker that wrote it, also after its pid is reused.
	PID       int                     `json:"pid"`
	PIDStart  uint64                  `json:"pid_start"`
	Started   time.Time               `json:"started"`
	Neighbors []routing.NeighborState `json:"neighbors,omitempty"`
	Routes    []routing.Route         `json:"routes,omitempty"`
	// Tunnels and Drops are the userspace ESP dataplane's counters (none
	// on the kernel dataplane: `ip -s xfrm state` has those).
	Tunnels []userspace.TunnelStats `json:"tunnels,omitempty"`
	Drops   *userspace.Drops        `json:"drops,omitempty"`
	// IKE is the negotiation state of the node's IKE-keyed connections,
	// IKECounters what its IKE endpoints received and dropped.
	IKE         []ike.Status  `json:"ike,omitempty"`
	IKECounters *ike.Counters `json:"ike_counters,omitempty"`
}

// PublishEvery is the heartbeat: how often a worker writes its state.
const PublishEvery = 500 * time.Millisecond

// StaleAfter is how old a state may be and still count as current: six
// missed heartbeats. An older one is from a dead or hung worker.
const StaleAfter = 3 * time.Second

// StatePath is where the agent with that config file publishes its state.
func StatePath(configPath string) string { return sibling(configPath, ".state.json") }

// LogPath is where deploy sends the agent's output: emu-<lab>/logs/<node>.log
// for emu-<lab>/agents/<node>.json.
func LogPath(configPath string) string {
	dir := filepath.Dir(filepath.Dir(configPath))
	return filepath.Join(dir, "logs", strings.TrimSuffix(filepath.Base(configPath), filepath.Ext(configPath))+".log")
}

func sibling(configPath, suffix string) string {
	return strings.TrimSuffix(configPath, filepath.Ext(configPath)) + suffix
}

// ReadState reads an agent's current state. It fails, naming the node, the
// agent's health and its log, when the state is older than StaleAfter: a
// dead or hung agent's last words are never reported as current.
func ReadState(configPath string) (*State, error) {
	s, err := readState(configPath)
	if err != nil {
		return nil, fmt.Errorf("agent of %s has no state: %w; it is %s (log: %s)", nodeOf(configPath), err, Check(configPath).Summary(), LogPath(configPath))
	}
	age := time.Since(s.Updated)
	if age <= StaleAfter && Same(s.PID, s.PIDStart) {
		return s, nil
	}
	return nil, fmt.Errorf("agent of %s: its state (pid %d, %s old) is not current: %s (log: %s)",
		nodeOf(configPath), s.PID, age.Round(100*time.Millisecond), Check(configPath).Summary(), LogPath(configPath))
}

func readState(configPath string) (*State, error) {
	data, err := safefile.ReadFile(StatePath(configPath))
	if err != nil {
		return nil, err
	}
	var s State
	return &s, json.Unmarshal(data, &s)
}

func nodeOf(configPath string) string {
	return strings.TrimSuffix(filepath.Base(configPath), filepath.Ext(configPath))
}

// publish writes the worker's state now and every PublishEvery until ctx
// ends, atomically, so a reader never sees half a file.
//
// With IKE endpoints it also stores the keys of the SAs they negotiated for
// tunnels (saveSAs), when they change. It closes written once the first
// state is on disk.
func publish(ctx context.Context, configPath string, started time.Time, s *routing.Speaker, dp *userspace.Dataplane, endpoints []*ike.Endpoint, tunnels []ipsec.Conn, written chan<- struct{}) {
	tick := time.NewTicker(PublishEvery)
	defer tick.Stop()
	self, _ := procStart(os.Getpid())
	var sas []byte
	for {
		st := State{Updated: time.Now(), PID: os.Getpid(), PIDStart: self, Started: started}
		if s != nil {
			st.Neighbors, _ = s.Neighbors(ctx)
			st.Routes, _ = s.Routes(ctx)
		}
		if dp != nil {
			st.Tunnels = dp.Stats()
			drops := dp.Drops()
			st.Drops = &drops
		}
		if len(endpoints) > 0 {
			st.IKE, st.IKECounters = ikeState(endpoints)
			sas = saveSAs(configPath, tunnels, endpoints, sas)
		}
		writeJSON(StatePath(configPath), st, 0o644)
		if written != nil {
			close(written)
			written = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Files are the files the agent of configPath writes beside it: its state,
// its supervisor's status, and the temporary files they are renamed from,
// for deploy to record and destroy to remove.
func Files(configPath string) []string {
	var out []string
	for _, f := range []string{StatePath(configPath), StatusPath(configPath), SAsPath(configPath)} {
		out = append(out, f, tmpPath(f))
	}
	return out
}

func tmpPath(path string) string { return safefile.TmpPath(path) }

// writeJSON replaces path atomically (a temp file renamed over it).
func writeJSON(path string, v any, mode os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return safefile.Replace(path, data, mode)
}

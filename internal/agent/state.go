package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/routing"
)

// State is what an agent publishes of itself, for deploy to wait on and for
// `emu check` and `emu inspect` to read, without a control socket.
type State struct {
	Updated   time.Time               `json:"updated"`
	Neighbors []routing.NeighborState `json:"neighbors,omitempty"`
	Routes    []routing.Route         `json:"routes,omitempty"`
}

// StatePath is where the agent with that config file publishes its state.
func StatePath(configPath string) string {
	return strings.TrimSuffix(configPath, filepath.Ext(configPath)) + ".state.json"
}

// ReadState reads an agent's last published state.
func ReadState(configPath string) (*State, error) {
	data, err := os.ReadFile(StatePath(configPath))
	if err != nil {
		return nil, err
	}
	var s State
	return &s, json.Unmarshal(data, &s)
}

// publish writes the speaker's state every interval until ctx ends,
// atomically, so a reader never sees half a file.
func publish(ctx context.Context, configPath string, s *routing.Speaker, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	path := StatePath(configPath)
	for {
		st := State{Updated: time.Now()}
		st.Neighbors, _ = s.Neighbors(ctx)
		st.Routes, _ = s.Routes(ctx)
		if data, err := json.MarshalIndent(st, "", "  "); err == nil {
			tmp := path + ".tmp"
			if os.WriteFile(tmp, data, 0o644) == nil {
				os.Rename(tmp, path)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestCheck_JudgesProcessesAndHeartbeat_NeverAnOldFile(t *testing.T) {
	self := os.Getpid()
	start, ok := procStart(self)
	if !ok {
		t.Fatal("no start time for this process")
	}
	dead := deadPID(t)
	fresh, old := time.Now(), time.Now().Add(-time.Minute)
	for _, c := range []struct {
		name   string
		status Status
		state  *State
		want   string
	}{
		{"worker and heartbeat alive", Status{SupervisorPID: self, SupervisorStart: start, WorkerPID: self, WorkerStart: start, Since: old}, &State{PID: self, PIDStart: start, Updated: fresh}, StateAlive},
		{"no heartbeat for a minute", Status{SupervisorPID: self, SupervisorStart: start, WorkerPID: self, WorkerStart: start, Since: old}, &State{PID: self, PIDStart: start, Updated: old}, StateHung},
		{"never published", Status{SupervisorPID: self, SupervisorStart: start, WorkerPID: self, WorkerStart: start, Since: old}, nil, StateHung},
		{"worker gone, supervisor alive", Status{SupervisorPID: self, SupervisorStart: start, WorkerPID: dead, Since: old}, &State{PID: dead, Updated: fresh}, StateRestarting},
		{"both gone, a fresh file left behind", Status{SupervisorPID: dead, WorkerPID: dead, Since: old}, &State{PID: dead, Updated: fresh}, StateDead},
		{"pid reused by another process", Status{SupervisorPID: dead, WorkerPID: self, WorkerStart: start + 1, Since: old}, &State{PID: self, PIDStart: start + 1, Updated: fresh}, StateDead},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "agents", "vpngw.json")
			os.MkdirAll(filepath.Dir(cfg), 0o700)
			if err := writeJSON(StatusPath(cfg), c.status, 0o644); err != nil {
				t.Fatal(err)
			}
			if c.state != nil {
				if err := writeJSON(StatePath(cfg), c.state, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			h := Check(cfg)
			if h.State != c.want || h.Alive != (c.want == StateAlive) {
				t.Fatalf("health %s, want %s", h.Summary(), c.want)
			}
			_, err := ReadState(cfg)
			if (err == nil) != h.Alive {
				t.Errorf("agent %s, but ReadState err = %v", h.State, err)
			}
			if err != nil && (!strings.Contains(err.Error(), "vpngw") || !strings.Contains(err.Error(), LogPath(cfg))) {
				t.Errorf("error does not name the agent and its log: %v", err)
			}
		})
	}
}

package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/emu-lab/emu/internal/safefile"
)

// Status is what an agent's supervisor records of itself and of the worker it
// runs, each process identified by pid and start time (field 22 of
// /proc/<pid>/stat, in clock ticks since boot), so a pid the kernel reused is
// never taken for the agent.
type Status struct {
	SupervisorPID   int       `json:"supervisor_pid"`
	SupervisorStart uint64    `json:"supervisor_start"`
	WorkerPID       int       `json:"worker_pid"` // 0 while none runs
	WorkerStart     uint64    `json:"worker_start"`
	Since           time.Time `json:"since"`    // when the current worker started
	Restarts        int       `json:"restarts"` // workers started after the first
	LastExit        string    `json:"last_exit,omitempty"`
	LastExitAt      time.Time `json:"last_exit_at,omitzero"`
}

// StatusPath is where the supervisor of the agent with that config records
// its Status.
func StatusPath(configPath string) string { return sibling(configPath, ".status.json") }

// Health is the live verdict on one agent, from its processes and heartbeat.
type Health struct {
	Node     string    `json:"node"`
	State    string    `json:"state"` // alive, dead, hung, restarting, or unknown
	Alive    bool      `json:"alive"`
	PID      int       `json:"pid,omitempty"` // the worker's
	Since    time.Time `json:"since,omitzero"`
	Restarts int       `json:"restarts"`
	Detail   string    `json:"detail,omitempty"` // why it is not alive, or the last restart
	Log      string    `json:"log"`
}

// Agent states.
const (
	StateAlive      = "alive"
	StateDead       = "dead"
	StateHung       = "hung"
	StateRestarting = "restarting"
	StateUnknown    = "unknown"
)

// Summary is one line for tables and error messages.
func (h Health) Summary() string {
	s := h.State
	if h.PID != 0 {
		s += fmt.Sprintf(" pid %d", h.PID)
	}
	if !h.Since.IsZero() {
		s += " since " + h.Since.Format(time.TimeOnly)
	}
	s += fmt.Sprintf(", restarts %d", h.Restarts)
	if h.Detail != "" {
		s += " (" + h.Detail + ")"
	}
	return s
}

// Check judges the agent with that config from its supervisor's record, the
// processes it names and the worker's heartbeat.
func Check(configPath string) Health {
	h := Health{Node: nodeOf(configPath), State: StateUnknown, Log: LogPath(configPath)}
	data, err := safefile.ReadFile(StatusPath(configPath))
	if err != nil {
		h.Detail = fmt.Sprintf("no record of its supervisor: %v", err)
		return h
	}
	var st Status
	if err := json.Unmarshal(data, &st); err != nil {
		h.Detail = fmt.Sprintf("unreadable record %s: %v", StatusPath(configPath), err)
		return h
	}
	h.Restarts, h.Since = st.Restarts, st.Since
	if st.LastExit != "" {
		h.Detail = fmt.Sprintf("last restart after %s at %s", st.LastExit, st.LastExitAt.Format(time.TimeOnly))
	}
	supervised := Same(st.SupervisorPID, st.SupervisorStart)
	worker := st.WorkerPID != 0 && Same(st.WorkerPID, st.WorkerStart)
	if worker {
		h.PID = st.WorkerPID
	}
	switch {
	case !worker && supervised:
		h.State, h.Detail = StateRestarting, fmt.Sprintf("worker gone (%s), its supervisor pid %d restarts it", st.LastExit, st.SupervisorPID)
	case !worker:
		h.State, h.Detail = StateDead, fmt.Sprintf("worker pid %d and supervisor pid %d are gone", st.WorkerPID, st.SupervisorPID)
	default:
		s, err := readState(configPath)
		switch {
		case err != nil && time.Since(st.Since) > StaleAfter:
			h.State, h.Detail = StateHung, fmt.Sprintf("no heartbeat: %v", err)
		case err == nil && s.PID == st.WorkerPID && time.Since(s.Updated) > StaleAfter:
			h.State, h.Detail = StateHung, fmt.Sprintf("no heartbeat for %s", time.Since(s.Updated).Round(100*time.Millisecond))
		case err == nil && s.PID != st.WorkerPID && time.Since(st.Since) > StaleAfter:
			h.State, h.Detail = StateHung, fmt.Sprintf("worker pid %d never published", st.WorkerPID)
		case !supervised:
			h.State, h.Alive = StateAlive, true
			h.Detail = fmt.Sprintf("its supervisor pid %d is gone: no restart if it dies", st.SupervisorPID)
		default:
			h.State, h.Alive = StateAlive, true
		}
	}
	return h
}

// Alive reports whether pid is a running process (a zombie is not: it no
// longer holds anything).
func Alive(pid int) bool {
	_, ok := procStart(pid)
	return ok
}

// Same reports whether pid is still the process that started at start
// (clock ticks since boot): alive, and not a reused pid.
func Same(pid int, start uint64) bool {
	got, ok := procStart(pid)
	return ok && got == start
}

// StartTime returns a live process's start time (clock ticks since boot),
// for Same to tell it later from another process given the same pid.
func StartTime(pid int) (uint64, bool) { return procStart(pid) }

// procStart returns a live process's start time from /proc/<pid>/stat.
func procStart(pid int) (uint64, bool) {
	if pid <= 0 {
		return 0, false
	}
	// State is field 3, starttime field 22.
	f := StatFields(pid)
	if len(f) < 20 || f[0][0] == 'Z' || f[0][0] == 'X' {
		return 0, false
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	return start, err == nil
}

// StatFields returns the fields of /proc/<pid>/stat (proc(5)) after the
// command name, which may hold spaces and parentheses (fields count from
// the last ')'): f[0] is the state (field 3), f[1] the parent's pid (field
// 4), f[6] the flags (field 9), f[19] the start time (field 22); nil if the
// process is gone or the file cannot be read.
func StatFields(pid int) [][]byte {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return bytes.Fields(stat[i+1:])
}

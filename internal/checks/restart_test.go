package checks_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/labtest"
)

// An agent killed while a check runs is restarted by its supervisor within
// seconds, and the agent rows at the top judged it before: the failed row
// of that check names the restart, and a failed row at the end says the
// run was not on a steady lab (the attacker's kill -9 during --failover
// left guide-level failures that never mentioned it).
func TestRun_AgentRestartedDuringACheck_NamedInItsRowAndAtTheEnd(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	cfg := filepath.Join(l.Plan.LabDir, "agents", "onprem.json")
	killer := checks.Check{Name: "killer", Run: func(ctx context.Context, _ checks.Lab) []checks.Result {
		h := agent.Check(cfg)
		if !h.Alive || h.PID == 0 {
			return []checks.Result{{Check: "killer", Evidence: "onprem's agent was not alive to begin with: " + h.Summary()}}
		}
		if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
			return []checks.Result{{Check: "killer", Evidence: err.Error()}}
		}
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if agent.Check(cfg).Restarts > h.Restarts {
				break
			}
		}
		return []checks.Result{{Check: "killer", Evidence: "traffic stopped"}}
	}}
	rs := checks.Run(context.Background(), checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}, []checks.Check{checks.Agents, killer})
	for _, r := range rs {
		t.Logf("%s: %s: %s", r.Check, r.Outcome(), r.Evidence)
	}
	var killerRow, endRow *checks.Result
	for i, r := range rs {
		switch r.Check {
		case "killer":
			killerRow = &rs[i]
		case "agent onprem during the checks":
			endRow = &rs[i]
		}
	}
	if killerRow == nil || !strings.Contains(killerRow.Evidence, "agent of onprem restarted (restarts 0 → 1, last restart after ") {
		t.Errorf("the check's failed row must name the restart: %+v", killerRow)
	}
	if endRow == nil || endRow.Outcome() != checks.OutcomeFail || !strings.Contains(endRow.Evidence, "onprem restarted (restarts 0 → 1") {
		t.Errorf("a failed row at the end must name the restart: %+v", endRow)
	}
	if rs[len(rs)-1].Check != "agent onprem during the checks" {
		t.Errorf("the restart row must come last, got %q", rs[len(rs)-1].Check)
	}
}

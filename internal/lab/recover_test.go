package lab_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/topology"
)

// The wait after a repair ends when its context does (Ctrl-C), at once,
// returning what is still missing: here a BGP speaker whose agent
// publishes no state, which is never taken as recovered.
func TestAwaitRecovery_ContextEnds_StopsAndNamesWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "agents"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "agents", "r1.json"), []byte(`{"lab":"x","node":"r1","bgp":{"asn":65001}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	topo := &topology.Topology{Name: "x", Nodes: []*topology.Node{{Name: "r1"}, {Name: "h1"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	var shown []lab.Recovery
	missing, _, err := lab.AwaitRecovery(ctx, topo, dir, time.Now(), time.Minute, func(m lab.Recovery) { shown = append(shown, m) })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %s, want the context's error at once", err, time.Since(start))
	}
	if len(missing) != 1 || !strings.Contains(missing[0].Text, "agent of r1 has no state") || missing[0].Kind != lab.MissingAgent {
		t.Errorf("missing %q, want r1's agent without state", missing)
	}
	if len(shown) != 1 {
		t.Errorf("progress called %d times for one unchanged state, want 1", len(shown))
	}
}

// What a repair waited for is counted by kind, so the user reads what came
// back: on static.yaml the two routes DPD withdrew, never "IKE SAs, BGP
// sessions or routes" in a lab that has neither IKE nor BGP.
func TestRecoveryCount_NamesWhatCameBack(t *testing.T) {
	for _, c := range []struct {
		r    lab.Recovery
		want string
	}{
		{nil, ""},
		{lab.Recovery{{lab.MissingDPDRoute, "r1", "onprem: to-vpc dpd not back yet"}, {lab.MissingDPDRoute, "r2", "vpngw: to-dc dpd not back yet"}}, "2 routes withdrawn by DPD"},
		{lab.Recovery{{lab.MissingBGPPrefix, "a", "a"}, {lab.MissingBGPSession, "b", "b"}, {lab.MissingIKE, "c", "c"}, {lab.MissingBGPPrefix, "d", "d"}}, "1 IKE SA, 1 BGP session, 2 BGP prefixes"},
		// Both ends of one session down: one session came back.
		{lab.Recovery{{lab.MissingBGPSession, "BGP 169.254.10.1 ↔ 169.254.10.2", "onprem: neighbor 169.254.10.2 is active"}, {lab.MissingBGPSession, "BGP 169.254.10.1 ↔ 169.254.10.2", "vpngw: neighbor 169.254.10.1 is active"}}, "1 BGP session"},
		{lab.Recovery{{lab.MissingHealthRoute, "", "e"}}, "1 route withdrawn by the health check"},
	} {
		if got := c.r.Count(); got != c.want {
			t.Errorf("Count(%v) = %q, want %q", c.r, got, c.want)
		}
	}
}

// A wait's progress adds up by object: a BGP session seen idle, then
// active, came back once.
func TestRecoveryAdd_ObjectWhoseStateChanged_CountedOnce(t *testing.T) {
	var waited lab.Recovery
	waited = waited.Add(lab.Recovery{{lab.MissingBGPSession, "onprem neighbor 169.254.10.2", "onprem: neighbor 169.254.10.2 is idle"}})
	waited = waited.Add(lab.Recovery{
		{lab.MissingBGPSession, "onprem neighbor 169.254.10.2", "onprem: neighbor 169.254.10.2 is active"},
		{lab.MissingBGPPrefix, "onprem 172.16.2.0/24", "onprem: 172.16.2.0/24 (from vpngw) not installed yet"},
	})
	if got, want := waited.Count(), "1 BGP session, 1 BGP prefix"; got != want {
		t.Errorf("Count = %q, want %q", got, want)
	}
}

// After a repair on a BGP lab with ten sessions of which one dropped, the
// nine only waited for a keepalive are neither counted as come back nor
// listed one by one: the progress line names the dropped one and sums up
// the rest; the session that dropped after being waited for is counted.
func TestRecovery_SessionsOnlyAwaitingAKeepalive_SummedUpNotCounted(t *testing.T) {
	var waiting lab.Recovery
	for i := range 9 {
		key := fmt.Sprintf("r%d neighbor 169.254.%d.2", i, i)
		waiting = append(waiting, lab.Missing{Kind: lab.MissingKeepalive, Object: key, Text: key + " is established but has not heard from its peer since the repair"})
	}
	down := lab.Missing{Kind: lab.MissingBGPSession, Object: "onprem neighbor 169.254.10.2", Text: "onprem: neighbor 169.254.10.2 is active"}
	got := append(slices.Clone(waiting), down).String()
	if want := "onprem: neighbor 169.254.10.2 is active; waiting for keepalives from 9 BGP sessions established before the repair"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
	waited := lab.Recovery{}.Add(waiting)
	if got := waited.Count(); got != "" {
		t.Errorf("Count of sessions that never went down = %q, want empty", got)
	}
	// r0's session drops after all: it came back, once.
	waited = waited.Add(lab.Recovery{{Kind: lab.MissingBGPSession, Object: waiting[0].Object, Text: "r0: neighbor 169.254.0.2 is idle"}, down})
	if got, want := waited.Count(), "2 BGP sessions"; got != want {
		t.Errorf("Count = %q, want %q", got, want)
	}
}

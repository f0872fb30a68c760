package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/labtest"
)

// A repair says what it removed and what is still broken in the lab: never
// "repaired" while the other end of the tunnel still drops ESP. The manual
// route step says when it changed nothing. Results go to stdout; a node
// interface that does not exist is an input error naming those that do.
func TestCLI_FaultUp_SaysWhatItRemovedAndWhatFaultsRemain(t *testing.T) {
	labtest.RequireRoot(t)
	state := t.TempDir()
	name := labtest.UniqueName()
	topo := labtest.Copy(t, staticTopology, name)
	t.Cleanup(func() {
		runEmu(t, state, "destroy", "-t", topo, "--cleanup")
		labtest.AssertNothingLeft(t, name)
	})
	if r := runEmu(t, state, "deploy", "-t", topo); r.code != 0 {
		t.Fatalf("deploy: exit %d: %s", r.code, r.stderr)
	}
	step := func(want string, args ...string) {
		t.Helper()
		r := runEmu(t, state, append(args, "-t", topo)...)
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("emu %s: exit %d, stdout lacks %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
		}
	}
	step("tunnel vpngw:to-dc (172.16.1.10 ↔ 10.0.0.1) is broken", "fault", "tunnel", "down", "vpngw:to-dc")
	step("tunnel onprem:to-vpc (10.0.0.1 ↔ 172.16.1.10): no fault on onprem, nothing removed\n"+
		`faults still in lab "`+name+`": tunnel vpngw:to-dc (ESP dropped)`, "fault", "tunnel", "up", "onprem:to-vpc")
	step("link vbr:eth1 is down", "fault", "link", "down", "vbr:eth1")
	// inspect shows both faults on the nodes that hold them.
	r := runEmu(t, state, "inspect", "-t", topo, "--format", "json")
	var nodes []nodeView
	if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil {
		t.Fatalf("inspect json: %v: %s", err, r.stdout)
	}
	faults := map[string][]fault.Fault{}
	for _, n := range nodes {
		if len(n.Faults) > 0 {
			faults[n.Node] = n.Faults
		}
	}
	if want := map[string][]fault.Fault{"vpngw": {{Kind: "tunnel", Name: "to-dc"}}, "vbr": {{Kind: "link", Name: "eth1"}}}; !reflect.DeepEqual(faults, want) {
		t.Errorf("inspect faults %v, want %v", faults, want)
	}
	if r := runEmu(t, state, "inspect", "-t", topo); !strings.Contains(r.stdout, "fault: tunnel to-dc (ESP dropped)") || !strings.Contains(r.stdout, "fault: link eth1 (down)") {
		t.Errorf("inspect table lacks the faults:\n%s", r.stdout)
	}
	step("tunnel vpngw:to-dc (172.16.1.10 ↔ 10.0.0.1): removed its fault on vpngw\n"+
		`faults still in lab "`+name+`": link vbr:eth1 (down)`, "fault", "tunnel", "up", "vpngw:to-dc")
	step("link vbr:eth1 is up\nno fault left in lab", "fault", "link", "up", "vbr:eth1")

	step("vpc: withdrew route 10.1.0.0/24", "route", "withdraw")
	step("vpc: already withdrawn: route 10.1.0.0/24", "route", "withdraw")
	step("vpc: restored route 10.1.0.0/24", "route", "restore")
	step("vpc: already restored: route 10.1.0.0/24", "route", "restore")

	for _, args := range [][]string{{"fault", "link", "down", "vbr:eth9"}, {"capture", "vbr:eth9", "-c", "1"}} {
		r := runEmu(t, state, append(args, "-t", topo)...)
		if want := `node "vbr" has no interface "eth9" (interfaces: eth1, eth2)`; r.code != exitInvalid || !strings.Contains(r.stderr, want) {
			t.Errorf("emu %s: exit %d, want %d with %q: %s", strings.Join(args, " "), r.code, exitInvalid, want, r.stderr)
		}
	}
}

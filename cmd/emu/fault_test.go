package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/probe"
)

// A repair says what it removed and what is still broken in the lab: never
// "repaired" while the other end of the tunnel still drops ESP. The manual
// route step says when it changed nothing. Results go to stdout; a node
// interface that does not exist is an input error naming those that do.
func TestCLI_FaultUp_SaysWhatItRemovedAndWhatFaultsRemain(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	step := func(want string, args ...string) {
		t.Helper()
		r := runEmu(t, state, append(args, "-t", topo)...)
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("emu %s: exit %d, stdout lacks %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
		}
	}
	step("tunnel vpngw:to-dc (172.16.1.10 ↔ 10.0.0.1) is broken", "fault", "tunnel", "down", "vpngw:to-dc")
	step("tunnel vpngw:to-dc (172.16.1.10 ↔ 10.0.0.1) was broken already", "fault", "tunnel", "down", "vpngw:to-dc")
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
	// Repeated repairs remove nothing, so they wait for nothing.
	step("no fault on onprem, nothing removed\nno fault left in lab \""+name+"\"\nlab \""+name+"\": nothing removed; nothing to wait for\n", "fault", "tunnel", "up", "onprem:to-vpc")
	step("link vbr:eth1 was up already, nothing removed\nno fault left in lab \""+name+"\"\nlab \""+name+"\": nothing removed; nothing to wait for\n", "fault", "link", "up", "vbr:eth1")

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

// A repair waits until what the fault broke is back (here the routes both
// ends' DPD withdrew, which DPD puts back only at its next probe), showing
// what it waits for, so a check run at once judges a recovered lab: before
// the wait, `fault tunnel up` followed by `emu check` failed the first
// ping (the reply looped between the VPC and the VPN gateway).
func TestCLI_FaultTunnelUp_WaitsUntilRecovered_ThenACheckPassesAtOnce(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	if r := runEmu(t, state, "fault", "tunnel", "down", "-t", topo, "to-vpc"); r.code != 0 {
		t.Fatalf("fault down: exit %d: %s", r.code, r.stderr)
	}
	// Witness: on-prem's DPD withdrew its route into the tunnel.
	ns := "emu-" + name + "-onprem"
	deadline := time.Now().Add(10 * time.Second)
	for tunnelRoute(t, ns, "172.16.2.0/24", "ipsec0") {
		if time.Now().After(deadline) {
			t.Fatal("DPD did not withdraw on-prem's tunnel route within 10 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-vpc")
	if r.code != 0 || !strings.Contains(r.stdout, `lab "`+name+`" recovered in`) || !strings.Contains(r.stdout, ": 2 routes withdrawn by DPD came back\n") ||
		!strings.Contains(r.stderr, "waiting for the lab to recover") || !strings.Contains(r.stderr, "to-vpc dpd not back yet: route 172.16.2.0/24 dev ipsec0") {
		t.Fatalf("fault up: exit %d, want the wait shown and the recovery said\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if !tunnelRoute(t, ns, "172.16.2.0/24", "ipsec0") {
		t.Fatal("fault up said recovered, but on-prem's tunnel route is missing")
	}
	if r := runEmu(t, state, "check", "-t", topo); r.code != 0 {
		t.Fatalf("check right after the repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// The reviewer's F3: both of on-prem's tunnels down for 2 s, less than the
// 3 s BGP hold time of the sessions over them, then repaired: the sessions
// were still Established, so `fault up` said there was nothing to wait
// for, then their hold timers expired and the check failed (encryption,
// ECMP). The wait now lasts until every session heard from its peer after
// the repair (or dropped and came back).
func TestCLI_FaultTunnelUp_FaultShorterThanBGPHold_WaitsUntilSessionsHeard_ThenACheckPasses(t *testing.T) {
	state, _, topo := deployCLI(t, "transit-router.yaml")
	for _, conn := range []string{"onprem:to-vpc-1", "onprem:to-vpc-2"} {
		if r := runEmu(t, state, "fault", "tunnel", "down", "-t", topo, conn); r.code != 0 {
			t.Fatalf("fault down %s: exit %d: %s", conn, r.code, r.stderr)
		}
	}
	time.Sleep(2 * time.Second)
	for _, conn := range []string{"onprem:to-vpc-1", "onprem:to-vpc-2"} {
		if r := runEmu(t, state, "fault", "tunnel", "up", "-t", topo, conn); r.code != 0 {
			t.Fatalf("fault up %s: exit %d\nstdout: %s\nstderr: %s", conn, r.code, r.stdout, r.stderr)
		} else {
			t.Logf("fault up %s:\n%s%s", conn, r.stdout, r.stderr)
		}
	}
	if r := runEmu(t, state, "check", "-t", topo); r.code != 0 {
		t.Fatalf("check right after the repair: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// bgp.yaml has ten BGP session ends; breaking the tunnel drops one session
// (its two ends). The repair counts and names only that session (and what
// came back with it), never the nine that stayed up: those are waited for
// until they hear from their peer, summed up in one clause, not listed
// one by one. A repeated repair that removed nothing does not wait at all,
// as on a lab without BGP.
func TestCLI_FaultTunnelUp_BGPLab_CountsOnlyTheSessionThatDropped_RepeatedUpDoesNotWait(t *testing.T) {
	state, name, topo := deployCLI(t, "bgp.yaml")
	if r := runEmu(t, state, "fault", "tunnel", "down", "-t", topo, "to-vpc"); r.code != 0 {
		t.Fatalf("fault down: exit %d: %s", r.code, r.stderr)
	}
	// Witness: on-prem's session over the tunnel left Established.
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := runEmu(t, state, "route", "show", "-t", topo, "onprem")
		if row := lineWith(r.stdout, "169.254.10.2", "AS45104"); row != "" && !strings.Contains(row, "established") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("on-prem's session over the broken tunnel still up after 15 s:\n%s", r.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-vpc")
	t.Logf("fault up:\n%s%s", r.stdout, r.stderr)
	if r.code != 0 || !strings.Contains(r.stdout, `lab "`+name+`" recovered in`) || !strings.Contains(r.stdout, "1 BGP session") || strings.Contains(r.stdout, "BGP sessions") {
		t.Errorf("fault up: exit %d, want one BGP session counted as come back\nstdout: %s", r.code, r.stdout)
	}
	if strings.Contains(r.stderr, "has not heard from its peer") {
		t.Errorf("fault up lists each session awaiting a keepalive:\n%s", r.stderr)
	}
	r = runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-vpc")
	if want := `lab "` + name + `": nothing removed; nothing to wait for`; r.code != 0 || !strings.Contains(r.stdout, want) || strings.Contains(r.stdout, "came back") || r.stderr != "" {
		t.Errorf("repeated fault up: exit %d, want %q and no wait\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
}

// lineWith is the first line of s that contains every one of subs, or "".
func lineWith(s string, subs ...string) string {
	for _, l := range strings.Split(s, "\n") {
		if !slices.ContainsFunc(subs, func(sub string) bool { return !strings.Contains(l, sub) }) {
			return l
		}
	}
	return ""
}

// tunnelRoute reports whether namespace ns routes prefix out of dev.
func tunnelRoute(t *testing.T, ns, prefix, dev string) bool {
	t.Helper()
	found := false
	err := netnsx.Do(ns, func() error {
		link, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
		for _, r := range routes {
			found = found || r.Dst != nil && r.Dst.String() == prefix
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// A check --failover run while the user's own fault is in force misjudged
// the lab (no outage: the traffic had stopped before it began) and its
// repair step removed the user's fault. It is refused, exit 2, naming the
// fault and its repair, and leaves the fault in place; a plain check runs,
// judging the faulted lab as it is, with a note naming the fault.
func TestCLI_CheckFailover_UsersFaultInForce_RefusedWithExit2_FaultKept(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	if r := runEmu(t, state, "fault", "tunnel", "down", "-t", topo, "to-vpc"); r.code != 0 {
		t.Fatalf("fault down: exit %d: %s", r.code, r.stderr)
	}
	r := runEmu(t, state, "check", "-t", topo, "--failover")
	want := "lab \"" + name + "\" has faults in force: tunnel onprem:to-vpc (ESP dropped); " +
		"--failover breaks and repairs a connection itself, so it would misjudge the lab: " +
		"repair them first (`emu fault tunnel up -t " + topo + " onprem:to-vpc`), or run `emu check -t " + topo + "` without --failover"
	if r.code != exitInvalid || !strings.Contains(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
		t.Errorf("check --failover with a fault in force: exit %d, want %d and one line with %q\nstdout: %s\nstderr: %s", r.code, exitInvalid, want, r.stdout, r.stderr)
	}
	if broken, err := fault.TunnelBroken("emu-"+name+"-onprem", "to-vpc"); err != nil || !broken {
		t.Errorf("after check --failover the user's fault is gone (broken %v, %v)", broken, err)
	}
	r = runEmu(t, state, "check", "-t", topo)
	if want := `note: faults in force in lab "` + name + `": tunnel onprem:to-vpc (ESP dropped); the checks judge the lab with them`; r.code != exitChecksFailed || !strings.Contains(r.stderr, want) {
		t.Errorf("plain check with a fault in force: exit %d, want %d and %q\nstdout: %s\nstderr: %s", r.code, exitChecksFailed, want, r.stdout, r.stderr)
	}
	r = runEmu(t, state, "trace", "-t", topo)
	if want := `note: faults in force in lab "` + name + `": tunnel onprem:to-vpc (ESP dropped); the walk shows the lab with them`; !strings.Contains(r.stderr, want) {
		t.Errorf("trace with a fault in force: exit %d, stderr lacks %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	if r := runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-vpc"); r.code != 0 || !strings.Contains(r.stdout, "removed its fault on onprem") {
		t.Errorf("fault up: exit %d, want the user's fault removed\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// Ctrl-C while --failover has the tunnel broken: the check removes its own
// fault, reports what it cut short as interrupted (inconclusive, no FAIL)
// and exits 1, as other interrupted commands do.
func TestCLI_CheckFailover_CtrlC_RepairsReportsInterruptedExit1(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	ns := "emu-" + name + "-onprem"
	cmd := emuCmd(t, state, "check", "-t", topo, "--failover", "--format", "json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt 4 s after the check's own fault is in force.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if broken, _ := fault.TunnelBrokenBy(fault.ByCheck, ns, "to-vpc"); broken {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the check's fault never appeared\nstdout: %s\nstderr: %s", out.String(), errb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(4 * time.Second)
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	var rs []struct {
		Check  string `json:"check"`
		Result string `json:"result"`
		Evid   string `json:"evidence"`
	}
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("results: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	interrupted := 0
	for _, r := range rs {
		if r.Result == "fail" {
			t.Errorf("%s failed after Ctrl-C: %s", r.Check, r.Evid)
		}
		if strings.HasPrefix(r.Check, "failover") && r.Result == "inconclusive" && strings.Contains(r.Evid, "interrupted") {
			interrupted++
		}
	}
	if interrupted == 0 || code != exitFailed || !strings.Contains(errb.String(), "interrupted") {
		t.Errorf("Ctrl-C during check --failover: exit %d (want %d), %d failover rows interrupted (want some)\nstdout: %s\nstderr: %s", code, exitFailed, interrupted, out.String(), errb.String())
	}
	if broken, err := fault.TunnelBrokenBy(fault.ByCheck, ns, "to-vpc"); err != nil || broken {
		t.Errorf("the check's fault outlived Ctrl-C (broken %v, %v)", broken, err)
	}
}

// waitCheckTable waits until the table of `emu check --failover` (read over
// netlink) is in force on conn in ns, while check runs; it fails the test
// when check ends first or the table never comes. The channel it returns
// closes once check has ended (and been waited for).
func waitCheckTable(t *testing.T, check *exec.Cmd, out *bytes.Buffer, ns, conn string) <-chan struct{} {
	t.Helper()
	ended := make(chan struct{})
	go func() { check.Wait(); close(ended) }()
	t.Cleanup(func() { check.Process.Kill(); <-ended })
	whileCheckRuns(t, ended, out, 90*time.Second, "its fault was in force", func() bool {
		broken, _ := fault.TunnelBrokenBy(fault.ByCheck, ns, conn)
		return broken
	})
	return ended
}

// whileCheckRuns polls done until it holds, failing the test if the check
// ended first (ended closed) or within passed; what says what done waits
// for, for the failure.
func whileCheckRuns(t *testing.T, ended <-chan struct{}, out *bytes.Buffer, within time.Duration, what string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !done() {
		select {
		case <-ended:
			t.Fatalf("the check ended before %s:\n%s", what, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not %s within %s of the check:\n%s", what, within, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkTable reports whether the table of `emu check --failover` for conn
// is in ns, read over netlink.
func checkTable(t *testing.T, ns, conn string) bool {
	t.Helper()
	broken, err := fault.TunnelBrokenBy(fault.ByCheck, ns, conn)
	if err != nil {
		t.Fatal(err)
	}
	return broken
}

// An `emu check --failover` SIGKILLed (a CI runner's timeout) while its
// fault was in force left its table and the tunnel broken, and `emu fault`
// did not show it. While the check runs, `fault list` shows its fault held
// by it (its pid) and `fault tunnel up` keeps it; once it is killed, `fault
// list` says it was left by a check that did not finish, with the command
// that removes it, and that command removes it: the ping crosses and a
// check finds the traffic encrypted again.
func TestCLI_CheckFailoverKilled_FaultListsItLeftOver_TunnelUpRemovesIt_EncryptedAgain(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	ns := "emu-" + name + "-onprem"
	check := emuCmd(t, state, "check", "--failover", "-t", topo)
	var out bytes.Buffer
	check.Stdout, check.Stderr = &out, &out
	if err := check.Start(); err != nil {
		t.Fatal(err)
	}
	ended := waitCheckTable(t, check, &out, ns, "to-vpc")
	pid := check.Process.Pid

	r := runEmu(t, state, "fault", "list", "-t", topo)
	if want := fmt.Sprintf("tunnel onprem:to-vpc (ESP dropped by the `emu check --failover` running now, pid %d): wait for that check to end, or stop it: `kill -INT %d` (not -9: a killed check leaves its fault)", pid, pid); r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Errorf("fault list while the check runs: exit %d, want %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	r = runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-vpc")
	if want := fmt.Sprintf("kept the fault of the `emu check --failover` running now on onprem (pid %d)", pid); r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Errorf("fault tunnel up while the check runs: exit %d, want %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	if !checkTable(t, ns, "to-vpc") {
		t.Fatal("fault tunnel up removed the fault of a check still running")
	}

	check.Process.Signal(syscall.SIGKILL)
	<-ended
	t.Logf("the check, killed:\n%s", out.String())
	if !checkTable(t, ns, "to-vpc") {
		t.Fatal("the killed check's table is gone: nothing left over to test")
	}
	r = runEmu(t, state, "fault", "list", "-t", topo)
	if want := "tunnel onprem:to-vpc (ESP dropped, left by an `emu check --failover` that did not finish): remove with `emu fault tunnel up -t " + topo + " onprem:to-vpc`"; r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Errorf("fault list after the check was killed: exit %d, want %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	r = runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "onprem:to-vpc")
	if want := "removed the fault an `emu check --failover` that did not finish left on onprem (nftables table emu-check-to-vpc)\nno fault left in lab"; r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Errorf("fault tunnel up after the check was killed: exit %d, want %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	t.Logf("emu fault tunnel up:\n%s%s", r.stdout, r.stderr)
	if checkTable(t, ns, "to-vpc") {
		t.Fatal("fault tunnel up left the killed check's table in place")
	}
	if _, err := probe.Ping("emu-"+name+"-client", netip.MustParseAddr("172.16.2.10"), 2*time.Second); err != nil {
		t.Errorf("no ping client → ECS after the repair: %v", err)
	}
	r = runEmu(t, state, "check", "-t", topo, "--format", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"check": "encryption"`) || strings.Contains(r.stderr, "note: faults in force") {
		t.Errorf("check after the repair: exit %d, want 0 with the encryption check passed and no fault noted\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

// A check table whose check is gone (made here as the check makes it, its
// hold not taken) on the connection `check --failover` breaks: a plain
// check names it and its repair; `check --failover` removes it itself
// (emu's own object, its maker gone), says so and passes. The same table
// held by a running check (this test's process) refuses --failover and is
// not removed by it, nor by `fault tunnel up`.
func TestCLI_CheckFailover_LeftOverCheckTable_RemovedAndSaid_HeldOneKept(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	ns := "emu-" + name + "-onprem"
	tun := labtest.Load(t, topo).Node("onprem").Tunnels[0]
	labDir := filepath.Join(filepath.Dir(topo), "emu-"+name)

	hold, err := fault.HoldCheck(labDir, ns, "to-vpc")
	if err != nil {
		t.Fatal(err)
	}
	// A running check holds its connection from its start, before its
	// fault is in force: a second --failover is refused before any check
	// runs (it ran, and failed falsely, when the hold was only taken for
	// the failover step).
	refused := fmt.Sprintf("another `emu check --failover` is running on lab %q (pid %d, on onprem:to-vpc)", name, os.Getpid())
	r := runEmu(t, state, "check", "--failover", "-t", topo)
	if r.code != exitInvalid || !strings.Contains(r.stderr, refused) || r.stdout != "" {
		t.Errorf("check --failover while another holds its connection (no fault yet): exit %d, want %d, %q and no checks run\nstdout: %s\nstderr: %s", r.code, exitInvalid, refused, r.stdout, r.stderr)
	}
	if err := fault.TunnelDownBy(fault.ByCheck, ns, "to-vpc", tun.Local, tun.Remote); err != nil {
		hold.Release()
		t.Fatal(err)
	}
	r = runEmu(t, state, "check", "--failover", "-t", topo)
	if r.code != exitInvalid || !strings.Contains(r.stderr, refused) {
		t.Errorf("check --failover while another holds its fault: exit %d, want %d and %q\nstdout: %s\nstderr: %s", r.code, exitInvalid, refused, r.stdout, r.stderr)
	}
	if r := runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-vpc"); r.code != 0 || !strings.Contains(r.stdout, "kept the fault") {
		t.Errorf("fault tunnel up of a held check fault: exit %d, want it kept\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if !checkTable(t, ns, "to-vpc") {
		t.Fatal("a check fault still held was removed")
	}
	hold.Release()

	r = runEmu(t, state, "check", "-t", topo)
	if want := `note: faults in force in lab "` + name + "\": tunnel onprem:to-vpc (ESP dropped, left by an `emu check --failover` that did not finish); the checks judge the lab with them, as it is (repair: `emu fault tunnel up -t " + topo + " onprem:to-vpc`)"; !strings.Contains(r.stderr, want) {
		t.Errorf("plain check with a left-over check fault: exit %d, want %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	// With a fault of the user's in force too, the left-over table goes,
	// and the run is refused at once naming the user's fault (it waited
	// 20 s for a recovery the user's fault stopped, then blamed the agents).
	if r := runEmu(t, state, "fault", "tunnel", "down", "-t", topo, "to-dc"); r.code != 0 {
		t.Fatalf("fault tunnel down to-dc: exit %d\nstderr: %s", r.code, r.stderr)
	}
	start := time.Now()
	r = runEmu(t, state, "check", "--failover", "-t", topo)
	if want := "tunnel vpngw:to-dc"; r.code != exitInvalid || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "did not recover") {
		t.Errorf("check --failover with a left-over check table and the user's fault: exit %d after %s, want %d naming %q\nstdout: %s\nstderr: %s", r.code, time.Since(start).Round(time.Millisecond), exitInvalid, want, r.stdout, r.stderr)
	}
	if r := runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-dc"); r.code != 0 {
		t.Fatalf("fault tunnel up to-dc: exit %d\nstderr: %s", r.code, r.stderr)
	}
	if err := fault.TunnelDownBy(fault.ByCheck, ns, "to-vpc", tun.Local, tun.Remote); err != nil {
		t.Fatal(err)
	}
	r = runEmu(t, state, "check", "--failover", "-t", topo)
	if want := "note: removed the fault an earlier `emu check --failover` that did not finish (killed) left on onprem:to-vpc (nftables table emu-check-to-vpc)"; r.code != 0 || !strings.Contains(r.stderr, want) || strings.Contains(r.stdout, "FAIL") {
		t.Errorf("check --failover with a left-over check fault: exit %d, want 0 and %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	if checkTable(t, ns, "to-vpc") {
		t.Error("the check's table is still in force after check --failover")
	}
}

// vpnRoute reports whether the VPC's route to the data center through the
// VPN gateway (static.yaml: 10.1.0.0/24 via 172.16.1.10, metric 10) is in
// the vpc namespace, read over netlink.
func vpnRoute(t *testing.T, name string) bool {
	t.Helper()
	found := false
	err := netnsx.Do("emu-"+name+"-vpc", func() error {
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == "10.1.0.0/24" && r.Gw.String() == "172.16.1.10" && r.Priority == 10 {
				found = true
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// killAfterWithdrawal starts a method-1 `emu check --failover` on the lab
// and SIGKILLs it once its manual step withdrew the VPN gateway's route
// (seen over netlink), as a CI runner's timeout late in the check would.
func killAfterWithdrawal(t *testing.T, state, name, topo string) {
	t.Helper()
	check := emuCmd(t, state, "check", "--failover", "-t", topo)
	var out bytes.Buffer
	check.Stdout, check.Stderr = &out, &out
	if err := check.Start(); err != nil {
		t.Fatal(err)
	}
	ended := waitCheckTable(t, check, &out, "emu-"+name+"-onprem", "to-vpc")
	whileCheckRuns(t, ended, &out, 60*time.Second, "it withdrew the route", func() bool { return !vpnRoute(t, name) })
	check.Process.Signal(syscall.SIGKILL)
	<-ended
	if vpnRoute(t, name) {
		t.Fatal("the route is back after the kill: nothing left over to test")
	}
}

// A method-1 `emu check --failover` SIGKILLed after its manual step (the
// VPN gateway's route withdrawn from the VPC) left that route withdrawn,
// and nothing said so: `emu fault tunnel up` reported no fault left while
// the traffic crossed in clear. Now `fault list` names the route, left by
// that check, with the command that restores it; `fault tunnel up` on the
// connection restores it (read over netlink) and a plain check passes. A
// `check --failover` run after the same kill restores it itself, says so
// and passes, and a check that ended cleanly leaves no lock file behind.
func TestCLI_CheckFailoverKilledAfterWithdrawal_FaultListsRoute_TunnelUpRestoresIt_ChecksPass(t *testing.T) {
	state, name, topo := deployCLI(t, staticTopology)
	labDir := filepath.Join(filepath.Dir(topo), "emu-"+name)
	killAfterWithdrawal(t, state, name, topo)

	r := runEmu(t, state, "fault", "list", "-t", topo)
	if want := "route vpc:10.1.0.0/24 via 172.16.1.10 metric 10 (published by vpngw, withdrawn by an `emu check --failover` of onprem:to-vpc that did not finish): restore with `emu fault tunnel up -t " + topo + " onprem:to-vpc`"; r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Errorf("fault list after the late kill: exit %d, want %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	r = runEmu(t, state, "inspect", "-t", topo)
	if want := "fault: route 10.1.0.0/24 via 172.16.1.10 metric 10 (published by vpngw, withdrawn by an `emu check --failover` of onprem:to-vpc that did not finish): `emu fault tunnel up -t"; !strings.Contains(r.stdout, want) {
		t.Errorf("inspect after the late kill: exit %d, want %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	r = runEmu(t, state, "check", "-t", topo)
	if want := "route vpc:10.1.0.0/24 via 172.16.1.10 metric 10 (published by vpngw, withdrawn by an `emu check --failover` of onprem:to-vpc that did not finish)"; !strings.Contains(r.stderr, "note: faults in force") || !strings.Contains(r.stderr, want) {
		t.Errorf("plain check after the late kill: exit %d, want a note with %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	r = runEmu(t, state, "fault", "tunnel", "up", "-t", topo, "to-vpc")
	t.Logf("emu fault tunnel up:\n%s%s", r.stdout, r.stderr)
	if want := "restored route 10.1.0.0/24 via 172.16.1.10 metric 10 on vpc (published by vpngw), which an `emu check --failover` that did not finish withdrew"; r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "no fault left") {
		t.Errorf("fault tunnel up after the late kill: exit %d, want %q and no fault left\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	if !vpnRoute(t, name) {
		t.Fatal("fault tunnel up did not restore the route the killed check withdrew")
	}
	if checkTable(t, "emu-"+name+"-onprem", "to-vpc") {
		t.Fatal("fault tunnel up left the killed check's table in place")
	}
	r = runEmu(t, state, "check", "-t", topo)
	if r.code != 0 || strings.Contains(r.stderr, "note: faults in force") {
		t.Errorf("check after the repair: exit %d, want 0 and no fault noted\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}

	killAfterWithdrawal(t, state, name, topo)
	r = runEmu(t, state, "check", "--failover", "-t", topo)
	t.Logf("check --failover after the late kill:\n%s%s", r.stdout, r.stderr)
	if want := "note: restored route 10.1.0.0/24 via 172.16.1.10 metric 10 on vpc (published by vpngw), which an earlier `emu check --failover` that did not finish (killed) withdrew"; r.code != 0 || !strings.Contains(r.stderr, want) {
		t.Errorf("check --failover after the late kill: exit %d, want 0 and %q\nstdout: %s\nstderr: %s", r.code, want, r.stdout, r.stderr)
	}
	if !vpnRoute(t, name) {
		t.Error("the route is withdrawn after check --failover ended")
	}
	if left, _ := filepath.Glob(filepath.Join(labDir, "faults", "*.check")); len(left) > 0 {
		t.Errorf("lock files left after the check ended cleanly: %v", left)
	}
}

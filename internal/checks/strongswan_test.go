package checks_test

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/checks/checktest"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/testenv"
)

// deployStrongSwanOnprem deploys topologies/strongswan-onprem.yaml with its
// strongSwan configuration beside it, and returns it once the VPN gateway
// reports both IKE phases established (logging how long that took from the
// end of the deploy).
func deployStrongSwanOnprem(t *testing.T) (*labtest.Lab, checks.Lab) {
	t.Helper()
	labtest.RequireRoot(t)
	for _, bin := range []string{"/usr/lib/ipsec/charon", "swanctl"} {
		_, err := exec.LookPath(bin)
		testenv.Require(t, err, "strongSwan (scripts/setup.sh installs it)")
	}
	l, labc := deployWithSoftware(t, "strongswan-onprem", "swanctl.conf", func(s string) string { return s })
	start := time.Now()
	st := waitVPNGatewayIKE(t, labc, "both phases established", 20*time.Second, func(s ike.Status) bool {
		return s.Phase1 == ike.StateEstablished && s.Phase2 == ike.StateEstablished
	})
	t.Logf("established %s after the deploy: %s", time.Since(start).Round(time.Millisecond), checks.DescribeIKE(st))
	return l, labc
}

// waitVPNGatewayIKE polls the VPN gateway's agent state until its connection
// satisfies ok, and returns that state.
func waitVPNGatewayIKE(t *testing.T, labc checks.Lab, what string, limit time.Duration, ok func(ike.Status) bool) ike.Status {
	t.Helper()
	var last ike.Status
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		st, err := agent.ReadState(filepath.Join(labc.Dir, "agents", "vpngw.json"))
		if err != nil || len(st.IKE) == 0 {
			continue
		}
		if last = st.IKE[0]; ok(last) {
			return last
		}
	}
	t.Fatalf("vpngw's connection: not %s within %s; last: %+v", what, limit, last)
	return last
}

func TestStrongSwanOnprem_ChecksAndFailoverPass(t *testing.T) {
	_, labc := deployStrongSwanOnprem(t)
	rs := checktest.Run(t, labc, checks.For(labc)...)
	requirePassed(t, rs)
	i := slices.IndexFunc(rs, func(r checks.Result) bool { return r.Check == "ike onprem to-vpc (strongswan)" })
	if i < 0 {
		t.Fatalf("no check of strongSwan's end in %+v", rs)
	}
	for _, w := range []string{"vpngw's end to-dc: phase 1 established (IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024)",
		"ESP in UDP/4500", "172.16.2.0/24 === 10.1.0.0/24", "not observed: strongswan's own SAs"} {
		if !strings.Contains(rs[i].Evidence, w) {
			t.Errorf("%s does not say %q: %s", rs[i].Check, w, rs[i].Evidence)
		}
	}
	// The path is the guide's walk with charon encrypting on-prem.
	p := rs[slices.IndexFunc(rs, func(r checks.Result) bool { return r.Check == "path" })]
	if !strings.Contains(p.Evidence, "onprem encrypts") || !strings.Contains(p.Evidence, "onprem decrypts") {
		t.Errorf("path does not show charon's end encrypting and decrypting: %s", p.Evidence)
	}
	fo := checktest.Run(t, labc, checks.Failover)
	for _, r := range fo {
		t.Logf("%s: %v: %s", r.Check, r.Passed, r.Evidence)
	}
	requirePassed(t, fo)
	if !strings.HasPrefix(fo[0].Evidence, "method 1: traffic stopped") {
		t.Errorf("first step is not method 1's: %s", fo[0].Evidence)
	}
}

// Killing charon: the VPN gateway's DPD gets no answer and takes the tunnel
// down; the on-prem side's routes into the tunnel go with charon's TUN
// device; traffic stays stopped while the VPN gateway's routes are published
// (method 1), and flows in clear over Express Connect + CEN once the operator
// withdraws them.
func TestStrongSwanOnprem_CharonKilled_DPDTakesTunnelDown_FallbackHappens(t *testing.T) {
	l, labc := deployStrongSwanOnprem(t)
	ds := lab.Daemons(labc.Dir, "onprem")
	if len(ds) != 1 || ds[0].Name != "charon" || ds[0].State != "running" || ds[0].PID == 0 {
		t.Fatalf("onprem's daemons: %+v", ds)
	}
	ecs := netip.MustParseAddr("172.16.2.10")
	if _, err := probe.Ping(l.NS("client"), ecs, 2*time.Second); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	// The daemon is its process group (the shell emu started and charon).
	if err := syscall.Kill(-ds[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	st := waitVPNGatewayIKE(t, labc, "down by DPD", 30*time.Second, func(s ike.Status) bool {
		return s.Phase1 == ike.StateFailed && s.Phase2 != ike.StateEstablished
	})
	t.Logf("tunnel down %s after the kill: %s", time.Since(killed).Round(time.Millisecond), checks.DescribeIKE(st))
	if !strings.HasPrefix(st.Phase1Reason, "DPD: peer unreachable") {
		t.Errorf("phase 1 reason %q, want DPD", st.Phase1Reason)
	}
	if ds := lab.Daemons(labc.Dir, "onprem"); !strings.HasPrefix(ds[0].State, "dead") {
		t.Errorf("charon after SIGKILL: %s", ds[0].State)
	}
	rs := checktest.Run(t, labc, checks.IKE)
	if rs[0].Check != "ike onprem to-vpc (strongswan)" || rs[0].Passed || !strings.Contains(rs[0].Evidence, "daemon charon of onprem is dead") {
		t.Errorf("%s: passed=%v: %s", rs[0].Check, rs[0].Passed, rs[0].Evidence)
	}

	// Method 1: stopped while the VPN gateway's routes point into the dead tunnel.
	if _, err := probe.Ping(l.NS("client"), ecs, 2*time.Second); err == nil {
		t.Fatal("client reached ECS with the tunnel down and the VPN gateway's routes published: method 1 does not fall back by itself")
	}
	if _, err := lab.SetPublishedRoutes(labc.Topology, false); err != nil {
		t.Fatal(err)
	}
	withdrawn := time.Now()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if _, err = probe.Ping(l.NS("client"), ecs, 500*time.Millisecond); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("no traffic after the operator withdrew the routes: %v", err)
	}
	t.Logf("traffic flows %s after the withdrawal", time.Since(withdrawn).Round(time.Millisecond))
	enc := checktest.Run(t, labc, checks.Connectivity, checks.Encryption)
	for _, r := range enc {
		switch {
		case r.Check == "encryption":
			if r.Passed || r.Inconclusive || !strings.Contains(r.Evidence, "0 ESP") || !strings.Contains(r.Evidence, "inner addresses in clear") {
				t.Errorf("fallback not in clear over the private path: %s", r.Evidence)
			}
		case !r.Passed:
			t.Errorf("%s after the fallback: %s", r.Check, r.Evidence)
		}
	}
}

package checks_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/checks/checktest"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/topologies"
)

// deployFRROnprem deploys topologies/frr-onprem.yaml with its FRR
// configuration beside it; edit changes bgpd.conf first.
func deployFRROnprem(t *testing.T, edit func(bgpd string) string) (*labtest.Lab, checks.Lab) {
	t.Helper()
	labtest.RequireRoot(t)
	_, err := os.Stat("/usr/lib/frr/bgpd")
	testenv.Require(t, err, "FRR (scripts/setup.sh installs it)")
	return deployWithSoftware(t, "frr-onprem", "bgpd.conf", edit)
}

// deployWithSoftware deploys the shipped scenario NAME.yaml under a unique
// lab name with its configuration directory NAME/ beside it, after edit
// changed the file conf of that directory.
func deployWithSoftware(t *testing.T, name, conf string, edit func(string) string) (*labtest.Lab, checks.Lab) {
	t.Helper()
	labtest.RequireRoot(t)
	labtest.RequireHostFiles(t)
	dir := t.TempDir()
	labtest.CopyTree(t, topologies.FS, name, dir)
	confPath := filepath.Join(dir, name, conf)
	data, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(confPath, []byte(edit(string(data))), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".yaml")
	text := labtest.Rename(labtest.Shipped(t, name+".yaml"), labtest.UniqueName())
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	l := labtest.DeployFile(t, path)
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	return l, checks.Lab{Topology: l.Topology, Conns: conns, Dir: l.Plan.LabDir}
}

func TestFRROnprem_ChecksPass_FRRJudgedFromTheVPNGatewaysSide_FailoverAsMethod2(t *testing.T) {
	_, labc := deployFRROnprem(t, func(s string) string { return s })
	rs := checktest.Run(t, labc, checks.For(labc)...)
	requirePassed(t, rs)
	i := slices.IndexFunc(rs, func(r checks.Result) bool { return r.Check == "bgp onprem (frr)" })
	if i < 0 {
		t.Fatalf("no check of FRR's BGP in %+v", rs)
	}
	want := []string{"vpngw sees 169.254.10.1 AS65001 established", "172.16.2.0/24 via 169.254.10.2 in onprem's kernel", "not observed: frr's own RIB"}
	for _, w := range want {
		if !strings.Contains(rs[i].Evidence, w) {
			t.Errorf("%s does not say %q: %s", rs[i].Check, w, rs[i].Evidence)
		}
	}
	fo := checktest.Run(t, labc, checks.Failover)
	for _, r := range fo {
		t.Logf("%s: %v: %s", r.Check, r.Passed, r.Evidence)
	}
	requirePassed(t, fo)
	if !strings.Contains(fo[0].Evidence, "automatic failover") {
		t.Errorf("first step does not say automatic failover: %s", fo[0].Evidence)
	}
}

// FRR's default (RFC 8212) refuses eBGP routes without a policy: the session
// is Established, nothing is exchanged, and traffic silently flows in clear.
// emu check must fail and say why.
func TestFRROnprem_EBGPRequiresPolicy_CheckFailsAndSaysWhy(t *testing.T) {
	_, labc := deployFRROnprem(t, func(s string) string {
		return strings.Replace(s, " no bgp ebgp-requires-policy\n", "", 1)
	})
	rs := checktest.Run(t, labc, checks.BGP)
	byName := map[string]checks.Result{}
	for _, r := range rs {
		byName[r.Check] = r
	}
	frr, vpngw := byName["bgp onprem (frr)"], byName["bgp vpngw"]
	if frr.Passed || !strings.Contains(frr.Evidence, "established") || !strings.Contains(frr.Evidence, "vpngw received no 10.1.0.0/24 from onprem") ||
		!strings.Contains(frr.Evidence, "172.16.2.0/24 (from vpngw) is not a BGP route in onprem's kernel") {
		t.Errorf("bgp onprem (frr): passed=%v: %s", frr.Passed, frr.Evidence)
	}
	if vpngw.Passed || !strings.Contains(vpngw.Evidence, "10.1.0.0/24 (from onprem) is not in the RIB") {
		t.Errorf("bgp vpngw: passed=%v: %s", vpngw.Passed, vpngw.Evidence)
	}
	// And the traffic it would let through is in clear: the encryption
	// check fails too.
	enc := checktest.Run(t, labc, checks.Encryption)
	if enc[0].Passed {
		t.Errorf("encryption passed with FRR refusing the routes: %s", enc[0].Evidence)
	}
}

func TestFRROnprem_PeerNeverComesUp_CheckNamesItAndItsState(t *testing.T) {
	_, labc := deployFRROnprem(t, func(s string) string {
		return strings.Replace(s, "remote-as 45104", "remote-as 45105", 1)
	})
	rs := checktest.Run(t, labc, checks.BGP)
	if rs[0].Check != "bgp onprem (frr)" || rs[0].Passed ||
		!strings.Contains(rs[0].Evidence, "vpngw's session with onprem 169.254.10.1 is ") ||
		!strings.Contains(rs[0].Evidence, "not established: is frr running and configured for AS65001 ↔ AS45104?") {
		t.Errorf("%s: passed=%v: %s", rs[0].Check, rs[0].Passed, rs[0].Evidence)
	}
}

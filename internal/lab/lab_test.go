package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/wiring"
)

func TestMain(m *testing.M) {
	racingWriterMain()
	labtest.Main(m)
}

const staticTopology = "static.yaml"

func TestDeploy_StaticTopology_ForwardsPlainTrafficClientToECS(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	ecs := netip.MustParseAddr("172.16.2.10")
	if _, err := probe.Ping(l.NS("client"), ecs, 2*time.Second); err != nil {
		t.Fatalf("client → ECS ping: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := probe.TCPExchange(ctx, l.NS("client"), l.NS("ecs"), netip.AddrPortFrom(ecs, 8080), probe.Marker()); err != nil {
		t.Fatalf("client → ECS TCP: %v", err)
	}
}

func TestDeploy_HostKind_DoesNotForward(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	for node, want := range map[string]string{"client": "0", "onprem": "1", "vbr": "1", "ecs": "0"} {
		var got []byte
		err := doIn(l.NS(node), func() (err error) {
			got, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:1]) != want {
			t.Errorf("%s: ip_forward = %s, want %s", node, got[:1], want)
		}
	}
}

func TestDeploy_FailureAtEveryStep_RollsBackEverything(t *testing.T) {
	labtest.RequireRoot(t)
	topo := labtest.Load(t, labtest.Copy(t, staticTopology, labtest.UniqueName()))
	p := labtest.Plan(t, topo)
	hostLinks := rootLinks(t)
	for fail := range p.StepCount() {
		d := labtest.NewDeployer(t)
		injected := errors.New("injected failure")
		d.BeforeStep = func(i int, s plan.Step) error {
			if i == fail {
				return injected
			}
			return nil
		}
		err := d.Deploy(context.Background(), p)
		if !errors.Is(err, injected) {
			t.Fatalf("failure at step %d: deploy returned %v, want the injected error", fail, err)
		}
		labtest.AssertNothingLeft(t, topo.Name)
		if _, err := os.Stat(p.LabDir); !os.IsNotExist(err) {
			t.Errorf("failure at step %d: lab directory %s left behind", fail, p.LabDir)
		}
		if left, _ := os.ReadDir(d.Store.Dir); len(left) > 0 {
			t.Errorf("failure at step %d: state files left: %v", fail, left)
		}
		if got := rootLinks(t); got != hostLinks {
			t.Errorf("failure at step %d: host interfaces changed: %q, was %q", fail, got, hostLinks)
		}
	}
}

func TestDeploy_Cancelled_RollsBackEverything(t *testing.T) {
	labtest.RequireRoot(t)
	topo := labtest.Load(t, labtest.Copy(t, staticTopology, labtest.UniqueName()))
	d := labtest.NewDeployer(t)
	ctx, cancel := context.WithCancel(context.Background())
	d.BeforeStep = func(i int, _ plan.Step) error {
		if i == 9 {
			cancel()
		}
		return nil
	}
	err := d.Deploy(ctx, labtest.Plan(t, topo))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("deploy returned %v, want context.Canceled", err)
	}
	labtest.AssertNothingLeft(t, topo.Name)
}

func TestDeploy_AlreadyDeployed_Refused(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	err := l.Deployer.Deploy(context.Background(), l.Plan)
	var dep *lab.DeployedError
	if !errors.As(err, &dep) {
		t.Fatalf("second deploy returned %v, want DeployedError", err)
	}
	if !wiring.NamespaceExists(l.NS("client")) {
		t.Fatal("refused deploy removed the running lab")
	}
}

func TestDeploy_ForeignNamespaceWithSameName_Refused(t *testing.T) {
	labtest.RequireRoot(t)
	topo := labtest.Load(t, labtest.Copy(t, staticTopology, labtest.UniqueName()))
	foreign := plan.NamespaceName(topo.Name, "vbr")
	w := wiring.New()
	if err := w.CreateNamespace(foreign, false, false); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { wiring.DeleteNamespace(foreign) })
	err := labtest.NewDeployer(t).Deploy(context.Background(), labtest.Plan(t, topo))
	if err == nil || !contains(err.Error(), "emu did not create it") {
		t.Fatalf("deploy over a foreign namespace returned %v", err)
	}
	if !wiring.NamespaceExists(foreign) {
		t.Fatal("deploy removed a namespace it does not own")
	}
}

func TestDestroy_Twice_SecondIsNoOp(t *testing.T) {
	l := labtest.Deploy(t, staticTopology)
	for i, wantFound := range []bool{true, false} {
		found, err := l.Deployer.Destroy(l.Topology.Name, false)
		if err != nil || found != wantFound {
			t.Fatalf("destroy #%d: found=%v err=%v, want found=%v", i+1, found, err, wantFound)
		}
	}
	labtest.AssertNothingLeft(t, l.Topology.Name)
	if _, err := os.Stat(l.Plan.LabDir); err != nil {
		t.Errorf("destroy without --cleanup removed the lab directory: %v", err)
	}
}

func TestTwoLabs_SameNodeNames_RunSideBySide(t *testing.T) {
	a := labtest.Deploy(t, staticTopology)
	b := labtest.Deploy(t, staticTopology)
	ecs := netip.MustParseAddr("172.16.2.10")
	for _, l := range []*labtest.Lab{a, b} {
		if _, err := probe.Ping(l.NS("client"), ecs, 2*time.Second); err != nil {
			t.Errorf("lab %s: %v", l.Topology.Name, err)
		}
	}
	if _, err := a.Deployer.Destroy(a.Topology.Name, true); err != nil {
		t.Fatal(err)
	}
	if _, err := probe.Ping(b.NS("client"), ecs, 2*time.Second); err != nil {
		t.Errorf("destroying lab %s broke lab %s: %v", a.Topology.Name, b.Topology.Name, err)
	}
}

func rootLinks(t *testing.T) string {
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	s := ""
	for _, l := range links {
		s += fmt.Sprintf("%s,", l.Attrs().Name)
	}
	return s
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func doIn(ns string, fn func() error) error { return netnsx.Do(ns, fn) }

// Ctrl-C while deploy waits for BGP is an interruption, rolled back, never a
// verdict on sessions it stopped waiting for ("not established after 20s").
func TestDeploy_InterruptedWhileWaitingForBGP_SaysInterruptedAndRollsBack(t *testing.T) {
	labtest.RequireRoot(t)
	topo := labtest.Load(t, labtest.Copy(t, "static-bgp.yaml", labtest.UniqueName()))
	d := labtest.NewDeployer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var events []lab.Event
	d.Progress = func(ev lab.Event) {
		events = append(events, ev)
		if ev.Stage == "bgp" && !ev.Done {
			cancel()
		}
	}
	err := d.Deploy(ctx, labtest.Plan(t, topo))
	var interrupted *lab.InterruptedError
	if !errors.As(err, &interrupted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("deploy returned %v, want an InterruptedError of context.Canceled", err)
	}
	if want := "interrupted\nrolled back: everything this deploy made was removed"; err.Error() != want {
		t.Errorf("deploy said %q, want %q", err, want)
	}
	for _, ev := range events {
		if ev.Stage == "bgp" && ev.Done {
			t.Errorf("the interrupted wait was judged: %+v", ev)
		}
	}
	labtest.AssertNothingLeft(t, topo.Name)
}

// Deploy waits for IKE phase 2 of every IKE-keyed connection, as it waits
// for BGP, and shows it as a stage: right after it returns the SAs are
// there, not "connecting" with SPI 0.
func TestDeploy_IKELab_WaitsForPhase2(t *testing.T) {
	labtest.RequireRoot(t)
	topo := labtest.Load(t, labtest.Write(t, labtest.Rename(labtest.IKEKeyed(t, "", ""), labtest.UniqueName())))
	p := labtest.Plan(t, topo)
	d := labtest.NewDeployer(t)
	var stage *lab.Event
	d.Progress = func(ev lab.Event) {
		if ev.Stage == "ike" && ev.Done {
			stage = &ev
		}
	}
	t.Cleanup(func() {
		if _, err := d.Destroy(topo.Name, true); err != nil {
			t.Errorf("destroy: %v", err)
		}
		labtest.AssertNothingLeft(t, topo.Name)
	})
	if err := d.Deploy(context.Background(), p); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if stage == nil || stage.Count != 2 || stage.Warning != "" || stage.Index != stage.Of {
		t.Fatalf("no clean ike stage ending the deploy: %+v", stage)
	}
	for _, node := range []string{"onprem", "vpngw"} {
		st, err := agent.ReadState(filepath.Join(p.LabDir, "agents", node+".json"))
		if err != nil {
			t.Fatal(err)
		}
		if len(st.IKE) != 1 || st.IKE[0].Phase2 != ike.StateEstablished || st.IKE[0].InSPI == 0 || st.IKE[0].OutSPI == 0 {
			t.Errorf("%s right after deploy: %+v", node, st.IKE)
		}
	}
}

// A connection that failed for good (wrong key) is reported at once, with
// its reason, and the lab stays deployed for the user to look at.
func TestDeploy_IKEAuthenticationFails_ReportedWithoutWaitingTheTimeout(t *testing.T) {
	labtest.RequireRoot(t)
	topo := labtest.Load(t, labtest.Write(t, labtest.Rename(labtest.IKEKeyed(t, "psk: the-on-prem-key", "psk: the-providers-key"), labtest.UniqueName())))
	d := labtest.NewDeployer(t)
	var stage *lab.Event
	d.Progress = func(ev lab.Event) {
		if ev.Stage == "ike" && ev.Done {
			stage = &ev
		}
	}
	t.Cleanup(func() {
		if _, err := d.Destroy(topo.Name, true); err != nil {
			t.Errorf("destroy: %v", err)
		}
		labtest.AssertNothingLeft(t, topo.Name)
	})
	if err := d.Deploy(context.Background(), labtest.Plan(t, topo)); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	if stage == nil || !strings.Contains(stage.Warning, "AUTHENTICATION_FAILED") || stage.Elapsed >= lab.ConvergeTimeout {
		t.Fatalf("ike stage: %+v", stage)
	}
	// Each gateway's reason once, though phase 2 fails for phase 1's.
	if n, gws := strings.Count(stage.Warning, "AUTHENTICATION_FAILED"), strings.Count(stage.Warning, " phase 1 "); n != gws {
		t.Fatalf("ike stage names AUTHENTICATION_FAILED %d times for %d gateways, want once each: %s", n, gws, stage.Warning)
	}
}

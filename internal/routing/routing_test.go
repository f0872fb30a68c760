package routing

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/wiring"
)

// A speaker must own its whole process (GoBGP dials from any thread), so
// the tests re-execute their own binary inside a namespace to play one.
const (
	speakerConfigEnv = "EMU_ROUTING_TEST_SPEAKER"
	speakerStateEnv  = "EMU_ROUTING_TEST_STATE"
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(speakerConfigEnv); cfg != "" {
		os.Exit(runSpeaker(cfg, os.Getenv(speakerStateEnv)))
	}
	os.Exit(m.Run())
}

// state is what a test speaker publishes for the test to poll.
type state struct {
	Neighbors []NeighborState `json:"neighbors"`
	Routes    []Route         `json:"routes"`
}

// runSpeaker is the child: start, say "ready" on fd 3, publish state every
// 50 ms, stop cleanly on SIGTERM (a SIGKILL is the crash case).
func runSpeaker(cfgPath, statePath string) int {
	logger := log.New(os.Stderr, "", log.Lmicroseconds)
	ready := os.NewFile(3, "ready")
	fail := func(err error) int {
		fmt.Fprintln(ready, "error: "+err.Error())
		return 1
	}
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return fail(err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s, err := Start(ctx, cfg, logger)
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(ready, "ready")
	ready.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	for {
		select {
		case <-ctx.Done():
			s.Stop()
			logger.Print("stopped")
			return 0
		case <-tick.C:
			var st state
			st.Neighbors, _ = s.Neighbors(ctx)
			st.Routes, _ = s.Routes(ctx)
			data, _ := json.Marshal(st)
			os.WriteFile(statePath+".tmp", data, 0o644)
			os.Rename(statePath+".tmp", statePath)
		}
	}
}

// testLab is a few namespaces joined by veths, removed by t.Cleanup.
type testLab struct {
	t   *testing.T
	w   *wiring.Net
	tag string
}

func newTestLab(t *testing.T) *testLab {
	t.Helper()
	testenv.RequireRoot(t, "the test creates network namespaces")
	b := make([]byte, 3)
	rand.Read(b)
	w := wiring.New()
	t.Cleanup(w.Close)
	return &testLab{t: t, w: w, tag: hex.EncodeToString(b)}
}

func (l *testLab) namespace(node string) string {
	l.t.Helper()
	name := "emu-rt" + l.tag + "-" + node
	if err := l.w.CreateNamespace(name, true, false); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		if err := wiring.DeleteNamespace(name); err != nil {
			l.t.Error(err)
		}
	})
	return name
}

// link joins nsA:ifA (addrA) and nsB:ifB (addrB).
func (l *testLab) link(nsA, ifA, addrA, nsB, ifB, addrB string) {
	l.t.Helper()
	if err := l.w.AddVeth(nsA, ifA, nsB, ifB, 1500); err != nil {
		l.t.Fatal(err)
	}
	for _, e := range [][2]string{{nsA + "/" + ifA, addrA}, {nsB + "/" + ifB, addrB}} {
		ns, ifname, _ := strings.Cut(e[0], "/")
		p := netip.MustParsePrefix(e[1])
		if err := l.w.AddAddress(ns, ifname, wiring.IPNet(p)); err != nil {
			l.t.Fatal(err)
		}
	}
}

func (l *testLab) setLink(ns, ifname string, up bool) {
	l.t.Helper()
	err := netnsx.Do(ns, func() error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if up {
			return netlink.LinkSetUp(link)
		}
		return netlink.LinkSetDown(link)
	})
	if err != nil {
		l.t.Fatal(err)
	}
}

// speaker is one test speaker process.
type speaker struct {
	t     *testing.T
	name  string
	ns    string
	cfg   string
	state string
	log   string
	cmd   *exec.Cmd
	exit  chan struct{}
}

// start runs a speaker in ns; t.Cleanup kills it and shows its log if the
// test failed.
func (l *testLab) start(t *testing.T, name, ns string, cfg Config) *speaker {
	t.Helper()
	dir := t.TempDir()
	data, _ := json.MarshalIndent(cfg, "", "  ")
	sp := &speaker{t: t, name: name, ns: ns, cfg: filepath.Join(dir, name+".json"), state: filepath.Join(dir, name+".state"), log: filepath.Join(dir, name+".log")}
	if err := os.WriteFile(sp.cfg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sp.kill()
		if t.Failed() {
			out, _ := os.ReadFile(sp.log)
			t.Logf("log of %s:\n%s", name, out)
		}
	})
	sp.run()
	return sp
}

func (sp *speaker) run() {
	t := sp.t
	t.Helper()
	logFile, err := os.OpenFile(sp.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	os.Remove(sp.state)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), speakerConfigEnv+"="+sp.cfg, speakerStateEnv+"="+sp.state)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{w}
	// The child inherits the namespace of the thread that forks it.
	err = netnsx.Do(sp.ns, cmd.Start)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	sp.cmd, sp.exit = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(sp.exit) }()
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(r).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		out, _ := os.ReadFile(sp.log)
		t.Fatalf("speaker %s did not start: %q\n%s", sp.name, line, out)
	}
}

// kill ends the process without a goodbye, as a crash would.
func (sp *speaker) kill() {
	if sp.cmd == nil {
		return
	}
	sp.cmd.Process.Kill()
	<-sp.exit
	sp.cmd = nil
}

// stop ends it with SIGTERM, as emu destroy does.
func (sp *speaker) stop() {
	sp.t.Helper()
	sp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-sp.exit:
	case <-time.After(10 * time.Second):
		sp.t.Errorf("speaker %s ignored SIGTERM", sp.name)
	}
	sp.kill()
}

func (sp *speaker) read() state {
	var st state
	data, err := os.ReadFile(sp.state)
	if err == nil {
		json.Unmarshal(data, &st)
	}
	return st
}

func (sp *speaker) established(peer string) bool {
	for _, n := range sp.read().Neighbors {
		if n.Address.String() == peer {
			return n.Established
		}
	}
	return false
}

// fibRoutes reads the BGP routes of a namespace's main table: prefix →
// sorted nexthops.
func fibRoutes(t *testing.T, ns string) map[string][]string {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, r := range rs {
		if r.Priority != DefaultMetric {
			t.Errorf("%s: route %s has metric %d, want %d", ns, r.Dst, r.Priority, DefaultMetric)
		}
		var nhs []string
		for _, a := range nexthops(r) {
			nhs = append(nhs, a.String())
		}
		out[prefixOf(r.Dst).String()] = nhs
	}
	return out
}

// viaIs reports whether ns's FIB routes prefix via exactly nhs (none: absent).
func viaIs(t *testing.T, ns, prefix string, nhs ...string) func() bool {
	return func() bool {
		got, ok := fibRoutes(t, ns)[prefix]
		if len(nhs) == 0 {
			return !ok
		}
		return slices.Equal(got, nhs)
	}
}

// waitFor polls cond and returns how long it took to hold.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	d := time.Since(start).Round(10 * time.Millisecond)
	t.Logf("%s: %s", what, d)
	return d
}

const (
	prefixA   = "10.99.0.0/24"
	holdTime  = 3
	keepalive = 1
	retry     = 1
)

func neighbor(addr string, asn uint32) Neighbor {
	return Neighbor{Address: netip.MustParseAddr(addr), PeerASN: asn, HoldTime: holdTime, Keepalive: keepalive, ConnectRetry: retry}
}

// pair is A (AS 65001, originates prefixA) — B (AS 65002) on 10.0.0.0/30.
func pair(t *testing.T) (l *testLab, nsA, nsB string, a, b Config) {
	l = newTestLab(t)
	nsA, nsB = l.namespace("a"), l.namespace("b")
	l.link(nsA, "eth1", "10.0.0.1/30", nsB, "eth1", "10.0.0.2/30")
	a = Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), Neighbors: []Neighbor{neighbor("10.0.0.2", 65002)},
		Networks: []netip.Prefix{netip.MustParsePrefix(prefixA)}}
	b = Config{ASN: 65002, RouterID: netip.MustParseAddr("10.0.0.2"), Neighbors: []Neighbor{neighbor("10.0.0.1", 65001)}}
	b.Neighbors[0].Passive = true // see Neighbor.Passive
	return
}

func TestBGP_RouteFollowsSession(t *testing.T) {
	l, nsA, nsB, cfgA, cfgB := pair(t)
	a := l.start(t, "a", nsA, cfgA)
	b := l.start(t, "b", nsB, cfgB)

	waitFor(t, "session up", 15*time.Second, func() bool { return b.established("10.0.0.1") })
	waitFor(t, "route in B's FIB", 5*time.Second, viaIs(t, nsB, prefixA, "10.0.0.1"))
	waitFor(t, "B reports the route installed", 2*time.Second, func() bool {
		st := b.read()
		return len(st.Routes) == 1 && st.Routes[0].Installed && st.Routes[0].From.String() == "10.0.0.1" &&
			slices.Equal(st.Routes[0].ASPath, []uint32{65001}) && st.Neighbors[0].Accepted == 1
	})
	if got := fibRoutes(t, nsA); len(got) != 0 {
		t.Errorf("A installed %v; its own network must stay out of its FIB", got)
	}
	// Keepalives (a third of the hold time apart) count as messages heard:
	// what a repair's wait asks of a session that outlived a fault.
	heard := b.read().Neighbors[0].Messages
	waitFor(t, "a keepalive counted", holdTime*time.Second, func() bool { return b.read().Neighbors[0].Messages > heard })

	// Cutting A's side leaves B's link with no carrier but its routes in
	// place: only the hold timer can tell B.
	l.setLink(nsA, "eth1", false)
	d := waitFor(t, "withdrawn after link cut (hold 3 s)", (holdTime+3)*time.Second, viaIs(t, nsB, prefixA))
	if d < (holdTime-1)*time.Second {
		t.Errorf("withdrawn after %s, sooner than the hold time allows: was it the hold timer?", d)
	}
	l.setLink(nsA, "eth1", true)
	// GoBGP idles 5 s after the failure, then retries every 1-2 s.
	waitFor(t, "back after link restore", 12*time.Second, viaIs(t, nsB, prefixA, "10.0.0.1"))

	// A crash closes A's sockets, so B learns at once.
	a.kill()
	waitFor(t, "withdrawn after A is killed", (holdTime+3)*time.Second, viaIs(t, nsB, prefixA))
	a.run()
	waitFor(t, "back after A restarts", 12*time.Second, viaIs(t, nsB, prefixA, "10.0.0.1"))

	b.stop()
	if got := fibRoutes(t, nsB); len(got) != 0 {
		t.Errorf("B left %v in its FIB after stopping", got)
	}
}

func TestBGP_StaleRoutesOfACrashedSpeakerAreRemoved(t *testing.T) {
	l, nsA, nsB, cfgA, cfgB := pair(t)
	l.start(t, "a", nsA, cfgA)
	b := l.start(t, "b", nsB, cfgB)
	waitFor(t, "route in B's FIB", 15*time.Second, viaIs(t, nsB, prefixA, "10.0.0.1"))
	b.kill()
	if !viaIs(t, nsB, prefixA, "10.0.0.1")() {
		t.Fatal("the route vanished with the killed speaker; this test needs it left behind")
	}
	cfgB.Neighbors = nil
	b = l.start(t, "b2", nsB, cfgB)
	waitFor(t, "stale route removed by the next speaker", 5*time.Second, viaIs(t, nsB, prefixA))
}

func TestBGP_RedistributeStatic_FollowsKernel(t *testing.T) {
	l, nsA, nsB, cfgA, cfgB := pair(t)
	cfgA.Networks = nil
	cfgA.Redistribute = []string{Static}
	l.start(t, "a", nsA, cfgA)
	l.start(t, "b", nsB, cfgB)
	dst := netip.MustParsePrefix("10.77.0.0/24")
	if err := l.w.AddRoute(nsA, wiring.IPNet(dst), net.ParseIP("10.0.0.2"), "", 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "static route of A in B's FIB", 15*time.Second, viaIs(t, nsB, dst.String(), "10.0.0.1"))
	if err := l.w.DeleteRoute(nsA, wiring.IPNet(dst), nil, "", 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gone from B's FIB after A deletes it", 5*time.Second, viaIs(t, nsB, dst.String()))
}

// TestBGP_Policy: A and C (both AS 65001) originate the same prefix to B;
// each knob must decide which one B installs.
func TestBGP_Policy(t *testing.T) {
	l := newTestLab(t)
	nsA, nsB, nsC := l.namespace("a"), l.namespace("b"), l.namespace("c")
	l.link(nsA, "eth1", "10.0.0.1/30", nsB, "eth1", "10.0.0.2/30")
	l.link(nsC, "eth1", "10.0.0.5/30", nsB, "eth2", "10.0.0.6/30")
	origin := func(id, peer string) Config {
		return Config{ASN: 65001, RouterID: netip.MustParseAddr(id), Neighbors: []Neighbor{neighbor(peer, 65002)},
			Networks: []netip.Prefix{netip.MustParsePrefix(prefixA)}}
	}
	for _, tc := range []struct {
		name  string
		setup func(a, b, c *Config)
		via   []string
	}{
		{"LocalPrefOnC_PrefersC", func(a, b, c *Config) { b.Neighbors[1].LocalPref = 200 }, []string{"10.0.0.5"}},
		{"LocalPrefOnA_PrefersA", func(a, b, c *Config) { b.Neighbors[0].LocalPref = 200 }, []string{"10.0.0.1"}},
		{"APrepends_PrefersC", func(a, b, c *Config) { a.Neighbors[0].Prepend = 2 }, []string{"10.0.0.5"}},
		{"AHasHigherMED_PrefersC", func(a, b, c *Config) { a.Neighbors[0].MED = 50; c.Neighbors[0].MED = 10 }, []string{"10.0.0.5"}},
		{"Multipath_ECMP", func(a, b, c *Config) { b.Multipath = true }, []string{"10.0.0.1", "10.0.0.5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, c := origin("10.0.0.1", "10.0.0.2"), origin("10.0.0.5", "10.0.0.6")
			b := Config{ASN: 65002, RouterID: netip.MustParseAddr("10.0.0.2"),
				Neighbors: []Neighbor{neighbor("10.0.0.1", 65001), neighbor("10.0.0.5", 65001)}}
			tc.setup(&a, &b, &c)
			l.start(t, "a", nsA, a)
			l.start(t, "c", nsC, c)
			sb := l.start(t, "b", nsB, b)
			waitFor(t, "both sessions up", 15*time.Second, func() bool { return sb.established("10.0.0.1") && sb.established("10.0.0.5") })
			// Both paths must be in B's RIB before its choice means anything.
			waitFor(t, "both paths received", 5*time.Second, func() bool {
				st := sb.read()
				return len(st.Neighbors) == 2 && st.Neighbors[0].Accepted == 1 && st.Neighbors[1].Accepted == 1
			})
			waitFor(t, fmt.Sprintf("B routes %s via %v", prefixA, tc.via), 5*time.Second, viaIs(t, nsB, prefixA, tc.via...))
			time.Sleep(300 * time.Millisecond) // not a passing state
			if !viaIs(t, nsB, prefixA, tc.via...)() {
				t.Errorf("B changed its mind: %v", fibRoutes(t, nsB))
			}
		})
	}
}

func TestConfig_Validate(t *testing.T) {
	ok := Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), Neighbors: []Neighbor{neighbor("10.0.0.2", 65002)}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(c *Config)
		want string
	}{
		{func(c *Config) { c.Neighbors[0].HoldTime = 2 }, "below GoBGP's minimum"},
		{func(c *Config) { c.Neighbors[0].Keepalive = 3 }, "must be shorter than the hold time"},
		{func(c *Config) { c.RouterID = netip.Addr{} }, "router-id"},
		{func(c *Config) { c.Networks = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/24")} }, "use 10.1.2.0/24"},
		{func(c *Config) { c.Redistribute = []string{"ospf"} }, `redistribute "ospf"`},
		{func(c *Config) { c.Neighbors = append(c.Neighbors, c.Neighbors[0]) }, "listed twice"},
	} {
		c := ok
		c.Neighbors = slices.Clone(ok.Neighbors)
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error containing %q", err, tc.want)
		}
	}
}

func TestConfig_JSONRoundTrip(t *testing.T) {
	in := Config{ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"), Neighbors: []Neighbor{neighbor("10.0.0.2", 65002)},
		Networks: []netip.Prefix{netip.MustParsePrefix(prefixA)}}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Config
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if out.RouterID != in.RouterID || out.Neighbors[0] != in.Neighbors[0] || out.Networks[0] != in.Networks[0] {
		t.Errorf("round trip: %s gave %+v", data, out)
	}
	if strings.Contains(string(data), "local_address") {
		t.Errorf("unset local address is written out: %s", data)
	}
}

package agent_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/checks/checktest"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/probe"
)

func TestMain(m *testing.M) { labtest.Main(m) }

var (
	clientAddr = netip.MustParseAddr("10.1.0.10")
	ecsAddr    = netip.MustParseAddr("172.16.2.10")
)

func configOf(l *labtest.Lab, node string) string {
	return filepath.Join(l.Plan.LabDir, "agents", node+".json")
}

// flows sends echoes from client to ECS until one is answered or within ends.
func flows(l *labtest.Lab, within time.Duration) bool {
	for end := time.Now().Add(within); time.Now().Before(end); {
		if _, err := probe.Ping(l.NS("client"), ecsAddr, 300*time.Millisecond); err == nil {
			return true
		}
	}
	return false
}

func tunnelIn(t *testing.T, cfg string) (packets, replays uint64) {
	t.Helper()
	st, err := agent.ReadState(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tunnels) == 0 {
		t.Fatalf("%s publishes no tunnel counters", cfg)
	}
	return st.Tunnels[0].In.Packets, st.Tunnels[0].In.ReplayDrops
}

func TestAgentKilled_IsRestarted_TunnelResumesWithZeroReplayDropsOnThePeer(t *testing.T) {
	l := labtest.Deploy(t, "static-bgp.yaml")
	if !flows(l, 10*time.Second) {
		t.Fatal("no traffic client → ECS after deploy")
	}
	vpngw, onprem := configOf(l, "vpngw"), configOf(l, "onprem")
	// Traffic both ways, so both SAs of the tunnel have numbers to resume.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	probe.Stream(ctx, l.NS("client"), ecsAddr, 10*time.Millisecond)
	cancel()
	time.Sleep(2 * agent.PublishEvery) // a checkpoint with that traffic
	before := agent.Check(vpngw)
	if !before.Alive || before.Restarts != 0 {
		t.Fatalf("vpngw's agent before the kill: %s", before.Summary())
	}
	_, replaysBefore := tunnelIn(t, onprem)
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var after agent.Health
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if after = agent.Check(vpngw); after.Alive && after.Restarts > 0 {
			break
		}
	}
	if !after.Alive || after.Restarts != 1 || after.PID == before.PID || !strings.Contains(after.Detail, "killed by signal 9") {
		t.Fatalf("vpngw's agent after kill -9 of pid %d: %s", before.PID, after.Summary())
	}
	// Back in the tunnel once BGP over it is up again (hold 3 s).
	labc := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	for _, r := range checktest.Run(t, labc, checks.BGP) {
		if !r.Passed {
			t.Fatalf("after the restart: %s: %s", r.Check, r.Evidence)
		}
	}
	packetsBefore, _ := tunnelIn(t, onprem)
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	res, err := probe.Stream(ctx, l.NS("client"), ecsAddr, 10*time.Millisecond)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * agent.PublishEvery)
	packets, replays := tunnelIn(t, onprem)
	t.Logf("after the restart: %s; onprem received %d ESP packets from the restarted vpngw, replay drops %d → %d", res, packets-packetsBefore, replaysBefore, replays)
	if res.Received == 0 || packets-packetsBefore < uint64(res.Received) {
		t.Fatalf("the restarted tunnel carries nothing: %s", res)
	}
	if replays != replaysBefore {
		t.Errorf("the peer dropped %d packets of the restarted agent as replays", replays-replaysBefore)
	}
}

// A worker stopped on its own (SIGTERM to its pid, which it answers by
// exiting 0) is restarted like one that crashed: only a stop sent to the
// supervisor ends the agent. Before, the supervisor ended with it and the
// lab lost its tunnel.
func TestAgentWorkerTerminated_IsRestarted_TunnelCarriesTrafficAgain(t *testing.T) {
	l := labtest.Deploy(t, "static.yaml")
	onprem := configOf(l, "onprem")
	before := agent.Check(onprem)
	if !before.Alive || before.Restarts != 0 {
		t.Fatalf("onprem's agent after deploy: %s", before.Summary())
	}
	if err := syscall.Kill(before.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var after agent.Health
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if after = agent.Check(onprem); after.Alive && after.Restarts > 0 {
			break
		}
	}
	if !after.Alive || after.Restarts != 1 || after.PID == before.PID || !strings.Contains(after.Detail, "exit status 0") {
		t.Fatalf("onprem's agent after SIGTERM to its worker pid %d: %s", before.PID, after.Summary())
	}
	if !flows(l, 10*time.Second) {
		t.Fatalf("no traffic client → ECS after the worker was restarted as pid %d", after.PID)
	}
	labc := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	for _, r := range checktest.Run(t, labc, checks.Connectivity, checks.Encryption) {
		if !r.Passed {
			t.Errorf("after the restart: %s: %s", r.Check, r.Evidence)
		}
	}
}

func TestAgentDead_BGPCheckFailsNamingItAndItsLog_InspectSaysDead(t *testing.T) {
	l := labtest.Deploy(t, "static-bgp.yaml")
	vpngw := configOf(l, "vpngw")
	h := agent.Check(vpngw)
	data, err := os.ReadFile(agent.StatusPath(vpngw))
	if err != nil || !h.Alive {
		t.Fatalf("agent not alive after deploy: %s %v", h.Summary(), err)
	}
	// The supervisor first, so nothing restarts the worker.
	var st agent.Status
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(st.SupervisorPID, syscall.SIGKILL)
	syscall.Kill(st.WorkerPID, syscall.SIGKILL)
	time.Sleep(200 * time.Millisecond)
	if h = agent.Check(vpngw); h.Alive || h.State != agent.StateDead {
		t.Errorf("both processes killed, health says %s", h.Summary())
	}
	labc := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	rs := checktest.Run(t, labc, checks.BGP)
	for _, r := range rs {
		if r.Check != "bgp vpngw" {
			continue
		}
		if r.Passed || !strings.Contains(r.Evidence, "dead") || !strings.Contains(r.Evidence, agent.LogPath(vpngw)) {
			t.Errorf("bgp vpngw with its agent dead: %v: %s", r.Passed, r.Evidence)
		}
		return
	}
	t.Fatalf("no bgp vpngw result in %+v", rs)
}

func TestBogusESP_RandomSPIs_CountedLiveAsUnknownSPI(t *testing.T) {
	l := labtest.Deploy(t, "static.yaml")
	onprem := configOf(l, "onprem")
	tun := l.Topology.Node("onprem").Tunnels[0]
	var conn net.PacketConn
	// From the VBR, a hop on the private path: the raw socket's kernel
	// writes the IP header, ESP is the payload.
	if err := netnsx.Do(l.NS("vbr"), func() (err error) {
		conn, err = net.ListenPacket("ip4:50", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 10000
	pkt := make([]byte, 64)
	dst := &net.IPAddr{IP: tun.Local.AsSlice()}
	for i := range n {
		binary.BigEndian.PutUint32(pkt, rand.Uint32()|1<<31) // never one of the lab's
		binary.BigEndian.PutUint32(pkt[4:], uint32(i+1))
		if _, err := conn.WriteTo(pkt, dst); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // the agent's socket buffer is not the subject
		}
	}
	var got uint64
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(agent.PublishEvery) {
		st, err := agent.ReadState(onprem)
		if err != nil {
			t.Fatal(err)
		}
		if got = st.Drops.UnknownSPI; got >= n {
			break
		}
	}
	if got != n {
		t.Errorf("sent %d ESP packets with unknown SPIs, the live counter says %d", n, got)
	}
}

func TestAgentHung_ShownHung_ThenKilledAndRestarted(t *testing.T) {
	l := labtest.Deploy(t, "static.yaml")
	onprem := configOf(l, "onprem")
	before := agent.Check(onprem)
	if !before.Alive {
		t.Fatalf("after deploy: %s", before.Summary())
	}
	// A stopped process is alive to the kernel but does nothing: only its
	// missing heartbeat tells.
	if err := syscall.Kill(before.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(before.PID, syscall.SIGKILL) // if the supervisor did not
	var h agent.Health
	sawHung := false
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		h = agent.Check(onprem)
		if h.State == agent.StateHung {
			sawHung = true
			if _, err := agent.ReadState(onprem); err == nil {
				t.Error("a hung agent's state was read as current")
			}
		}
		if h.Alive && h.Restarts == 1 {
			break
		}
	}
	if !sawHung {
		t.Error("inspect never showed the stopped agent as hung")
	}
	if !h.Alive || h.Restarts != 1 || !strings.Contains(h.Detail, "hung") {
		t.Fatalf("stopped agent not replaced: %s", h.Summary())
	}
	if !flows(l, 10*time.Second) {
		t.Fatal("no traffic after the hung agent was replaced")
	}
}

// Without dead peer detection nothing but the agent puts back the routes
// into its tunnel, which the kernel deleted with the dead agent's TUN
// interface: traffic would flow in clear over the fallback route.
func TestAgentKilled_WithoutDPD_RoutesIntoTheTunnelComeBack_TrafficStaysEncrypted(t *testing.T) {
	text := strings.Replace(labtest.Shipped(t, "static.yaml"), "address: 169.254.10.1/30\n", "address: 169.254.10.1/30\n          dpd: off\n", 1)
	l := labtest.DeployText(t, text)
	onprem := configOf(l, "onprem")
	before := agent.Check(onprem)
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var after agent.Health
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if after = agent.Check(onprem); after.Alive && after.Restarts > 0 {
			break
		}
	}
	if !after.Alive || after.Restarts != 1 {
		t.Fatalf("onprem's agent after kill -9: %s", after.Summary())
	}
	labc := checks.Lab{Topology: l.Topology, Dir: l.Plan.LabDir}
	for _, r := range checktest.Run(t, labc, checks.Connectivity, checks.Encryption) {
		if !r.Passed {
			t.Errorf("after the restart: %s: %s", r.Check, r.Evidence)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/olekukonko/tablewriter"

	"github.com/emu-lab/emu/internal/probe"
)

// scaleStreams is how many of a lab's connections carry a stream at once:
// each through its own tunnel, to its own ECS address. Two cores saturate
// well before that, so more streams would only add noise.
const scaleStreams = 4

// scaledTopology is the static lab with n IPsec connections between the
// on-prem gateway and the one VPN gateway: connection i runs from the
// on-prem address 10.2.i/256.i%256+1 (the VBR, CEN and VPC route 10.2.0.0/16
// back to it) to 172.16.1.10, over tunnel interfaces ipsec<i> with tunnel
// addresses in 169.254.10.0/22 and above. The first scaleStreams
// connections each carry the traffic to one ECS address (172.16.2.10+i);
// the ECS instance answers through the first.
func scaledTopology(n int) []byte {
	local := func(i int) string { return fmt.Sprintf("10.2.%d.%d", i/250, 1+i%250) }
	tunnel := func(i, end int) string { return fmt.Sprintf("169.254.%d.%d/30", 10+i/64, i%64*4+end) }
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("name: scale")
	w("method: static")
	w("topology:")
	w("  nodes:")
	w("    client: {kind: host, interfaces: {eth1: 10.1.0.10/24}, routes: [{dst: default, via: 10.1.0.1}]}")
	w("    onprem:")
	w("      kind: onprem-gateway")
	w("      interfaces:")
	w("        eth1: 10.1.0.1/24")
	addrs := []string{"10.0.0.1/30"}
	for i := range n {
		addrs = append(addrs, local(i)+"/32")
	}
	w("        eth2: [%s]", strings.Join(addrs, ", "))
	w("      ipsec:")
	for i := range n {
		w("        - {name: c%d, local: %s, remote: 172.16.1.10, interface: ipsec%d, address: %s, dpd: off}", i, local(i), i, tunnel(i, 1))
	}
	w("      routes:")
	w("        - {dst: 172.16.0.0/16, via: 10.0.0.2}")
	w("        - {dst: 172.16.2.0/24, dev: ipsec0}")
	for i := range min(n, scaleStreams) {
		w("        - {dst: 172.16.2.%d/32, dev: ipsec%d}", 10+i, i)
	}
	w("    vbr: {kind: vbr, interfaces: {eth1: 10.0.0.2/30, eth2: 10.0.1.1/30}, routes: [{dst: 10.1.0.0/24, via: 10.0.0.1}, {dst: 10.2.0.0/16, via: 10.0.0.1}, {dst: 172.16.0.0/16, via: 10.0.1.2}]}")
	w("    cen: {kind: cen, interfaces: {eth1: 10.0.1.2/30, eth2: 10.0.2.1/30}, routes: [{dst: 10.0.0.0/30, via: 10.0.1.1}, {dst: 10.1.0.0/24, via: 10.0.1.1}, {dst: 10.2.0.0/16, via: 10.0.1.1}, {dst: 172.16.0.0/16, via: 10.0.2.2}]}")
	w("    vpc:")
	w("      kind: vpc")
	w("      interfaces: {eth1: 10.0.2.2/30, eth2: 172.16.1.1/24, eth3: 172.16.2.1/24}")
	w("      routes: [{dst: 10.0.0.0/30, via: 10.0.2.1}, {dst: 10.2.0.0/16, via: 10.0.2.1}, {dst: 10.1.0.0/24, via: 172.16.1.10, metric: 10}, {dst: 10.1.0.0/24, via: 10.0.2.1, metric: 100}]")
	w("    vpngw:")
	w("      kind: vpn-gateway")
	w("      interfaces: {eth1: 172.16.1.10/24}")
	w("      ipsec:")
	for i := range n {
		w("        - {name: c%d, local: 172.16.1.10, remote: %s, interface: ipsec%d, address: %s, dpd: off}", i, local(i), i, tunnel(i, 2))
	}
	w("      routes: [{dst: default, via: 172.16.1.1}, {dst: 10.1.0.0/24, dev: ipsec0}]")
	var ecs []string
	for i := range min(n, scaleStreams) {
		ecs = append(ecs, fmt.Sprintf("172.16.2.%d/24", 10+i))
	}
	w("    ecs: {kind: host, interfaces: {eth1: [%s]}, routes: [{dst: default, via: 172.16.2.1}]}", strings.Join(ecs, ", "))
	w("  links:")
	for _, l := range [][2]string{{"client:eth1", "onprem:eth1"}, {"onprem:eth2", "vbr:eth1"}, {"vbr:eth2", "cen:eth1"}, {"cen:eth2", "vpc:eth1"}, {"vpc:eth2", "vpngw:eth1"}, {"vpc:eth3", "ecs:eth1"}} {
		w(`    - endpoints: ["%s", "%s"]`, l[0], l[1])
	}
	return b.Bytes()
}

// scaleRow is one lab of the scaling table.
type scaleRow struct {
	conns  int
	deploy time.Duration
	rss    uint64 // bytes, the VPN gateway's agent
	bps    float64
	err    error
	// unclean names the agents that did not finish stopping in time.
	unclean []string
}

// measureScale deploys the lab with each number of connections in turn,
// streams up to scaleStreams flows at once through as many tunnels for d,
// reads the VPN gateway agent's memory, and destroys the lab.
func measureScale(ctx context.Context, counts []int, d time.Duration) ([]scaleRow, error) {
	var rows []scaleRow
	for _, n := range counts {
		l, err := deploy(ctx, scaledTopology(n), fmt.Sprintf("%d connections on one VPN gateway", n), nil)
		if err != nil {
			return rows, fmt.Errorf("%d connections: %w", n, err)
		}
		r := scaleRow{conns: n, deploy: l.deployTime}
		r.bps, r.err = aggregate(ctx, l, min(n, scaleStreams), d)
		if r.err == nil {
			r.rss, r.err = agentRSS(filepath.Join(l.plan.LabDir, "agents", "vpngw.json"))
		}
		derr := l.remove()
		// An agent that logged no CPU time, its very last line, was killed
		// before it finished stopping (internal/lab gives it 2 s after
		// SIGTERM).
		for _, node := range gateways {
			data, err := os.ReadFile(filepath.Join(l.plan.LabDir, "logs", node+".log"))
			if _, cerr := parseCPU(string(data)); err == nil && cerr != nil {
				r.unclean = append(r.unclean, node)
			}
		}
		os.RemoveAll(l.dir)
		if r.err != nil || derr != nil {
			return rows, fmt.Errorf("%d connections: %w", n, errors.Join(r.err, derr))
		}
		rows = append(rows, r)
		fmt.Fprintf(os.Stderr, "%d connections: deploy %s, VPN gateway agent %.1f MiB, %s Gbit/s\n", n, r.deploy.Round(time.Millisecond), float64(r.rss)/(1<<20), gbps(r.bps))
	}
	return rows, nil
}

// aggregate runs k streams at once, stream i to ECS address 172.16.2.10+i
// (through tunnel i), and returns the sum of their rates.
func aggregate(ctx context.Context, l *benchLab, k int, d time.Duration) (float64, error) {
	var mu sync.Mutex
	var sum float64
	var errs []error
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, 16, 2, byte(10 + i)}), 5201)
			bps, err := probe.Throughput(ctx, l.ns("client"), l.ns("ecs"), dst, d)
			mu.Lock()
			defer mu.Unlock()
			sum += bps
			if err != nil {
				errs = append(errs, fmt.Errorf("stream to %s: %w", dst.Addr(), err))
			}
		})
	}
	wg.Wait()
	return sum, errors.Join(errs...)
}

// agentRSS is the resident memory of the agent started with configPath:
// its supervisor and its worker, both found by their exact command line (as
// internal/lab finds agents).
func agentRSS(configPath string) (uint64, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := []byte("--config\x00" + configPath + "\x00")
	var sum uint64
	found := 0
	for _, e := range dirs {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.HasSuffix(cmdline, want) {
			continue
		}
		rss, err := processRSS(e.Name())
		if err != nil {
			return 0, err
		}
		sum += rss
		found++
	}
	if found == 0 {
		return 0, fmt.Errorf("no agent runs with --config %s", configPath)
	}
	return sum, nil
}

// processRSS is VmRSS of /proc/<pid>/status, in bytes.
func processRSS(pid string) (uint64, error) {
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(status)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%s/status", pid)
}

// printScale prints the scaling table: totals, and what each connection
// beyond the first row's adds, which stays flat when the cost grows
// linearly.
func printScale(w io.Writer, rows []scaleRow) error {
	t := tablewriter.NewWriter(w)
	t.Header("Connections", "Deploy", "Deploy per added connection", "VPN gateway agent RSS", "RSS per added connection", "Aggregate Gbit/s ("+strconv.Itoa(scaleStreams)+" streams max)", "Agents killed on destroy")
	for _, r := range rows {
		perDeploy, perRSS := "", ""
		if base := rows[0]; r.conns > base.conns {
			added := float64(r.conns - base.conns)
			perDeploy = (time.Duration(float64(r.deploy-base.deploy) / added)).Round(10 * time.Microsecond).String()
			perRSS = fmt.Sprintf("%.0f KiB", (float64(r.rss)-float64(base.rss))/added/1024)
		}
		err := t.Append(strconv.Itoa(r.conns), r.deploy.Round(time.Millisecond).String(), perDeploy,
			fmt.Sprintf("%.1f MiB", float64(r.rss)/(1<<20)), perRSS, gbps(r.bps), strings.Join(r.unclean, ", "))
		if err != nil {
			return err
		}
	}
	return t.Render()
}

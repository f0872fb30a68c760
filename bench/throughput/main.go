// Command throughput measures the userspace ESP dataplane against plain
// forwarding and wireguard-go on the same seven namespaces: it deploys
// topologies/static.yaml once per ESP algorithm under fresh lab names, runs
// wireguard-go (golang.zx2c4.com/wireguard from go.mod) between the same
// two gateways of the first lab, and streams one TCP flow client → ECS for
// each mode in turn, N times: plain (tunnel routes withdrawn), the
// packet-rate ceiling of raw ESP (rawIPCeiling: ESP-sized raw IP packets
// between the two gateways, nothing encrypted), wireguard-go
// (routes moved to wg0), emu raw ESP per algorithm, and emu ESP in UDP
// (RFC 3948) keyed by emu's IKEv2 with force-encap in a lab of its own,
// and, where strongSwan is installed, topologies/strongswan-onprem.yaml:
// Debian's charon with kernel-libipsec as the on-prem gateway, ESP in UDP
// with emu's VPN gateway (the row says so: one end is emu). It prints each mode's
// median, spread and ratio to wireguard-go of the same run, the drops, the
// SA counters and the CPU time of every gateway process, split into user
// and kernel time.
//
//	sudo go run ./bench/throughput [-n 5] [-d 5s] [-profile DIR]
//
// The program plays the node agents and the wireguard-go peers itself
// (started again with asAgentEnv or asWireGuardEnv set), so it measures the
// code of the tree it was built from. -profile writes each agent's CPU
// profile (go tool pprof DIR/emu-<lab>.onprem.<pid>.cpu.pprof).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/ike/swtest"
	"github.com/emu-lab/emu/internal/software"
)

// Targets of the userspace dataplane (issue 12), as shares of wireguard-go
// on the same path in the same run.
const (
	targetESPInUDP = 1.0
	targetRawESP   = 0.5
)

// targetAlgorithms are the ones issue 12 sets targetRawESP for: AES-GCM
// and the provider's default aes-sha1, with aes-sha256.
var targetAlgorithms = []esp.Algorithm{esp.AESGCM128, esp.AESCBCSHA1, esp.AESCBCSHA256}

// benchAlgorithms are the raw ESP rows: every provider encryption with
// sha1, aes with every provider authentication, and AES-GCM. The other 16
// pairs cost what their cipher and HMAC cost apart, so they would add
// labs and minutes, not information.
func benchAlgorithms() []esp.Algorithm {
	out := []esp.Algorithm{esp.AESGCM128}
	for _, c := range []esp.Cipher{esp.AES128, esp.AES192, esp.AES256, esp.DES, esp.TripleDES} {
		out = append(out, esp.CBCAlgorithm(c, esp.SHA1))
	}
	for _, i := range []esp.Integrity{esp.MD5, esp.SHA256, esp.SHA384, esp.SHA512} {
		out = append(out, esp.CBCAlgorithm(esp.AES128, i))
	}
	return out
}

const (
	asAgentEnv = "EMU_BENCH_AS_AGENT"
	// asKeeperEnv runs the keeper of a node's software (charon's node).
	asKeeperEnv = "EMU_BENCH_AS_KEEPER"
	profileEnv  = "EMU_BENCH_PROFILE" // directory for the agents' CPU profiles
)

// cpuMarker starts the line an agent logs as it ends with the CPU time it
// used in user space and in the kernel (getrusage): the kernel's share is
// the system calls, TUN and socket work done on its behalf.
const cpuMarker = "bench: cpu "

// runAgent is the node agent, profiled when profileEnv names a directory.
func runAgent(configPath string) int {
	// <lab dir>/agents/<node>.json names the profile <lab dir>.<node>.<pid>:
	// an agent is two processes, the supervisor and its worker (this
	// program again), and the worker's is the larger profile.
	node := strings.TrimSuffix(filepath.Base(configPath), ".json")
	labDir := filepath.Base(filepath.Dir(filepath.Dir(configPath)))
	if dir := os.Getenv(profileEnv); dir != "" {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s.%s.%d.cpu.pprof", labDir, node, os.Getpid())))
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "agent: profile:", err)
			return 1
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	err := agent.Run(configPath)
	printCPU(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		return 1
	}
	return 0
}

func main() {
	if os.Getenv(asAgentEnv) == "1" {
		os.Exit(runAgent(os.Args[2]))
	}
	if os.Getenv(asKeeperEnv) == "1" {
		if err := software.Run(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "keeper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(asWireGuardEnv) == "1" {
		os.Exit(runWireGuard())
	}
	runs := flag.Int("n", 5, "repetitions of the plain/encrypted pair")
	dur := flag.Duration("d", 5*time.Second, "length of each TCP stream")
	profile := flag.String("profile", "", "write each gateway agent's CPU profile (pprof) into this directory")
	scale := flag.String("connections", "1,16,64,256", "connection counts on one VPN gateway for the scaling table (\"\" skips it)")
	only := flag.String("modes", "", "run only the emu rows whose name matches this regular expression, e.g. 'raw ESP aes-gcm' (plain and wireguard-go always run: they are the base of the ratios)")
	flag.Parse()
	modes, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintf(os.Stderr, "throughput: -modes: %v\n", err)
		os.Exit(2)
	}
	if !slices.ContainsFunc(emuRows(), modes.MatchString) {
		fmt.Fprintf(os.Stderr, "throughput: -modes %q matches no emu row; the rows are:\n  %s\n", *only, strings.Join(emuRows(), "\n  "))
		os.Exit(2)
	}
	var counts []int
	for f := range strings.FieldsFuncSeq(*scale, func(r rune) bool { return r == ',' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 1000 {
			fmt.Fprintf(os.Stderr, "throughput: -connections: %q is not a count of 1..1000\n", f)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	if *profile != "" {
		dir, err := filepath.Abs(*profile)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "throughput: -profile:", err)
			os.Exit(2)
		}
		os.Setenv(profileEnv, dir) // the agents inherit it
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "throughput: needs root (it creates network namespaces)")
		os.Exit(2)
	}
	// A Ctrl-C cancels the deploy (which then rolls back) or ends the
	// current stream; the deferred destroy runs either way.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Piped into head, a write must fail, not kill the program before its
	// deferred destroy.
	signal.Ignore(syscall.SIGPIPE)
	if err := run(ctx, *runs, *dur, counts, modes); err != nil {
		fmt.Fprintln(os.Stderr, "throughput:", err)
		os.Exit(1)
	}
}

// emuRows are the names of every emu row the bench can run, what -modes
// selects from.
func emuRows() []string {
	var rows []string
	for _, alg := range benchAlgorithms() {
		rows = append(rows, rawESPRow+" "+alg.String())
	}
	for _, cipher := range espInUDPCiphers {
		rows = append(rows, espInUDPRow+" "+cipher)
	}
	return append(rows, strongSwanRow+" "+espInUDPCipher)
}

// loadAverage is the 1, 5 and 15 minute load: the machine is shared, and
// other work moves the numbers.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return err.Error()
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

func run(ctx context.Context, runs int, d time.Duration, counts []int, modes *regexp.Regexp) error {
	fmt.Fprintf(os.Stdout, "machine: %d CPUs, shared with other work; load average before: %s\n", runtime.NumCPU(), loadAverage())
	// One lab per cipher, all up at once, so that each run measures every
	// mode back to back under the same load.
	var labs []*benchLab
	var err error
	// The first lab also carries plain, the ceiling and wireguard-go, so
	// it is always deployed.
	for i, alg := range benchAlgorithms() {
		if i > 0 && !modes.MatchString(rawESPRow+" "+alg.String()) {
			continue
		}
		var l *benchLab
		if l, err = deployCipher(ctx, alg.String()); err != nil {
			break
		}
		l.baseOnly = !modes.MatchString(rawESPRow + " " + alg.String())
		labs = append(labs, l)
	}
	for _, cipher := range espInUDPCiphers {
		if err != nil {
			break
		}
		if !modes.MatchString(espInUDPRow + " " + cipher) {
			continue
		}
		var l *benchLab
		if l, err = deployESPInUDP(ctx, cipher); err == nil {
			labs = append(labs, l)
		}
	}
	// charon on-prem ↔ emu's VPN gateway, where strongSwan is installed.
	_, noCharon := exec.LookPath(swtest.CharonBin)
	_, noSwanctl := exec.LookPath("swanctl")
	swanMissing := errors.Join(noCharon, noSwanctl)
	if err == nil && swanMissing == nil && modes.MatchString(strongSwanRow+" "+espInUDPCipher) {
		var l *benchLab
		if l, err = deployStrongSwan(ctx); err == nil {
			labs = append(labs, l)
		}
	}
	var res results
	if err == nil {
		res, err = measureAll(ctx, labs, runs, d)
	}
	res.strongSwanMissing = swanMissing
	res.agents = map[*benchLab]map[string]agentReport{}
	for _, l := range labs {
		r, derr := l.destroy()
		err = errors.Join(err, derr)
		res.agents[l] = r
	}
	if err != nil {
		return err
	}
	if err := printReport(os.Stdout, res); err != nil {
		return err
	}
	if len(counts) > 0 {
		rows, err := measureScale(ctx, counts, d)
		if perr := printScale(os.Stdout, rows); err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stdout, "load average after: %s\n", loadAverage())
	return nil
}

// results is everything the report shows.
type results struct {
	modes   []mode
	samples [][]sample // per mode, per run
	wgCPU   map[string]cpuTime
	agents  map[*benchLab]map[string]agentReport
	// strongSwanMissing is why there is no strongSwan row (nil: there is).
	strongSwanMissing error
}

// measureAll runs every mode once per run, in turn: wireguard-go and
// plain in the first lab, emu's raw ESP or ESP in UDP in each.
func measureAll(ctx context.Context, labs []*benchLab, runs int, d time.Duration) (res results, err error) {
	wg, err := startWireGuardPair(labs[0])
	if err != nil {
		return res, err
	}
	defer func() { res.wgCPU = wg.stop() }()
	res.modes = []mode{
		{name: "plain", lab: labs[0], without: []route{onpremIntoTunnel, vpcToGateway}},
		{name: "wireguard-go", lab: labs[0], through: wgInterface,
			without: []route{onpremIntoTunnel, vpngwIntoTunnel}, with: onDev(wgInterface, onpremIntoTunnel, vpngwIntoTunnel)},
		{name: ceilingRow, lab: labs[0], ceiling: true},
	}
	for _, l := range labs {
		if !l.baseOnly {
			res.modes = append(res.modes, mode{name: l.modeName(), lab: l, through: "ipsec0"})
		}
	}
	res.samples = make([][]sample, len(res.modes))
	for i := range runs {
		var line []string
		for j, m := range res.modes {
			s, err := m.stream(ctx, d)
			if err != nil {
				return res, fmt.Errorf("run %d: %w", i+1, err)
			}
			res.samples[j] = append(res.samples[j], s)
			line = append(line, m.name+" "+gbps(s.bps))
		}
		fmt.Fprintf(os.Stderr, "run %d/%d (Gbit/s): %s\n", i+1, runs, strings.Join(line, ", "))
	}
	return res, nil
}

// Command deploy measures emu deploy and destroy against a plain shell script
// of ip commands building the same lab, and prints a table of medians:
//
//	sudo go run ./bench/deploy [-sizes 10,100,500] [-reps 3] [-cpuprofile FILE]
//
// Labs: topologies/static.yaml without its IPsec tunnels (plain ip has no
// counterpart of them) and chains of N routers. Every run uses a fresh
// lab name (namespaces emu-bench<random>-...) and is undone before the next;
// after each destroy the program waits for the kernel to finish tearing the
// namespaces down (see bench.Settle), outside the measured time. Everything
// it created is removed on exit, also on failure or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/emu-lab/emu/bench"
)

// The targets emu is held to.
const (
	targetRatio    = 0.3              // emu deploy time / shell deploy time
	targetLargeN   = 500              // routers in the lab of the absolute target
	targetLarge    = 15 * time.Second // deploy of that lab
	linearSlack    = 1.25             // ms/node may grow this much from the second-largest to the largest chain
	settleTimeout  = 2 * time.Minute
	defaultStatic  = "topologies/static.yaml"
	defaultSizes   = "10,100,500"
	defaultRepeats = 3
)

func main() { os.Exit(run()) }

func run() (code int) {
	sizesFlag := flag.String("sizes", defaultSizes, "comma-separated numbers of routers of the chain labs")
	reps := flag.Int("reps", defaultRepeats, "repetitions per lab; the table shows medians")
	static := flag.String("static", defaultStatic, "scenario topology measured besides the chains, without its IPsec tunnels (empty: none)")
	workers := flag.Int("workers", 0, "lab.Deployer.Workers (0: emu's default)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the last emu deploy of the largest lab to `FILE`")
	flag.Parse()
	sizes, err := parseSizes(*sizesFlag)
	if err == nil && *reps < 1 {
		err = errors.New("-reps must be at least 1")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: creating network namespaces needs root: run it with sudo")
		return 1
	}
	var labs []bench.Lab
	if *static != "" {
		l, err := bench.FileLab("static", *static)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 2
		}
		labs = append(labs, l)
	}
	for _, n := range sizes {
		labs = append(labs, bench.Chain(n))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := bench.NewRunner()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	r.Workers = *workers
	defer func() {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted, cleaning up")
		}
		if err := r.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
			code = 1
			return
		}
		fmt.Fprintf(os.Stderr, "cleanup: no namespace named %s* left\n", r.NamespacePrefix())
	}()

	fmt.Fprintf(os.Stderr, "namespaces are named %s*; load average at start: %s\n", r.NamespacePrefix(), loadavg())
	var rows []row
	for li, l := range labs {
		profile := ""
		if li == len(labs)-1 {
			profile = *cpuprofile
		}
		rw, err := measure(ctx, r, l, *reps, profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		rows = append(rows, rw)
	}
	fmt.Fprintf(os.Stderr, "load average at end: %s\n", loadavg())
	if err := printTables(os.Stdout, rows, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	printTargets(os.Stdout, rows)
	return code
}

// loadavg is the host's 1/5/15-minute load: the numbers are only comparable
// on a quiet host, since every netlink change waits for the kernel's RTNL lock.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-sizes %q: %q is not a positive number of routers", s, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// row holds the medians of one lab.
type row struct {
	label                 string
	nodes, links          int
	emuDeploy, emuDestroy time.Duration
	shDeploy, shDestroy   time.Duration
	prepare, other        time.Duration
	stages                []bench.Stage
	emuSettle, shSettle   time.Duration
}

func (r row) perNode() float64 { return ms(r.emuDeploy) / float64(r.nodes) }

// measure runs emu and the shell script reps times each, alternating which
// goes first so neither always runs on a kernel just tidied by the other.
func measure(ctx context.Context, r *bench.Runner, l bench.Lab, reps int, profile string) (row, error) {
	var emuDep, emuDes, shDep, shDes, prep, other, emuSet, shSet []time.Duration
	stages := map[string][]time.Duration{}
	var names []string
	var rw row
	if _, err := bench.Settle(ctx, settleTimeout); err != nil {
		return rw, err
	}
	emu := func(rep int) error {
		stopProfile := func() {}
		if profile != "" && rep == reps-1 {
			var err error
			if stopProfile, err = startProfile(profile); err != nil {
				return err
			}
		}
		dep, err := r.EmuDeploy(ctx, l)
		stopProfile()
		if err != nil {
			return err
		}
		des, err := r.EmuDestroy(dep)
		if err != nil {
			return err
		}
		settle, err := bench.Settle(ctx, settleTimeout)
		if err != nil {
			return err
		}
		rw.nodes, rw.links = dep.Nodes, dep.Links
		emuDep, emuDes, emuSet = append(emuDep, dep.Took), append(emuDes, des), append(emuSet, settle)
		prep = append(prep, dep.Prepare)
		rest := dep.Took - dep.Prepare
		for _, s := range dep.Stages {
			if !slices.Contains(names, s.Name) {
				names = append(names, s.Name)
			}
			stages[s.Name] = append(stages[s.Name], s.Took)
			rest -= s.Took
		}
		other = append(other, rest)
		fmt.Fprintf(os.Stderr, "%-10s rep %d/%d  emu   deploy %7.3fs  destroy %7.3fs  (kernel teardown %.3fs)\n", l.Label, rep+1, reps, dep.Took.Seconds(), des.Seconds(), settle.Seconds())
		return nil
	}
	shell := func(rep int) error {
		dep, err := r.ShellDeploy(ctx, l)
		if err != nil {
			return err
		}
		des, err := r.ShellDestroy(ctx, dep)
		if err != nil {
			return err
		}
		settle, err := bench.Settle(ctx, settleTimeout)
		if err != nil {
			return err
		}
		shDep, shDes, shSet = append(shDep, dep.Took), append(shDes, des), append(shSet, settle)
		fmt.Fprintf(os.Stderr, "%-10s rep %d/%d  shell deploy %7.3fs  destroy %7.3fs  (kernel teardown %.3fs)\n", l.Label, rep+1, reps, dep.Took.Seconds(), des.Seconds(), settle.Seconds())
		return nil
	}
	for rep := range reps {
		order := []func(int) error{emu, shell}
		if rep%2 == 1 {
			slices.Reverse(order)
		}
		for _, f := range order {
			if err := f(rep); err != nil {
				return rw, err
			}
		}
	}
	rw.label = l.Label
	rw.emuDeploy, rw.emuDestroy = median(emuDep), median(emuDes)
	rw.shDeploy, rw.shDestroy = median(shDep), median(shDes)
	rw.prepare, rw.other = median(prep), median(other)
	rw.emuSettle, rw.shSettle = median(emuSet), median(shSet)
	for _, n := range names {
		rw.stages = append(rw.stages, bench.Stage{Name: n, Took: median(stages[n])})
	}
	return rw, nil
}

func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func sec(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func printTables(w io.Writer, rows []row, reps int) error {
	fmt.Fprintf(w, "\nemu deploy/destroy vs plain `ip` shell script (median of %d)\n", reps)
	t := newTable(w)
	t.Header("Lab", "Nodes", "Links", "emu deploy s", "emu destroy s", "shell deploy s", "shell destroy s", "emu/shell deploy", "emu/shell deploy+destroy", "emu deploy ms/node")
	for _, r := range rows {
		if err := t.Append(r.label, r.nodes, r.links, sec(r.emuDeploy), sec(r.emuDestroy), sec(r.shDeploy), sec(r.shDestroy),
			fmt.Sprintf("%.2f", r.emuDeploy.Seconds()/r.shDeploy.Seconds()),
			fmt.Sprintf("%.2f", (r.emuDeploy+r.emuDestroy).Seconds()/(r.shDeploy+r.shDestroy).Seconds()),
			fmt.Sprintf("%.2f", r.perNode())); err != nil {
			return err
		}
	}
	if err := t.Render(); err != nil {
		return err
	}
	fmt.Fprintln(w, "static = topologies/static.yaml without its IPsec tunnels; chain-N = N routers (vbr/cen) in a row plus a host at each end")

	fmt.Fprintf(w, "\nwhere emu's deploy time goes (median s; \"other\" = lock, records, journal, lab dir), and the kernel's\nasynchronous namespace teardown after each destroy (waited for between runs, not in the times above)\n")
	t = newTable(w)
	header := []any{"Lab", "parse+plan"}
	for _, s := range rows[0].stages {
		header = append(header, s.Name)
	}
	header = append(header, "other", "teardown after emu", "teardown after shell")
	t.Header(header...)
	for _, r := range rows {
		cells := []any{r.label, sec(r.prepare)}
		for _, s := range r.stages {
			cells = append(cells, sec(s.Took))
		}
		cells = append(cells, sec(r.other), sec(r.emuSettle), sec(r.shSettle))
		if err := t.Append(cells...); err != nil {
			return err
		}
	}
	return t.Render()
}

// newTable keeps the headers as written: "emu/shell" must not become "EMU / SHELL".
func newTable(w io.Writer) *tablewriter.Table {
	return tablewriter.NewTable(w, tablewriter.WithHeaderAutoFormat(tw.Off))
}

func printTargets(w io.Writer, rows []row) {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	worst := rows[0]
	for _, r := range rows {
		if r.emuDeploy.Seconds()/r.shDeploy.Seconds() > worst.emuDeploy.Seconds()/worst.shDeploy.Seconds() {
			worst = r
		}
	}
	ratio := worst.emuDeploy.Seconds() / worst.shDeploy.Seconds()
	fmt.Fprintf(w, "\ntargets: emu deploy <= %.1fx shell: %s (worst %.2fx, %s)", targetRatio, verdict(ratio <= targetRatio), ratio, worst.label)

	large := fmt.Sprintf("chain-%d", targetLargeN)
	if i := slices.IndexFunc(rows, func(r row) bool { return r.label == large }); i >= 0 {
		fmt.Fprintf(w, "; %d-router deploy < %s: %s (%.3f s)", targetLargeN, targetLarge, verdict(rows[i].emuDeploy < targetLarge), rows[i].emuDeploy.Seconds())
	} else {
		fmt.Fprintf(w, "; %d-router deploy < %s: not measured (add %d to -sizes)", targetLargeN, targetLarge, targetLargeN)
	}

	var chains []row
	for _, r := range rows {
		if strings.HasPrefix(r.label, "chain-") {
			chains = append(chains, r)
		}
	}
	if len(chains) < 2 {
		fmt.Fprintln(w, "; linear cost: needs two chain sizes")
		return
	}
	slices.SortFunc(chains, func(a, b row) int { return a.nodes - b.nodes })
	a, b := chains[len(chains)-2], chains[len(chains)-1]
	growth := b.perNode() / a.perNode()
	fmt.Fprintf(w, "; linear in N: %s (ms/node %.2f at %s -> %.2f at %s, x%.2f, limit x%.2f)\n",
		verdict(growth <= linearSlack), a.perNode(), a.label, b.perNode(), b.label, growth, linearSlack)
}

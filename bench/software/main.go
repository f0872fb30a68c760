// Command software measures, in one run, the deploy of the FRR on-prem
// scenario against the stock one it extends:
//
//	sudo go run ./bench/software [-emu bin/emu] [-reps 3]
//
// topologies/frr-onprem.yaml (FRR's zebra and bgpd in the on-prem gateway)
// and topologies/static-bgp.yaml (emu's GoBGP there) are deployed in turn
// with the emu binary, each time under a fresh lab name in a temp dir, to
// the end of deploy (BGP sessions established), then destroyed. It prints
// the medians of deploy and destroy and of the software stage alone.
// Everything it deployed is destroyed, also on failure.
package main

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"

	"github.com/emu-lab/emu/topologies"
)

var stageRe = regexp.MustCompile(`(?m)^\[\d+/\d+\] software +\d+ done in (\S+)$`)

type sample struct{ deploy, destroy, software time.Duration }

func main() {
	emu := flag.String("emu", "bin/emu", "the emu binary (make build)")
	reps := flag.Int("reps", 3, "deploys per scenario; the table shows medians")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: deploying labs needs root: run it with sudo")
		os.Exit(1)
	}
	abs, err := filepath.Abs(*emu)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: emu binary %s: %v (make build)\n", *emu, err)
		os.Exit(1)
	}
	files := []string{"static-bgp.yaml", "frr-onprem.yaml"}
	samples := map[string][]sample{}
	for i := range *reps {
		for _, f := range files {
			s, err := once(abs, f, i)
			if err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(1)
			}
			samples[f] = append(samples[f], s)
		}
	}
	t := tablewriter.NewWriter(os.Stdout)
	t.Header("Scenario", "Deploy median", "Software stage", "Destroy median", "Runs")
	for _, f := range files {
		ss := samples[f]
		t.Append(f, median(ss, func(s sample) time.Duration { return s.deploy }).String(),
			median(ss, func(s sample) time.Duration { return s.software }).String(),
			median(ss, func(s sample) time.Duration { return s.destroy }).String(), fmt.Sprint(len(ss)))
	}
	t.Render()
}

// once deploys and destroys one scenario under a fresh name.
func once(emu, file string, i int) (s sample, err error) {
	dir, err := os.MkdirTemp("", "emu-bench-software-")
	if err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	sub, err := fs.Sub(topologies.FS, ".")
	if err != nil {
		return s, err
	}
	if err := os.CopyFS(dir, sub); err != nil {
		return s, err
	}
	path := filepath.Join(dir, file)
	data, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	name := fmt.Sprintf("bsw%d%d", i, time.Now().UnixNano()%1e6)
	text := regexp.MustCompile(`(?m)^name:.*$`).ReplaceAllString(string(data), "name: "+name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return s, err
	}
	start := time.Now()
	out, err := exec.Command(emu, "deploy", "-t", path).CombinedOutput()
	s.deploy = time.Since(start)
	defer func() {
		start := time.Now()
		if out, derr := exec.Command(emu, "destroy", "-t", path, "--cleanup").CombinedOutput(); derr != nil && err == nil {
			err = fmt.Errorf("destroy %s: %v: %s", file, derr, out)
		}
		s.destroy = time.Since(start)
	}()
	if err != nil {
		return s, fmt.Errorf("deploy %s: %v: %s", file, err, out)
	}
	if strings.Contains(string(out), "WARNING") {
		return s, fmt.Errorf("deploy %s did not converge: %s", file, out)
	}
	if m := stageRe.FindStringSubmatch(string(out)); m != nil {
		s.software, _ = time.ParseDuration(m[1])
	}
	return s, nil
}

func median(ss []sample, f func(sample) time.Duration) time.Duration {
	ds := make([]time.Duration, len(ss))
	for i, s := range ss {
		ds[i] = f(s)
	}
	slices.Sort(ds)
	return ds[len(ds)/2].Round(time.Millisecond)
}

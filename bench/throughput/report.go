package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/olekukonko/tablewriter"

	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
)

func gbps(bps float64) string { return strconv.FormatFloat(bps/1e9, 'f', 2, 64) }

// printRuns prints one line per repetition, the medians, and the verdict
// against the targets (judged on the medians).
func printRuns(w io.Writer, rows []row) error {
	t := tablewriter.NewWriter(w)
	t.Header("Run", "Plain Gbit/s", "Encrypted Gbit/s", "Ratio", "Raw socket drops", "TUN drops", "TCP retransmits")
	var plain, enc, ratio []float64
	for i, r := range rows {
		rt := r.encrypted / r.plain
		plain, enc, ratio = append(plain, r.plain), append(enc, r.encrypted), append(ratio, rt)
		if err := t.Append(strconv.Itoa(i+1), gbps(r.plain), gbps(r.encrypted), fmt.Sprintf("%.2f", rt), strconv.FormatUint(r.drops.raw, 10), u(r.drops.tun), u(r.drops.retrans)); err != nil {
			return err
		}
	}
	if err := t.Append("median", gbps(median(plain)), gbps(median(enc)), fmt.Sprintf("%.2f", median(ratio)), "", "", ""); err != nil {
		return err
	}
	if err := t.Render(); err != nil {
		return err
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	fmt.Fprintf(w, "target  encrypted ≥ %.1f Gbit/s: %s (median %s)\n", targetGbps, verdict(median(enc) >= targetGbps*1e9), gbps(median(enc)))
	fmt.Fprintf(w, "stretch encrypted ≥ %.1f× plain: %s (median %.2f)\n", stretchRate, verdict(median(ratio) >= stretchRate), median(ratio))
	return nil
}

// printCounters prints the ESP counters of every SA over the whole run, as
// the gateways' agents reported them when they stopped.
func printCounters(w io.Writer, byNode map[string][]userspace.TunnelStats) error {
	t := tablewriter.NewWriter(w)
	t.Header("Node", "SA", "Packets", "Mean inner bytes", "Replay drops", "Auth failures", "Other errors")
	for _, node := range gateways {
		for _, s := range byNode[node] {
			for _, sa := range []struct {
				dir string
				st  esp.Stats
			}{{"out", s.Out}, {"in", s.In}} {
				err := t.Append(node, s.Name+" "+sa.dir, u(sa.st.Packets), u(sa.st.Bytes/max(sa.st.Packets, 1)), u(sa.st.ReplayDrops), u(sa.st.AuthFailures), u(sa.st.Errors))
				if err != nil {
					return err
				}
			}
		}
	}
	return t.Render()
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

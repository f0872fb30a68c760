package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/olekukonko/tablewriter"

	"github.com/emu-lab/emu/internal/ipsec/esp"
)

func gbps(bps float64) string { return strconv.FormatFloat(bps/1e9, 'f', 2, 64) }

// espInUDPRow names emu's ESP in UDP (RFC 3948, port 4500) mode.
const espInUDPRow = "emu ESP-in-UDP"

// rawESPRow starts the rows of emu's raw ESP (IP protocol 50).
const rawESPRow = "emu raw ESP"

// strongSwanRow names the strongSwan lab: Debian's charon with
// kernel-libipsec (userspace ESP in UDP) as the on-prem gateway, emu's ESP
// in UDP on the VPN gateway.
const strongSwanRow = "strongSwan kernel-libipsec on-prem ↔ emu VPN gateway, ESP-in-UDP"

// modeName is the row of the lab's emu tunnel.
func (l *benchLab) modeName() string {
	if l.strongswan {
		return strongSwanRow + " " + l.cipher
	}
	if l.encap {
		return espInUDPRow + " " + l.cipher
	}
	return rawESPRow + " " + l.cipher
}

// printReport prints one row per mode: the median rate of the runs, their
// spread, the median of the per-run ratios to wireguard-go, and the drops
// summed over the runs; then the targets, the SA counters and CPU times.
func printReport(w io.Writer, res results) error {
	wgIndex := slices.IndexFunc(res.modes, func(m mode) bool { return m.through == wgInterface })
	t := tablewriter.NewWriter(w)
	t.Header("Mode", "Median Gbit/s", "Spread (min–max)", "× wireguard-go", "TCP retransmits", "Socket drops", "TUN drops", "Replay drops")
	ratios := map[string]float64{}
	for i, m := range res.modes {
		var rates, ratio []float64
		var sum drops
		for run, s := range res.samples[i] {
			rates = append(rates, s.bps)
			ratio = append(ratio, s.bps/res.samples[wgIndex][run].bps)
			sum = drops{sum.socket + s.drops.socket, sum.tun + s.drops.tun, sum.retrans + s.drops.retrans}
		}
		ratios[m.name] = median(ratio)
		replays := "–" // wireguard-go does not export its counters
		if m.through == "ipsec0" {
			var n uint64
			for _, a := range res.agents[m.lab] {
				for _, tun := range a.tunnels {
					n += tun.In.ReplayDrops
				}
			}
			replays = u(n)
		} else if m.through == "" {
			replays = ""
		}
		retrans, sockets, tuns := u(sum.retrans), u(sum.socket), u(sum.tun)
		if m.ceiling {
			retrans, sockets, tuns, replays = "", "", "", "" // no TCP, TUN or ESP in it
		}
		err := t.Append(m.name, gbps(median(rates)), gbps(slices.Min(rates))+"–"+gbps(slices.Max(rates)), fmt.Sprintf("%.2f", median(ratio)),
			retrans, sockets, tuns, replays)
		if err != nil {
			return err
		}
	}
	if res.strongSwanMissing != nil {
		if err := t.Append(strongSwanRow, "not installed (scripts/setup.sh installs it)", "", "", "", "", "", ""); err != nil {
			return err
		}
	}
	if err := t.Render(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d runs of %s per mode, in turn; ratios are per run, against wireguard-go of the same run\n", len(res.samples[0]), "one TCP stream")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	for _, alg := range targetAlgorithms {
		r, ran := ratios[rawESPRow+" "+alg.String()]
		if !ran {
			continue // not among -modes
		}
		fmt.Fprintf(w, "target raw ESP %s ≥ %.1f× wireguard-go: %s (median %.2f×)\n", alg, targetRawESP, verdict(r >= targetRawESP), r)
	}
	for _, m := range res.modes {
		if m.lab != nil && m.lab.encap {
			r := ratios[m.name]
			fmt.Fprintf(w, "target %s ≥ %.1f× wireguard-go: %s (median %.2f×)\n", m.name, targetESPInUDP, verdict(r >= targetESPInUDP), r)
		}
	}
	return printProcesses(w, res)
}

// printProcesses prints the ESP counters of every SA over the whole run, as
// the gateways' agents reported them when they stopped, and the CPU time of
// each gateway process (agents and wireguard-go peers): user space against
// the kernel's share, which includes the TUN and socket work of its system
// calls and the softirq forwarding they trigger.
func printProcesses(w io.Writer, res results) error {
	t := tablewriter.NewWriter(w)
	t.Header("Process", "SA", "Packets", "Mean inner bytes", "Replay drops", "Auth failures", "Other errors", "CPU user", "CPU kernel")
	for _, m := range res.modes {
		if m.through != "ipsec0" {
			continue
		}
		for _, node := range gateways {
			a := res.agents[m.lab][node]
			for i, s := range a.tunnels {
				for _, sa := range []struct {
					dir string
					st  esp.Stats
				}{{"out", s.Out}, {"in", s.In}} {
					user, kernel := "", ""
					if i == 0 && sa.dir == "out" {
						user, kernel = seconds(a.cpu.user), seconds(a.cpu.system)
					}
					err := t.Append(node+" agent ("+m.name+")", s.Name+" "+sa.dir, u(sa.st.Packets), u(sa.st.Bytes/max(sa.st.Packets, 1)),
						u(sa.st.ReplayDrops), u(sa.st.AuthFailures), u(sa.st.Errors), user, kernel)
					if err != nil {
						return err
					}
				}
			}
		}
	}
	for _, node := range gateways {
		c := res.wgCPU[node]
		if err := t.Append(node+" wireguard-go", "", "", "", "", "", "", seconds(c.user), seconds(c.system)); err != nil {
			return err
		}
	}
	return t.Render()
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

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

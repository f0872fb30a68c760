package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/olekukonko/tablewriter"
	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/userspace"
)

func ipsecCommand() *cli.Command {
	return &cli.Command{
		Name:      "ipsec",
		Usage:     "IPsec connections: IKE phase 1 and phase 2 like the provider's console, and live ESP counters",
		UsageText: "emu ipsec -t FILE [--format table|json]",
		Description: `Reads what each node agent published within the last 3 s (it publishes every
500 ms). For connections keyed by IKE (an ike: block): the state of phase 1 (the IKE
SA) and phase 2 (the CHILD SA), the proposals chosen, SPIs, selectors, whether ESP
travels in UDP/4500, or the failure reason: NO_PROPOSAL_CHOSEN with the proposals each
side offered, AUTHENTICATION_FAILED (wrong pre-shared key or identity),
TS_UNACCEPTABLE, a dead peer. An established connection also counts the
IKE_SA_INIT requests it refused (unauthenticated, so possibly spoofed; they leave it
established) with the last one's reason. Then, per connection, the SPIs and counters of both SAs: packets and
bytes, the last sequence number sent or the highest accepted, and what the inbound
SA refused (auth: the ICV did not verify; replay: the sequence number was seen or
older than the window; malformed: short, misaligned, bad padding). A row "in after
delete" (in_after_delete in JSON) counts what arrived on inbound SAs in the few seconds
after IKE deleted them at a rekey (packets still queued for them), summed since the
agent started; those SAs are no longer the connection's current ones. Per node, the ESP
packets refused before any SA saw them: short (no SPI and sequence number), unknown
SPI, wrong encap (raw ESP for an SA negotiated for ESP in UDP, or the reverse), wrong
source (the SPI's SA expects another peer). An agent that is dead or hung
is reported as such with its log, never with its last counters. Nodes on the kernel
dataplane have no agent counters: read them with ip -s xfrm state in the node. A
connection end run by software in the node (speaker: strongswan) shows only who runs
it: its state is its emu peer's row, its own SAs are the software's to show.

Examples:
   emu ipsec -t topologies/static.yaml
   emu ipsec -t topologies/transit-router.yaml
   emu ipsec -t topologies/strongswan-onprem.yaml --format json`,
		Flags: []cli.Flag{
			topoFlag,
			formatFlag,
		},
		Action: func(c *cli.Context) error {
			format := c.String("format")
			if format != "table" && format != "json" {
				return invalidInput{fmt.Errorf("--format %q: use table or json", format)}
			}
			t, rec, err := deployedTopology(c)
			if err != nil {
				return err
			}
			var views []ipsecView
			for _, n := range t.Nodes {
				for _, tun := range n.Tunnels {
					if tun.External() {
						// emu reads nothing of it: its state is its emu peer's row.
						views = append(views, ipsecView{Node: n.Name, RunBy: []runBy{{Connection: tun.Name, Speaker: tun.Speaker, Peer: tun.Peer.Node}}})
					}
				}
				cfg := filepath.Join(rec.Dir, "agents", n.Name+".json")
				if len(n.Tunnels) == 0 || !fileExists(cfg) {
					continue
				}
				v := ipsecView{Node: n.Name}
				if st, err := agent.ReadState(cfg); err != nil {
					v.Error = err.Error()
				} else {
					v.Tunnels, v.Drops, v.IKE = st.Tunnels, st.Drops, st.IKE
				}
				views = append(views, v)
			}
			if format == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(views)
			}
			if len(views) == 0 {
				fmt.Fprintln(c.App.ErrWriter, "no node runs the userspace ESP dataplane in this lab")
				return nil
			}
			return printIPsec(c.App.Writer, views)
		},
	}
}

// ipsecView is one node's counters, also their JSON form.
type ipsecView struct {
	Node    string                  `json:"node"`
	Tunnels []userspace.TunnelStats `json:"tunnels,omitempty"`
	Drops   *userspace.Drops        `json:"drops_before_sa,omitempty"`
	IKE     []ike.Status            `json:"ike,omitempty"`   // keys are never shown
	Error   string                  `json:"error,omitempty"` // why there are no current counters
	// RunBy are the node's connections that software in it runs
	// (`speaker:`), of which emu shows nothing but who runs them.
	RunBy []runBy `json:"run_by_software,omitempty"`
}

// runBy is a connection end run by software in the node, not by emu.
type runBy struct {
	Connection string `json:"connection"`
	Speaker    string `json:"speaker"`
	Peer       string `json:"peer"` // the node of its emu end
}

func printIPsec(w io.Writer, views []ipsecView) error {
	if err := printIKE(w, views); err != nil {
		return err
	}
	sas := tablewriter.NewWriter(w)
	sas.Header("Node", "Connection", "SA", "SPI", "Packets", "Bytes", "Seq", "Auth fail", "Replay", "Malformed")
	pre := tablewriter.NewWriter(w)
	pre.Header("Node", "Short", "Unknown SPI", "Wrong encap", "Wrong source")
	for _, v := range views {
		if v.Error != "" {
			sas.Append(v.Node, wrap(v.Error, 60), "", "", "", "", "", "", "", "")
			continue
		}
		for _, ts := range v.Tunnels {
			sas.Append(v.Node, ts.Name, "out", fmt.Sprintf("0x%08x", ts.OutSPI), fmt.Sprint(ts.Out.Packets), fmt.Sprint(ts.Out.Bytes), fmt.Sprint(ts.Out.Seq), "", "", fmt.Sprint(ts.Out.Errors))
			sas.Append(v.Node, ts.Name, "in", fmt.Sprintf("0x%08x", ts.InSPI), fmt.Sprint(ts.In.Packets), fmt.Sprint(ts.In.Bytes), fmt.Sprint(ts.In.Seq), fmt.Sprint(ts.In.AuthFailures), fmt.Sprint(ts.In.ReplayDrops), fmt.Sprint(ts.In.Errors))
			if d := ts.InAfterDelete; d != (userspace.DrainStats{}) {
				// Summed over the SAs IKE deleted at rekeys, while they drained: no SPI of its own.
				sas.Append(v.Node, ts.Name, "in after delete", "", fmt.Sprint(d.Packets), fmt.Sprint(d.Bytes), "", fmt.Sprint(d.AuthFailures), fmt.Sprint(d.ReplayDrops), fmt.Sprint(d.Errors))
			}
		}
		if d := v.Drops; d != nil {
			pre.Append(v.Node, fmt.Sprint(d.Short), fmt.Sprint(d.UnknownSPI), fmt.Sprint(d.WrongEncap), fmt.Sprint(d.WrongSource))
		}
	}
	if err := sas.Render(); err != nil {
		return err
	}
	fmt.Fprintln(w, "ESP refused before any SA saw it:")
	return pre.Render()
}

// printIKE prints the negotiation of the IKE-keyed connections, if any.
func printIKE(w io.Writer, views []ipsecView) error {
	tw := tablewriter.NewWriter(w)
	tw.Header("Node", "Connection", "Phase 1", "Phase 2", "Negotiated / reason")
	rows := 0
	for _, v := range views {
		for _, s := range v.IKE {
			tw.Append(v.Node, s.Name, s.Phase1, s.Phase2, ikeDetail(s))
			rows++
		}
		for _, r := range v.RunBy {
			tw.Append(v.Node, r.Connection, "run by "+r.Speaker, "", fmt.Sprintf("not read by emu: see %s's end;\n%s's own view: emu exec ... %s -- (its tool)", r.Peer, r.Speaker, v.Node))
			rows++
		}
	}
	if rows == 0 {
		return nil
	}
	return tw.Render()
}

func ikeDetail(s ike.Status) string {
	switch {
	case s.Phase1Reason != "":
		return wrap(s.Phase1Reason, 70)
	case s.Phase2Reason != "":
		return wrap(s.Phase2Reason, 70)
	case s.Phase2 == ike.StateEstablished:
		encap := ""
		if s.Encap {
			encap = ", ESP in UDP/4500"
		}
		d := fmt.Sprintf("%s\n%s%s\nSPI in 0x%08x out 0x%08x\n%v === %v\nrekeys: %d IKE, %d CHILD", s.IKEProposal, s.ESPProposal, encap, s.InSPI, s.OutSPI, s.LocalTS, s.RemoteTS, s.IKERekeys, s.ChildRekeys)
		if s.Refused > 0 {
			// Unauthenticated, possibly spoofed: the SA above is unaffected.
			d += fmt.Sprintf("\nrefused %d unauthenticated, last:\n%s", s.Refused, wrap(s.LastRefused, 70))
		}
		return d
	}
	return s.IKEProposal
}

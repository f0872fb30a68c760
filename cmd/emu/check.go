package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
)

// Exit codes of emu check beyond main's: a failed check outranks an
// inconclusive one, since a failure is a finding and inconclusive only asks
// for a re-run.
const (
	exitChecksFailed       = 3 // a check failed
	exitChecksInconclusive = 4 // none failed, some could not judge
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "prove the lab works with real packets",
		UsageText: "emu check -t FILE [--failover] [--format table|json] [--junit FILE]",
		Description: `Runs the checks against the deployed lab and prints one row per observation:
  agents        each node agent alive (processes and a heartbeat under 3 s old),
                with pid, since and restarts; dead, hung or restarting fails and
                names the agent's log, and so does every failed row after it.
  nodes         (container nodes, nodes with daemons:) each container running in
                the namespace emu wired, asked of the engine ("docker kill" leaves
                the namespace, so traffic alone cannot tell), and each daemon
                running; a failed row names the node, the daemon and its log.
  ike           (connections with ike:) phase 1 and phase 2 established on each
                gateway, with the proposals chosen, or the failure reason
                (NO_PROPOSAL_CHOSEN with both offers, AUTHENTICATION_FAILED,
                TS_UNACCEPTABLE, dead peer); waits up to 15 s for negotiation.
                An end run by software (speaker: strongswan) is judged from its
                emu peer's state and its daemons alive; its own SAs are not read.
  connectivity  ICMP echo and a TCP exchange carrying a random marker between every
                pair of nodes of kind host, each direction; over IPv6 too (ping6,
                tcp6) between dual-stack hosts.
  encryption    (labs with IPsec) captures on every interface of the vbr and cen
                nodes while hosts exchange a marker over TCP: passes only if the
                private path carried ESP (also in UDP/4500) between tunnel endpoints
                and nothing else but IKE,
                no host address in clear, and the marker in no captured byte.
  path          (labs with IPsec) traces one echo through every node (see emu trace)
                from an end system on the data center's side of the tunnel to one on
                the VPC's side, whatever their names or order in the file:
                each direction encrypted by one gateway and decrypted by the other,
                ESP on every vbr and cen hop, the reply back at the sender.
                path6 does the same with an ICMPv6 echo between dual-stack hosts.
  ecmp          (a gateway with several connections) 64 UDP flows each way that
                differ only in their ports; counted by SPI on the private path,
                each connection must carry at least half its share.
  bgp           (nodes with bgp:) every session Established, and every prefix a
                neighbor originates a best path installed in the kernel table.
  failover      (with --failover) breaks the first connection under 100 probes/s
                (its ESP and ESP in UDP/4500 dropped in the on-prem gateway):
                methods 2, 3 and the health check must resume by themselves within
                10 s; method 1 must stay stopped until the routes are withdrawn (the
                check does it); the fallback must be in clear; after the repair the
                traffic must be encrypted again within 15 s. Where another connection
                to the same peer is left (ECMP), it carries the traffic (a probe flow
                hashed onto the broken one waits for its route to be withdrawn, BGP's
                hold time), the SAs the on-prem gateway sends on the broken one must
                vanish from the wire and come back after the repair. Refused (exit 2) while a fault of emu fault is in force:
                it would misjudge the lab. Its own fault is a separate nftables
                table (emu-check-<connection>), held while it runs; a fault of emu
                fault added while it runs is left in place and makes the repair row
                inconclusive. That table left by a check that did not finish
                (killed) is removed first, and the VPN gateway's routes such a
                method-1 check withdrew are restored (it records them before it
                withdraws them), with a note on stderr each, and the lab given
                time to recover: the process that made them is gone. On another
                connection it is refused like emu fault's (removed by emu fault
                tunnel up); while another check --failover runs on the lab, too.
                Without --failover the checks run and judge the faulted lab as it
                is; a note on stderr names the faults in force, a check's left
                over included, and how to remove each.
A check that does not apply to the lab is not run and is named after the table
("not applicable: connectivity: needs two end systems (kind host) ..."); a lab
with nothing to check says so and exits 0.
A check whose capture lost frames (the kernel's drop counter) is INCONCLUSIVE,
never pass: what it did not see may have been a leak.
Exit code 3 when a check fails, so CI can tell a broken lab from a broken
command; 4 when none failed but some were inconclusive (re-run on a quieter
machine). JSON results carry "result": "pass", "fail" or "inconclusive"; JUnit
reports an inconclusive check as <error message="inconclusive">.
Ctrl-C stops the checks (--failover first removes its fault): the rows it cut
short are INCONCLUSIVE ("interrupted"), and emu exits 1, as other interrupted
commands do.

Examples:
   emu check -t topologies/static.yaml
   emu check -t topologies/static-bgp.yaml --failover
   emu check -t topologies/bgp.yaml --format json --junit report.xml`,
		Flags: []cli.Flag{
			topoFlag,
			formatFlag,
			&cli.StringFlag{Name: "junit", Usage: "also write a JUnit XML report to `FILE` (for CI)"},
			&cli.BoolFlag{Name: "failover", Usage: "also break the tunnel and check the method's failover (disrupts the lab for ~20 s, then restores it)"},
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
			if !rec.Complete {
				return &lab.DeployedError{Record: rec}
			}
			var hold *fault.CheckHold
			var repaired time.Time // when a killed check's leftovers were removed
			if c.Bool("failover") {
				// Held for the whole run, so a second --failover is refused
				// before any check runs (its checks would see this run's
				// outage), and what a killed one left is this run's to remove.
				if hold, repaired, err = holdFailover(c, t, rec.Dir); err != nil {
					return err
				}
				if hold != nil {
					defer hold.Release()
				}
			}
			if err := refuseOrNoteFaults(c, t, rec.Dir); err != nil {
				return err
			}
			if !repaired.IsZero() {
				if err := awaitRecovered(c, c.App.ErrWriter, t, rec.Dir, repaired); err != nil {
					return err
				}
			}
			conns, _ := lab.ReadConns(rec.Dir) // a lab without IPsec has none
			l := checks.Lab{Topology: t, Conns: conns, Dir: rec.Dir, FailoverHold: hold}
			cs := checks.For(l)
			if c.Bool("failover") {
				cs = append(cs, checks.Failover)
			}
			results := checks.Run(c.Context, l, cs)
			notRun := checks.NotApplicable(l)
			if format == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
				// stdout stays the results' JSON; what was not run is a note.
				printNotApplicable(c.App.ErrWriter, t.Name, results, notRun)
			} else {
				if len(results) > 0 {
					if err := printResults(c.App.Writer, results); err != nil {
						return err
					}
				}
				printNotApplicable(c.App.Writer, t.Name, results, notRun)
			}
			if path := c.String("junit"); path != "" {
				if err := writeJUnit(path, t.Name, results); err != nil {
					return err
				}
			}
			switch _, failed, inconclusive := checks.Count(results); {
			case c.Context.Err() != nil:
				// Ctrl-C: what it cut short is inconclusive, not judged;
				// exit as other interrupted commands do (1).
				return errors.New("interrupted: the checks cut short are reported inconclusive (--failover removed its fault)")
			case failed > 0:
				return cli.Exit(errors.New("some checks failed"), exitChecksFailed)
			case inconclusive > 0:
				return cli.Exit(errors.New("some checks were inconclusive: re-run them"), exitChecksInconclusive)
			}
			return nil
		},
	}
}

// holdFailover takes, for a --failover run, the hold on the check fault of
// the connection it breaks; another --failover running on the lab holds it
// already, and is refused (exit 2) with its pid. It then removes what an
// `emu check --failover` that did not finish (killed) left on that
// connection (its table, and the VPN gateway's routes a method-1 check
// withdrew, recorded in its hold) and says so on stderr: that is emu's,
// its maker is provably gone (its hold was free), and the failover check
// would replace it anyway; left in place it stops the traffic before the
// other checks run, so they would report failures of a fault nobody meant
// to be in force. It returns when that repair began (zero if nothing was
// left): the caller waits for the lab to recover from it once no other
// fault is in force (refuseOrNoteFaults refuses a user's first, rather than
// waiting 20 s for a recovery it stops). A lab with no connection to break
// gets no hold (nil).
func holdFailover(c *cli.Context, t *topology.Topology, labDir string) (*fault.CheckHold, time.Time, error) {
	var repaired time.Time
	gw, tun := checks.FailoverConnection(t)
	if tun == nil {
		return nil, repaired, nil
	}
	ns := plan.NamespaceName(t.Name, gw.Name)
	hold, err := fault.HoldCheck(labDir, ns, tun.Name)
	var held *fault.HeldError
	if errors.As(err, &held) {
		return nil, repaired, invalidInput{fmt.Errorf("another `emu check --failover` is running on lab %q (%s, on %s:%s): wait for it to end, or stop it: `kill -INT %d` (not -9: a killed check leaves its fault)", t.Name, held.Holder(), gw.Name, tun.Name, held.PID)}
	}
	if err != nil {
		return nil, repaired, err
	}
	start := time.Now()
	left, err := hold.RemoveLeft(ns, tun.Name)
	if left.Table {
		fmt.Fprintf(c.App.ErrWriter, "note: removed the fault an earlier `emu check --failover` that did not finish (killed) left on %s:%s (nftables table %s%s): it kept the tunnel broken\n", gw.Name, tun.Name, fault.ByCheck, tun.Name)
	}
	for _, r := range left.Routes {
		fmt.Fprintf(c.App.ErrWriter, "note: restored route %s on %s (published by %s), which an earlier `emu check --failover` that did not finish (killed) withdrew: the traffic crossed in clear\n", r, r.Node, r.Gateway)
	}
	if err != nil {
		hold.Release()
		return nil, repaired, err
	}
	if left.Any() {
		repaired = start
	}
	return hold, repaired, nil
}

// refuseOrNoteFaults looks for faults in force in lab t: emu fault's, and
// those of an emu check --failover, running or left by one that did not
// finish. --failover breaks and repairs a connection itself: with a fault
// already in force its verdicts are wrong (no outage, since the traffic
// stopped before it began), so it is refused (exit 2) naming the faults and
// how to remove them (the check's own fault is a table of its own and would
// leave them in place). Without --failover the checks judge the faulted lab
// as it is (traffic that the fault stops fails, as it should), so a note on
// stderr names the faults, whose they are and their repairs, and the checks
// run.
func refuseOrNoteFaults(c *cli.Context, t *topology.Topology, labDir string) error {
	faults, err := activeFaults(t, labDir)
	if err != nil || len(faults) == 0 {
		return err
	}
	if c.Bool("failover") {
		return invalidInput{fmt.Errorf("lab %q has faults in force: %s; --failover breaks and repairs a connection itself, so it would misjudge the lab: repair them first (%s), or run `emu check -t %s` without --failover to judge the faulted lab as it is",
			t.Name, faultList(faults), repairs(faults, c.String("topo")), c.String("topo"))}
	}
	noteFaults(c, t, faults, "the checks judge")
	return nil
}

// noteFaults says on stderr which faults are in force in lab t and how to
// repair them, for a command (check, trace) whose output shows their
// effect: subject says what judges or shows the lab ("the checks judge").
func noteFaults(c *cli.Context, t *topology.Topology, faults []labFault, subject string) {
	fmt.Fprintf(c.App.ErrWriter, "note: faults in force in lab %q: %s; %s the lab with them, as it is (repair: %s)\n", t.Name, faultList(faults), subject, repairs(faults, c.String("topo")))
}

// printNotApplicable says which checks did not apply to the lab, and that
// the lab had nothing to check when none ran: not a failure, exit 0.
func printNotApplicable(w io.Writer, lab string, results []checks.Result, notRun []string) {
	if len(results) == 0 {
		fmt.Fprintf(w, "nothing to check in lab %s: no check applies to it\n", lab)
	}
	for _, n := range notRun {
		fmt.Fprintln(w, "not applicable: "+n)
	}
}

func printResults(w io.Writer, rs []checks.Result) error {
	t := tablewriter.NewTable(w, tablewriter.WithRowAutoWrap(tw.WrapNone))
	t.Header("Check", "Result", "Seen", "Time")
	for _, r := range rs {
		res := r.Outcome()
		if res != checks.OutcomePass {
			res = strings.ToUpper(res)
		}
		if err := t.Append(r.Check, res, wrap(r.Evidence, 72), r.Duration.Round(100*time.Microsecond).String()); err != nil {
			return err
		}
	}
	if err := t.Render(); err != nil {
		return err
	}
	passed, failed, inconclusive := checks.Count(rs)
	summary := fmt.Sprintf("%d passed, %d failed", passed, failed)
	if inconclusive > 0 {
		summary += fmt.Sprintf(", %d inconclusive", inconclusive)
	}
	_, err := fmt.Fprintln(w, summary)
	return err
}

// wrap breaks text into lines of at most width at spaces, never inside a
// word: evidence carries markers and addresses that must stay whole.
func wrap(text string, width int) string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return strings.Join(append(lines, line), "\n")
}

func writeJUnit(path, suite string, rs []checks.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("junit report: %w", err)
	}
	if err := checks.JUnit(f, suite, rs); err != nil {
		f.Close()
		return fmt.Errorf("junit report %s: %w", path, err)
	}
	return f.Close()
}

// Package checks proves properties of a deployed lab with real packets. Each
// check names what it saw, so a failure can be read without re-running it.
package checks

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/emu-lab/emu/internal/agent"
	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
)

// Lab is what a check needs of a deployed lab.
type Lab struct {
	Topology *topology.Topology
	Conns    []ipsec.Conn // the lab's keys, to read ESP
	Dir      string       // the lab directory: agents publish their state there
	// FailoverHold, if set, is the hold on the failover connection's check
	// fault that the caller took for its whole run (cmd/emu check
	// --failover, so a second such run is refused before any check runs);
	// the failover check then uses it rather than taking its own.
	FailoverHold *fault.CheckHold
}

// NS is the namespace of a node.
func (l Lab) NS(node string) string { return plan.NamespaceName(l.Topology.Name, node) }

// Result is the outcome of one check: passed, failed, or inconclusive.
type Result struct {
	Check  string `json:"check"`
	Passed bool   `json:"passed"`
	// Inconclusive is set (with Passed false) when the check could not
	// observe enough to judge, e.g. its capture lost frames: neither a
	// pass nor a proof of failure. Re-run it on a quieter machine.
	Inconclusive bool          `json:"inconclusive,omitempty"`
	Evidence     string        `json:"evidence"` // what was seen, pass or fail
	Duration     time.Duration `json:"duration_ns"`
}

// Outcomes, as the table, JSON and JUnit name them.
const (
	OutcomePass         = "pass"
	OutcomeFail         = "fail"
	OutcomeInconclusive = "inconclusive"
)

// Outcome names the result: OutcomePass, OutcomeFail or OutcomeInconclusive.
func (r Result) Outcome() string {
	switch {
	case r.Passed:
		return OutcomePass
	case r.Inconclusive:
		return OutcomeInconclusive
	}
	return OutcomeFail
}

// MarshalJSON adds "result" (the Outcome) to the fields, so a JSON reader
// needs no rule to combine passed and inconclusive.
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		Result string `json:"result"`
	}{plain(r), r.Outcome()})
}

// Check is one property of a lab.
type Check struct {
	Name string
	Run  func(ctx context.Context, l Lab) []Result
}

// Run runs the checks in order and returns every result. A failed result
// also names the node agents that are not alive, with their logs, and
// those that restarted while its check ran: the failure may be theirs. An
// agent that restarted during the run (killed, crashed, or hung and
// restarted by its supervisor) adds a failed row "agent NODE during the
// checks" at the end, since the agent rows at the top judged it before.
func Run(ctx context.Context, l Lab, cs []Check) []Result {
	var out []Result
	first := agentHealth(l)
	health := first // as the last check left it
	for _, c := range cs {
		rs := c.Run(ctx, l)
		after := agentHealth(l)
		restarted := restartedSince(health, after)
		health = after
		for i := range rs {
			if rs[i].Passed || c.Name == Agents.Name { // those rows name them already
				continue
			}
			if trouble := agentTrouble(health, rs[i].Evidence); trouble != "" {
				rs[i].Evidence += "; " + trouble
			}
			for _, r := range restarted {
				rs[i].Evidence += "; agent of " + r + " while this check ran"
			}
		}
		out = append(out, rs...)
	}
	for _, h := range health {
		if r := restartedSince(first, []agent.Health{h}); len(r) > 0 {
			out = append(out, Result{Check: "agent " + h.Node + " during the checks", Evidence: r[0] + ": the rows above may have run while it was down; its log: " + h.Log})
		}
	}
	return out
}

// restartedSince describes each agent of after whose supervisor restarted
// its worker since before was read (the restart count of agent.Health
// grew), as "onprem restarted (restarts 0 → 1, last restart after killed by
// signal 9 at 21:04:05)". An agent new in after is not judged.
func restartedSince(before, after []agent.Health) []string {
	var out []string
	for _, a := range after {
		i := slices.IndexFunc(before, func(b agent.Health) bool { return b.Node == a.Node })
		if i < 0 || a.Restarts <= before[i].Restarts {
			continue
		}
		s := fmt.Sprintf("%s restarted (restarts %d → %d", a.Node, before[i].Restarts, a.Restarts)
		if a.Detail != "" {
			s += ", " + a.Detail
		}
		out = append(out, s+")")
	}
	return out
}

// Count returns how many results passed, failed and were inconclusive.
func Count(rs []Result) (passed, failed, inconclusive int) {
	for _, r := range rs {
		switch r.Outcome() {
		case OutcomePass:
			passed++
		case OutcomeInconclusive:
			inconclusive++
		default:
			failed++
		}
	}
	return passed, failed, inconclusive
}

// Passed reports whether every result passed.
func Passed(rs []Result) bool {
	for _, r := range rs {
		if !r.Passed {
			return false
		}
	}
	return true
}

// For returns the checks that apply to a lab: the agents' health first,
// then container nodes and daemons alive,
// connectivity where there are two end systems to join, encryption and path
// only where the lab has IPsec connections to prove and an end system on
// each side, ECMP only where a gateway has several. NotApplicable says what
// it left out, and why.
func For(l Lab) []Check {
	cs, _ := applicable(l)
	return cs
}

// NotApplicable names each check For leaves out of a lab with the reason,
// as "connectivity: needs two end systems (kind host), found 0".
func NotApplicable(l Lab) []string {
	_, skipped := applicable(l)
	return skipped
}

func applicable(l Lab) (cs []Check, skipped []string) {
	cs = []Check{Agents}
	if hasLiveness(l.Topology) {
		cs = append(cs, Nodes)
	}
	if hasIKE(l) {
		cs = append(cs, IKE) // before BGP: the tunnels, and BGP over them, wait for it
	}
	for _, n := range l.Topology.Nodes {
		if n.BGP != nil {
			cs = append(cs, BGP) // before traffic: it waits for convergence
			break
		}
	}
	if n := len(hostsOf(l.Topology)); n >= 2 {
		cs = append(cs, Connectivity)
	} else {
		skipped = append(skipped, fmt.Sprintf("connectivity: needs two end systems (kind host) with an address, found %d", n))
	}
	_, _, why := endPair(l.Topology)
	switch {
	case len(tunnelEndpoints(l)) == 0:
		skipped = append(skipped, "encryption, path: no IPsec connection to prove")
	case why != "":
		skipped = append(skipped, "encryption, path: "+why)
	default:
		cs = append(cs, Encryption, Path)
	}
	if len(multiTunnelGateways(l.Topology)) > 0 {
		if why == "" {
			cs = append(cs, ECMP)
		} else {
			skipped = append(skipped, "ecmp: "+why)
		}
	}
	return cs, skipped
}

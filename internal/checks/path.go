package checks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/trace"
)

// Path traces one echo from an end system on the data center's side to one
// on the VPC's (topology.EndSystemPair; and one ICMPv6 echo, "path6", when
// both are dual-stack) and requires the walk the guide
// describes: the request and the reply each encrypted by one gateway
// and decrypted by the other, ESP on every hop of the private path (vbr and
// cen nodes), and the reply back at the sender.
var Path = Check{Name: "path", Run: path}

func path(ctx context.Context, l Lab) []Result {
	a, b, why := endPair(l.Topology)
	if why != "" {
		return []Result{{Check: "path", Evidence: why}}
	}
	if l.Dir != "" && hasIKE(l) {
		// IKE-keyed SAs are negotiated (and rekeyed) after the lab was
		// read: take the ones the agents hold now.
		if fresh, err := lab.ReadConns(l.Dir); err == nil {
			l.Conns = fresh
		}
	}
	var out []Result
	for _, dst := range a.targets(b) {
		out = append(out, walkOnce(ctx, l, a.node.Name, b.node.Name, dst.Is6()))
	}
	return out
}

// walkOnce traces one echo in one family and judges its walk.
func walkOnce(ctx context.Context, l Lab, from, to string, ipv6 bool) Result {
	start := time.Now()
	r := Result{Check: "path"}
	if ipv6 {
		r.Check = "path6"
	}
	hops, err := trace.RunFamily(ctx, l.Topology, l.Conns, from, to, ipv6)
	r.Duration = time.Since(start)
	var lostFrames *capture.LostFramesError
	var steps []string
	var problems []string
	encrypts, decrypts := 0, 0
	inClear := false
	for _, h := range hops {
		step := h.Node + " " + h.Action
		if h.Encrypted {
			step += fmt.Sprintf(" (ESP spi 0x%08x)", h.SPI)
		}
		steps = append(steps, step)
		onPrivatePath := l.Topology.Node(h.Node).Roles.PrivatePath
		switch {
		case h.Action == trace.Encrypts:
			encrypts++
		case h.Action == trace.Decrypts:
			decrypts++
		}
		if onPrivatePath && !h.Encrypted {
			inClear = true
			problems = append(problems, fmt.Sprintf("step %d: %s forwarded %s → %s in clear", h.Step, h.Node, h.OuterSrc, h.OuterDst))
		}
	}
	switch {
	case len(hops) == 0:
		problems = append(problems, "no frame of the probe was captured")
	case encrypts != 2 || decrypts != 2:
		problems = append(problems, fmt.Sprintf("%d encryptions and %d decryptions, want 2 of each (request and reply)", encrypts, decrypts))
	case hops[len(hops)-1].Node != from || hops[len(hops)-1].Action != trace.Receives:
		problems = append(problems, "the reply did not reach "+from)
	}
	r.Evidence = strings.Join(steps, " → ")
	if err != nil && !errors.As(err, &lostFrames) {
		// The probe died: the walk so far shows where.
		if len(steps) > 0 {
			r.Evidence = err.Error() + "; walk: " + r.Evidence
		} else {
			r.Evidence = err.Error()
		}
		return r
	}
	switch {
	case len(problems) == 0 && lostFrames == nil:
		r.Passed = true
	case !inClear && lostFrames != nil:
		// A missing hop or a missing reply may be a frame the capture
		// lost; a hop seen in clear is a fact even so (next case).
		lost(&r, lostFrames)
		if len(problems) > 0 {
			r.Evidence += "; " + strings.Join(problems, "; ")
		}
	default:
		r.Evidence = strings.Join(problems, "; ") + "; walk: " + r.Evidence
	}
	return r
}

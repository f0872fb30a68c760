package capture

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Endpoint names one interface of one namespace to capture on.
type Endpoint struct {
	NS        string
	Interface string
}

// Group is a set of captures started together, so a packet's walk through
// the lab (client, gateways, VBR, CEN, VPC, ECS) can be read in one timeline.
type Group struct {
	caps []*Capture
}

// StartMany starts one capture per endpoint with the same options; limits
// apply to each capture on its own. OnPacket calls are serialised across the
// group, so one pcap writer can serve every endpoint, but frames from
// different endpoints reach it in reading order, not kernel-time order: use
// Packets for the ordered timeline. If one capture cannot start, the ones
// already started are stopped.
func StartMany(ctx context.Context, eps []Endpoint, opt Options) (*Group, error) {
	if opt.OnPacket != nil {
		var mu sync.Mutex
		onPacket := opt.OnPacket
		opt.OnPacket = func(p Packet) error {
			mu.Lock()
			defer mu.Unlock()
			return onPacket(p)
		}
	}
	g := &Group{}
	for _, ep := range eps {
		c, err := Start(ctx, ep.NS, ep.Interface, opt)
		if err != nil {
			return nil, errors.Join(err, g.Stop())
		}
		g.caps = append(g.caps, c)
	}
	return g, nil
}

// Stop ends every capture and returns their errors joined.
func (g *Group) Stop() error {
	for _, c := range g.caps {
		c.interrupt()
	}
	return g.Wait()
}

// Wait blocks until every capture has ended and returns their errors joined.
func (g *Group) Wait() error {
	var errs []error
	for _, c := range g.caps {
		errs = append(errs, c.Wait())
	}
	return errors.Join(errs...)
}

// Packets merges the frames of every capture by kernel timestamp. The sort is
// stable, so frames with equal timestamps keep the endpoint order given to
// StartMany.
func (g *Group) Packets() []Packet {
	var all []Packet
	for _, c := range g.caps {
		all = append(all, c.Packets()...)
	}
	slices.SortStableFunc(all, func(a, b Packet) int { return a.Time.Compare(b.Time) })
	return all
}

// LostFramesError says a capture is incomplete: the kernel discarded frames
// because the ring was full (its PACKET_STATISTICS drop counter), so any
// verdict of the form "never seen" drawn from it is unsound.
type LostFramesError struct {
	Dropped uint32   // frames lost, over all interfaces
	Where   []string // "namespace:interface (n)" for each interface that lost some
}

func (e *LostFramesError) Error() string {
	return fmt.Sprintf("the capture lost %d frames (kernel drop counter) on %s: the machine was too busy to read them; re-run when it is quieter",
		e.Dropped, strings.Join(e.Where, ", "))
}

// Incomplete returns a *LostFramesError once the group has ended if any of
// its captures lost frames, else nil.
func (g *Group) Incomplete() error {
	e := &LostFramesError{}
	for _, c := range g.caps {
		if d := c.Dropped(); d > 0 {
			e.Dropped += d
			e.Where = append(e.Where, fmt.Sprintf("%s:%s (%d)", c.ns, c.ifname, d))
		}
	}
	if e.Dropped == 0 {
		return nil
	}
	return e
}

// Dropped is the total of Capture.Dropped over the group.
func (g *Group) Dropped() uint32 {
	var n uint32
	for _, c := range g.caps {
		n += c.Dropped()
	}
	return n
}

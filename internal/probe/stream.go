package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/emu-lab/emu/internal/netnsx"
)

// StreamResult is what a probe stream saw: which echoes came back.
type StreamResult struct {
	Interval time.Duration
	Sent     int
	Received int
	// Outage is the longest run of consecutive lost probes, as time: from
	// the first lost one to the next one that came back (or the end of the
	// stream): with 100 probes a second, how long the path was broken, to
	// 10 ms. Wall time, not probes × interval: on a busy machine the sender
	// misses ticks, and counting probes would shorten the outage.
	Outage time.Duration
	// LastLoss is when the last lost probe was sent (zero if none).
	LastLoss time.Time
	// Trailing is the run of lost probes at the end of the stream, as time
	// (from the first of them to the end): zero when traffic was flowing
	// when the stream stopped.
	Trailing time.Duration
	start    time.Time
	end      time.Time // when the last probe's interval ended
	got      []bool
	sent     []time.Time // when each probe went out
}

// Stream sends ICMP echoes from ns to dst every interval until ctx ends,
// then waits one second for late replies. It measures an outage the way the
// guide's failover is judged: by the traffic that did not get through.
func Stream(ctx context.Context, ns string, dst netip.Addr, interval time.Duration) (*StreamResult, error) {
	var conn *icmp.PacketConn
	if err := netnsx.Do(ns, func() (err error) {
		conn, err = icmp.ListenPacket("ip4:icmp", "")
		return err
	}); err != nil {
		return nil, fmt.Errorf("probe stream from %s: %w", ns, err)
	}
	defer conn.Close()
	r := &StreamResult{Interval: interval, start: time.Now()}
	id := os.Getpid()&0xffff ^ 0x5a5a
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			if e, ok := EchoReply(1, buf[:n]); ok && e.ID == id {
				mu.Lock()
				for i := len(r.got) - 1; i >= 0 && i >= len(r.got)-0x10000; i-- {
					if i&0xffff == e.Seq {
						r.got[i] = true
						break
					}
				}
				mu.Unlock()
			}
		}
	}()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	to := &net.IPAddr{IP: dst.AsSlice()}
	for ctx.Err() == nil {
		mu.Lock()
		seq := len(r.got)
		r.got = append(r.got, false)
		r.sent = append(r.sent, time.Now())
		mu.Unlock()
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq & 0xffff, Data: []byte("emu-stream")}}
		wire, _ := msg.Marshal(nil)
		conn.WriteTo(wire, to)
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	r.end = time.Now()
	time.Sleep(time.Second)
	conn.Close()
	<-done
	r.summarise()
	return r, nil
}

func (r *StreamResult) summarise() {
	runStart := -1 // first lost probe of the current run
	until := func(i int) time.Duration {
		if i < len(r.sent) {
			return r.sent[i].Sub(r.sent[runStart])
		}
		return r.end.Sub(r.sent[runStart])
	}
	for i, ok := range r.got {
		r.Sent++
		if ok {
			r.Received++
			if runStart >= 0 {
				r.Outage = max(r.Outage, until(i))
			}
			runStart = -1
			continue
		}
		if runStart < 0 {
			runStart = i
		}
		r.LastLoss = r.sent[i]
	}
	if runStart >= 0 {
		r.Trailing = until(len(r.got))
		r.Outage = max(r.Outage, r.Trailing)
	}
	// To the probes' resolution.
	r.Outage, r.Trailing = r.Outage.Round(r.Interval), r.Trailing.Round(r.Interval)
}

func (r *StreamResult) String() string {
	return fmt.Sprintf("%d probes every %s, %d lost, longest outage %s", r.Sent, r.Interval, r.Sent-r.Received, r.Outage)
}

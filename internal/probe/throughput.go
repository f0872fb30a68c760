package probe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/emu-lab/emu/internal/netnsx"
)

// Throughput sends as much TCP data as it can from srcNS to dst (a listener
// it opens in dstNS) for d and returns the rate the receiver counted, in
// bits per second: one stream, like iperf3's default.
func Throughput(ctx context.Context, srcNS, dstNS string, dst netip.AddrPort, d time.Duration) (float64, error) {
	var ln net.Listener
	if err := netnsx.Do(dstNS, func() (err error) {
		ln, err = net.Listen("tcp", dst.String())
		return err
	}); err != nil {
		return 0, fmt.Errorf("listen on %s in %s: %w", dst, dstNS, err)
	}
	defer ln.Close()
	type count struct {
		n   int64
		dur time.Duration
		err error
	}
	got := make(chan count, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- count{err: err}
			return
		}
		defer c.Close()
		start := time.Now()
		n, err := io.Copy(io.Discard, c)
		got <- count{n, time.Since(start), err}
	}()
	var conn net.Conn
	if err := netnsx.Do(srcNS, func() (err error) {
		var dl net.Dialer
		conn, err = dl.DialContext(ctx, "tcp", dst.String())
		return err
	}); err != nil {
		return 0, fmt.Errorf("connect %s from %s: %w", dst, srcNS, err)
	}
	buf := make([]byte, 128<<10)
	conn.SetWriteDeadline(time.Now().Add(d))
	for ctx.Err() == nil {
		if _, err := conn.Write(buf); err != nil {
			break // the deadline ends the run
		}
	}
	conn.Close()
	select {
	case c := <-got:
		if c.err != nil {
			return 0, c.err
		}
		return float64(c.n*8) / c.dur.Seconds(), nil
	case <-time.After(d + 10*time.Second):
		return 0, fmt.Errorf("receiver in %s did not finish", dstNS)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/netnsx"
)

// ceilingProtocol is the IP protocol of the ceiling's packets: 253, for
// experiments (RFC 3692), so that no agent's ESP socket sees them.
const ceilingProtocol = 253

// ceilingPayload is the TCP payload of one full-size raw ESP packet of the
// stream: a 1400-byte inner packet (the tunnel MTU) less its IPv4 and TCP
// headers with the timestamp option (20 + 20 + 12 bytes).
const ceilingPayload = 1400 - 52

// ceilingRow names the packet-rate ceiling in the table.
const ceilingRow = "ceiling: raw IP, ESP-sized packets, no crypto"

// rawIPCeiling measures what the lab's path carries in packets the size of
// raw ESP's (AES-GCM-128 around a 1400-byte inner packet) when nothing
// encrypts them, no TUN reads or writes them and no TCP paces them: one
// goroutine on onprem's tunnel endpoint sends them with sendmmsg, 64 at a
// time, as fast as the kernel takes them, and one on the VPN gateway's
// counts what arrives (recvmmsg) for d. An IP protocol other than UDP has
// no segmentation offload, so every packet crosses each of the four links
// on its own, as raw ESP's do; wireguard-go's UDP crosses them in
// super-packets of up to 64. The rate is the most raw ESP could reach on
// this path and machine, counted as the TCP rows are: in bit/s of the TCP
// payload such packets carry (ceilingPayload each).
func rawIPCeiling(ctx context.Context, l *benchLab, d time.Duration) (float64, error) {
	addr, err := l.endpoints()
	if err != nil {
		return 0, err
	}
	network := fmt.Sprintf("ip4:%d", ceilingProtocol)
	var tx, rx *net.IPConn
	err = netnsx.Do(l.ns(gateways[0]), func() (err error) {
		tx, err = net.ListenIP(network, &net.IPAddr{IP: addr[0].AsSlice()})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ceiling: sender on %s: %w", gateways[0], err)
	}
	defer tx.Close()
	err = netnsx.Do(l.ns(gateways[1]), func() (err error) {
		rx, err = net.ListenIP(network, &net.IPAddr{IP: addr[1].AsSlice()})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ceiling: receiver on %s: %w", gateways[1], err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(8 << 20); err != nil {
		return 0, err
	}

	const batch = 64
	size := esp.AESGCM128.SealedLen(1400) // the IP payload; the kernel adds 20 bytes
	var received atomic.Uint64
	counting := make(chan error, 1)
	go func() {
		pc := ipv4.NewPacketConn(rx)
		ms := make([]ipv4.Message, batch)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				counting <- err
				return
			}
			received.Add(uint64(n))
		}
	}()
	pc := ipv4.NewPacketConn(tx)
	ms := make([]ipv4.Message, batch)
	dst := &net.IPAddr{IP: addr[1].AsSlice()}
	for i := range ms {
		ms[i].Buffers, ms[i].Addr = [][]byte{make([]byte, size)}, dst
	}
	start := time.Now()
	var from uint64
	warm := false
	for ctx.Err() == nil {
		if _, err := pc.WriteBatch(ms, 0); err != nil {
			return 0, fmt.Errorf("ceiling: send: %w", err)
		}
		el := time.Since(start)
		if !warm && el > d/5 {
			// The first fifth warms the path up (neighbour entries, caches).
			warm, from, start = true, received.Load(), time.Now()
		} else if warm && el >= d {
			break
		}
	}
	got := received.Load() - from
	el := time.Since(start)
	rx.Close()
	if err := <-counting; !errors.Is(err, net.ErrClosed) {
		return 0, fmt.Errorf("ceiling: receive: %w", err)
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return float64(got) * ceilingPayload * 8 / el.Seconds(), nil
}

package probe

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/emu-lab/emu/internal/netnsx"
)

// UDPFlows sends one datagram of size bytes (starting with marker) on each
// of flows UDP flows from namespace srcNS to dst, a listener it opens in
// dstNS, flow i from source port firstPort+i: flows that differ only in
// their ports, as a data center's many connections to one server do. It
// returns how many datagrams arrived whole. Datagrams go out 2 ms apart, so
// none is lost to a full queue on the way.
func UDPFlows(srcNS, dstNS string, dst netip.AddrPort, flows, firstPort, size int, marker string) (int, error) {
	var ln *net.UDPConn
	if err := netnsx.Do(dstNS, func() (err error) {
		ln, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return 0, fmt.Errorf("listen on %s in %s: %w", dst, dstNS, err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		n, buf := 0, make([]byte, size+1)
		for {
			ln.SetReadDeadline(time.Now().Add(time.Second))
			m, err := ln.Read(buf)
			if err != nil {
				got <- n
				return
			}
			if m == size && bytes.HasPrefix(buf, []byte(marker)) {
				if n++; n == flows {
					got <- n
					return
				}
			}
		}
	}()
	payload := make([]byte, size)
	copy(payload, marker)
	for i := range flows {
		var c net.Conn
		err := netnsx.Do(srcNS, func() (err error) {
			c, err = net.DialUDP("udp", &net.UDPAddr{Port: firstPort + i}, net.UDPAddrFromAddrPort(dst))
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("UDP flow %d from %s to %s: %w", i, srcNS, dst, err)
		}
		_, err = c.Write(payload)
		c.Close()
		if err != nil {
			return 0, fmt.Errorf("UDP flow %d from %s to %s: %w", i, srcNS, dst, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return <-got, nil
}

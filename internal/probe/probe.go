// Package probe sends test traffic between lab namespaces: ICMP echo and a
// TCP exchange carrying a marker. Sockets are opened inside the namespaces
// and used from ordinary goroutines.
package probe

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/emu-lab/emu/internal/netnsx"
)

// Marker returns a random string to carry in test traffic, so a capture can
// tell this run's bytes from anything else.
func Marker() string {
	b := make([]byte, 12)
	rand.Read(b)
	return "emu-marker-" + hex.EncodeToString(b)
}

// Ping sends one ICMP echo from namespace ns to dst and waits for the reply.
func Ping(ns string, dst netip.Addr, timeout time.Duration) (time.Duration, error) {
	return PingPayload(ns, dst, Marker(), timeout)
}

// PingPayload is Ping with a chosen payload, for a capture to look for.
func PingPayload(ns string, dst netip.Addr, payload string, timeout time.Duration) (time.Duration, error) {
	network, proto, typ := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho)
	if dst.Is6() {
		network, proto, typ = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest
	}
	var conn *icmp.PacketConn
	err := netnsx.Do(ns, func() (err error) {
		conn, err = icmp.ListenPacket(network, "")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ping from %s: open ICMP socket: %w", ns, err)
	}
	defer conn.Close()
	id := os.Getpid() & 0xffff
	seq := int(randUint16())
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte(payload)}}
	wire, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := conn.WriteTo(wire, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return 0, fmt.Errorf("ping %s from %s: send: %w", dst, ns, err)
	}
	conn.SetReadDeadline(start.Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return 0, fmt.Errorf("ping %s from %s: no reply within %s", dst, ns, timeout)
			}
			return 0, fmt.Errorf("ping %s from %s: %w", dst, ns, err)
		}
		echo, ok := EchoReply(proto, buf[:n])
		if !ok || echo.Seq != seq || string(echo.Data) != payload {
			continue // our own request on loopback, or someone else's
		}
		if from.String() != dst.String() {
			return 0, fmt.Errorf("ping %s from %s: reply came from %s", dst, ns, from)
		}
		return time.Since(start), nil
	}
}

// TCPExchange listens in dstNS on dst:port, connects from srcNS, sends marker
// and requires it echoed back: proof that a TCP flow works both ways.
func TCPExchange(ctx context.Context, srcNS, dstNS string, dst netip.AddrPort, marker string) error {
	var ln net.Listener
	err := netnsx.Do(dstNS, func() (err error) {
		ln, err = net.Listen("tcp", dst.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("listen on %s in %s: %w", dst, dstNS, err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, len(marker))
		if _, err := io.ReadFull(c, buf); err != nil {
			served <- fmt.Errorf("server read: %w", err)
			return
		}
		_, err = c.Write(buf)
		served <- err
	}()
	var conn net.Conn
	err = netnsx.Do(srcNS, func() (err error) {
		d := net.Dialer{}
		conn, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("connect %s from %s: %w", dst, srcNS, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte(marker)); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	echo := make([]byte, len(marker))
	if _, err := io.ReadFull(conn, echo); err != nil {
		return fmt.Errorf("read echo from %s: %w", dst, err)
	}
	if string(echo) != marker {
		return fmt.Errorf("echo from %s differs: got %q", dst, echo)
	}
	return <-served
}

// EchoReply parses an ICMP message as a raw socket hands it over (proto 1:
// ICMPv4 without the IP header, 58: ICMPv6) and returns its body if it is
// an echo reply (RFC 792, RFC 4443 §4.2). Anything else, truncated or
// malformed, is not: the bytes come from whichever host sent them.
func EchoReply(proto int, b []byte) (*icmp.Echo, bool) {
	m, err := icmp.ParseMessage(proto, b)
	if err != nil || m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply {
		return nil, false
	}
	echo, ok := m.Body.(*icmp.Echo)
	return echo, ok
}

func randUint16() uint16 {
	var b [2]byte
	rand.Read(b[:])
	return uint16(b[0])<<8 | uint16(b[1])
}

package ike

import (
	"encoding/binary"
	"errors"
	"iter"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// ESPSink takes the ESP-in-UDP packets arriving on the NAT-T port (first
// four bytes non-zero, RFC 3948 §2.2).
type ESPSink interface {
	// ESP is one ESP packet from a peer; pkt is the socket's buffer,
	// reused after the next Flush returns.
	ESP(from netip.AddrPort, pkt []byte)
	// Flush ends a batch: up to nattBatch datagrams, each of up to 64
	// segments when the kernel coalesced them (UDP GRO).
	Flush()
}

// nattBatch is how many datagrams one recvmmsg on the NAT-T socket takes;
// with UDP GRO each may be a 64 KiB train of ESP packets of one flow.
const nattBatch = 8

// maxUDPPayload is the largest datagram a GRO read returns.
const maxUDPPayload = 1<<16 - 1

// nattBuffer absorbs a burst of ESP in UDP, as the raw ESP socket does
// (userspace.socketBuffer): with the default 208 KiB a TCP window of
// full-size packets overflows the socket and every drop costs the inner flow
// a retransmission.
const nattBuffer = 8 << 20

// tuneNATT turns on UDP GRO on the NAT-T socket (Linux ≥ 5.0, udp(7)): the
// kernel then hands over a train of equal-sized datagrams of one peer in
// one read, with their size in a UDP_GRO control message, instead of one
// read each. Without it (or as an unprivileged test, without the larger
// buffers) the socket works as before, one datagram a read.
func tuneNATT(c *net.UDPConn) (gro bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	raw.Control(func(fd uintptr) {
		gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nattBuffer)
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, nattBuffer)
	})
	return gro
}

// readNATT reads the NAT-T socket in batches and splits GRO-coalesced
// datagrams into their segments; each segment is demultiplexed on its own
// (an IKE message of the same size as the ESP packets around it may be
// coalesced with them).
func (e *Endpoint) readNATT() {
	defer e.wg.Done()
	c := e.sock[1]
	var pc interface {
		ReadBatch([]ipv4.Message, int) (int, error)
	} = ipv4.NewPacketConn(c)
	if e.opt.Addr.Is6() {
		pc = ipv6.NewPacketConn(c)
	}
	msgs := make([]ipv4.Message, nattBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, maxUDPPayload)}
		msgs[i].OOB = make([]byte, unix.CmsgSpace(4))
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				e.log.Warn("ike socket stopped", "addr", e.opt.Addr, "err", err)
			}
			return
		}
		var coalesced, segs uint64
		for i := range msgs[:n] {
			m := &msgs[i]
			ua, ok := m.Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			from := ua.AddrPort()
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			size := groSize(m.OOB[:m.NN])
			k := 0
			for seg := range segments(m.Buffers[0][:m.N], size) {
				e.nattDatagram(from, seg)
				k++
			}
			if k > 1 {
				coalesced++
				segs += uint64(k)
			}
		}
		if e.opt.ESP != nil {
			e.opt.ESP.Flush()
		}
		if coalesced > 0 {
			e.count(func(c *Counters) { c.GROReceived += coalesced; c.GROSegments += segs })
		}
	}
}

// nattDatagram demultiplexes one datagram of the NAT-T port (RFC 3948 §2).
func (e *Endpoint) nattDatagram(from netip.AddrPort, b []byte) {
	switch {
	case len(b) == 1 && b[0] == 0xff:
		// NAT-keepalive (RFC 3948 §2.3)
	case len(b) >= 4 && binary.BigEndian.Uint32(b) != 0:
		if e.opt.ESP != nil {
			e.opt.ESP.ESP(from, b) // handed over synchronously, so no copy
		}
	case len(b) < 4:
		e.count(func(c *Counters) { c.Malformed++ })
	default:
		b = append([]byte(nil), b[4:]...) // marker off; the loop keeps it after the buffer is reused
		e.do(func() { e.receive(b, from, true) })
	}
}

// segments yields the datagrams of a GRO read: b cut every size bytes, the
// last one possibly shorter (udp(7) UDP_GRO). size 0 (no control message:
// not coalesced) or at least len(b) yields b whole; an empty b yields
// nothing, since the kernel never coalesces empty datagrams.
func segments(b []byte, size int) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		if size <= 0 {
			size = len(b)
		}
		for len(b) > 0 {
			n := min(size, len(b))
			if !yield(b[:n:n]) {
				return
			}
			b = b[n:]
		}
	}
}

// groSize is the segment size of a received datagram: the UDP_GRO control
// message's value, 0 when the kernel sent none (the datagram is one packet).
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4 {
			// An int in host byte order (udp_cmsg_recv): the gso_size.
			return int(binary.NativeEndian.Uint32(data))
		}
		oob = rest
	}
	return 0
}

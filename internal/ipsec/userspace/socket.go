package userspace

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// espSocket is a raw IP protocol 50 socket bound to one local endpoint,
// read and written in batches (recvmmsg, sendmmsg): one system call for
// up to batchSize ESP packets instead of one each.
type espSocket struct {
	conn  *net.IPConn
	batch batchConn
	v4    bool
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn share.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// batchSize covers one 64 KiB TSO packet cut into 1400-byte segments with
// room to spare.
const batchSize = 64

// socketBuffer absorbs bursts: with the default 208 KiB a TCP window of
// full-size ESP packets overflows the receiving raw socket, and every drop
// costs the inner flow a retransmission.
const socketBuffer = 8 << 20

func listenESP(local netip.Addr) (*espSocket, error) {
	network := "ip4:50"
	if local.Is6() {
		network = "ip6:50"
	}
	c, err := net.ListenIP(network, &net.IPAddr{IP: local.AsSlice()})
	if err != nil {
		return nil, fmt.Errorf("raw ESP socket on %s: %w", local, err)
	}
	s := &espSocket{conn: c, v4: local.Is4()}
	if s.v4 {
		s.batch = ipv4.NewPacketConn(c)
	} else {
		s.batch = ipv6.NewPacketConn(c)
	}
	if err := forceBuffers(c, socketBuffer); err != nil {
		c.Close()
		return nil, fmt.Errorf("raw ESP socket on %s: %w", local, err)
	}
	return s, nil
}

// forceBuffers sets the socket buffers past net.core.[rw]mem_max, which the
// agent may do as root (SO_RCVBUFFORCE) without changing the host's sysctls.
func forceBuffers(c *net.IPConn, size int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("socket buffers: %w", serr)
	}
	return nil
}

// writeAll sends ms in as few sendmmsg calls as the kernel allows.
func (s *espSocket) writeAll(ms []ipv4.Message) error {
	for len(ms) > 0 {
		n, err := s.batch.WriteBatch(ms, 0)
		if err != nil {
			return err
		}
		ms = ms[n:]
	}
	return nil
}

// packet returns the sender and the ESP part of a received message: an IPv4
// raw socket hands over the IP header too, an IPv6 one does not.
func (s *espSocket) packet(m *ipv4.Message) (from netip.Addr, esp []byte, ok bool) {
	a, isIP := m.Addr.(*net.IPAddr)
	if !isIP {
		return from, nil, false
	}
	from, _ = netip.AddrFromSlice(a.IP)
	b := m.Buffers[0][:m.N]
	if !s.v4 {
		return from.Unmap(), b, true
	}
	if len(b) < 20 || int(b[0]&0xf)*4 > len(b) {
		return from, nil, false
	}
	return from.Unmap(), b[int(b[0]&0xf)*4:], true
}

package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// espSocket is a raw IP protocol 50 socket bound to one local endpoint,
// read and written in batches (recvmmsg, sendmmsg): one system call for
// up to batchSize ESP packets instead of one each.
//
// An IPv4 endpoint has a second, send-only socket for packets whose outer
// header must not carry DF: the outer DF bit is copied from the inner
// header (RFC 4301 §8.1, the kernel's default), and a socket's DF
// behaviour (IP_MTU_DISCOVER) is per socket, not per packet.
type espSocket struct {
	conn  *net.IPConn
	batch batchConn
	v4    bool
	// noDF sends with IP_PMTUDISC_DONT: DF clear, so routers on a path
	// with a smaller MTU fragment the ESP packet and the far end's kernel
	// reassembles it, as they would the kernel's own ESP. nil for IPv6.
	noDF      *net.IPConn
	noDFBatch batchConn
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
	if s.v4 {
		if err := s.openNoDF(local); err != nil {
			c.Close()
			return nil, fmt.Errorf("raw ESP socket without DF on %s: %w", local, err)
		}
	}
	return s, nil
}

// dropAll is a socket filter that keeps nothing: the send-only socket would
// otherwise queue a copy of every ESP packet the endpoint receives.
var dropAll, _ = bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})

func (s *espSocket) openNoDF(local netip.Addr) error {
	c, err := net.ListenIP("ip4:50", &net.IPAddr{IP: local.AsSlice()})
	if err != nil {
		return err
	}
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetBPF(dropAll); err != nil {
		c.Close()
		return fmt.Errorf("filter: %w", err)
	}
	raw, err := c.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT)
			if err == nil {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, socketBuffer)
			}
		})
		err = errors.Join(cerr, err)
	}
	if err != nil {
		c.Close()
		return err
	}
	s.noDF, s.noDFBatch = c, pc
	return nil
}

// Close closes the endpoint's sockets.
func (s *espSocket) Close() error {
	if s.noDF != nil {
		s.noDF.Close()
	}
	return s.conn.Close()
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

// writeAll sends ms in as few sendmmsg calls as the kernel allows, with DF
// set in their outer IPv4 headers or not: df is the inner packets' DF.
func (s *espSocket) writeAll(ms []ipv4.Message, df bool) error {
	b := s.batch
	if !df && s.noDFBatch != nil {
		b = s.noDFBatch
	}
	_, err := sendAll(b, ms)
	return err
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

// Package userspace runs route-based ESP tunnels without kernel ESP: each
// connection is a TUN interface that routing points into, and a Go ESP
// engine sends and receives real IP protocol 50 packets on raw sockets, byte
// for byte what the kernel's ESP would put on the wire.
//
// It must run in the node's network namespace (the node agent is started
// there), since TUN devices and sockets belong to the namespace that creates
// them.
package userspace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// Dataplane is the set of tunnels of one node.
type Dataplane struct {
	log     *log.Logger
	tunnels []*tunnel
	socks   map[netip.Addr]*net.IPConn // one raw ESP socket per local endpoint
	bySPI   map[uint32]*tunnel
	wg      sync.WaitGroup
	closing chan struct{}
}

type tunnel struct {
	conn ipsec.Conn
	tun  *os.File
	out  *esp.Outbound
	in   *esp.Inbound
	sock *net.IPConn
}

// TunnelStats is the traffic of one connection.
type TunnelStats struct {
	Name string    `json:"name"`
	Out  esp.Stats `json:"out"`
	In   esp.Stats `json:"in"`
}

// Start creates the TUN interfaces and sockets of conns and starts moving
// packets. On error nothing is left running.
func Start(conns []ipsec.Conn, logger *log.Logger) (_ *Dataplane, err error) {
	d := &Dataplane{log: logger, socks: map[netip.Addr]*net.IPConn{}, bySPI: map[uint32]*tunnel{}, closing: make(chan struct{})}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	for _, c := range conns {
		if err := d.addTunnel(c); err != nil {
			return nil, fmt.Errorf("connection %s: %w", c.Name, err)
		}
	}
	for _, t := range d.tunnels {
		d.wg.Add(1)
		go d.sendLoop(t)
	}
	for _, s := range d.socks {
		d.wg.Add(1)
		go d.receiveLoop(s)
	}
	return d, nil
}

// addTunnel registers the tunnel before opening anything, so Close releases
// whatever a failure leaves half-made.
func (d *Dataplane) addTunnel(c ipsec.Conn) error {
	outCfg, err := c.Outbound()
	if err != nil {
		return err
	}
	inCfg, err := c.Inbound()
	if err != nil {
		return err
	}
	t := &tunnel{conn: c}
	if t.out, err = esp.NewOutbound(outCfg); err != nil {
		return err
	}
	if t.in, err = esp.NewInbound(inCfg); err != nil {
		return err
	}
	if _, dup := d.bySPI[c.In.SPI]; dup {
		return fmt.Errorf("inbound SPI 0x%08x is used twice on this node", c.In.SPI)
	}
	d.bySPI[c.In.SPI] = t
	if t.sock, err = d.socket(c.Local); err != nil {
		return err
	}
	d.tunnels = append(d.tunnels, t)
	if t.tun, err = openTUN(c.Interface); err != nil {
		return err
	}
	if err := configureLink(c); err != nil {
		return err
	}
	return nil
}

// socket returns the raw ESP socket bound to a local endpoint; the kernel
// writes the outer IP header with that source address.
func (d *Dataplane) socket(local netip.Addr) (*net.IPConn, error) {
	if s := d.socks[local]; s != nil {
		return s, nil
	}
	network := "ip4:50"
	if local.Is6() {
		network = "ip6:50"
	}
	s, err := net.ListenIP(network, &net.IPAddr{IP: local.AsSlice()})
	if err != nil {
		return nil, fmt.Errorf("raw ESP socket on %s: %w", local, err)
	}
	d.socks[local] = s
	if err := forceBuffers(s, socketBuffer); err != nil {
		return nil, fmt.Errorf("raw ESP socket on %s: %w", local, err)
	}
	return s, nil
}

// socketBuffer absorbs bursts: with the default 208 KiB a TCP window of
// full-size ESP packets overflows the receiving raw socket, and every drop
// costs the inner flow a retransmission.
const socketBuffer = 8 << 20

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

func configureLink(c ipsec.Conn) error {
	// Without IPv6 the interface sends no router solicitations or MLD
	// reports into the tunnel before routes exist.
	if !c.Address.Addr().Is6() {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+c.Interface+"/disable_ipv6", []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("disable IPv6 on %s: %w", c.Interface, err)
		}
	}
	link, err := netlink.LinkByName(c.Interface)
	if err != nil {
		return fmt.Errorf("find %s: %w", c.Interface, err)
	}
	if c.MTU > 0 {
		if err := netlink.LinkSetMTU(link, c.MTU); err != nil {
			return fmt.Errorf("mtu of %s: %w", c.Interface, err)
		}
	}
	if c.Address.IsValid() {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Address.Addr().AsSlice(), Mask: net.CIDRMask(c.Address.Bits(), c.Address.Addr().BitLen())}}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return fmt.Errorf("address %s on %s: %w", c.Address, c.Interface, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", c.Interface, err)
	}
	return nil
}

// sendLoop encrypts what routing sends into the tunnel interface.
func (d *Dataplane) sendLoop(t *tunnel) {
	defer d.wg.Done()
	inner := make([]byte, 65536)
	wire := make([]byte, 0, 65536+256)
	dst := &net.IPAddr{IP: t.conn.Remote.AsSlice()}
	for {
		n, err := t.tun.Read(inner)
		if err != nil {
			d.stopped(t.conn.Interface, err)
			return
		}
		if n == 0 {
			continue
		}
		next := byte(4) // IP-in-IP: IPv4
		if inner[0]>>4 == 6 {
			next = 41
		}
		pkt, err := t.out.Seal(wire[:0], inner[:n], next)
		if err != nil {
			d.log.Printf("%s: seal: %v", t.conn.Name, err)
			continue
		}
		if _, err := t.sock.WriteToIP(pkt, dst); err != nil && !d.isClosing() {
			d.log.Printf("%s: send to %s: %v", t.conn.Name, t.conn.Remote, err)
		}
	}
}

// receiveLoop decrypts ESP arriving at a local endpoint and hands the inner
// packet to the tunnel interface of its SA, as if it arrived there.
func (d *Dataplane) receiveLoop(s *net.IPConn) {
	defer d.wg.Done()
	buf := make([]byte, 65536)
	inner := make([]byte, 0, 65536)
	for {
		n, from, err := s.ReadFromIP(buf)
		if err != nil {
			d.stopped("raw socket", err)
			return
		}
		if n < 8 {
			continue
		}
		t := d.bySPI[binary.BigEndian.Uint32(buf[:4])]
		if t == nil {
			continue // not ours: counted by nobody, like the kernel's XfrmInNoStates
		}
		if src, ok := netip.AddrFromSlice(from.IP); !ok || src.Unmap() != t.conn.Remote {
			continue
		}
		pkt, _, err := t.in.Open(inner[:0], buf[:n])
		if err != nil {
			continue // counted in the SA's stats
		}
		if _, err := t.tun.Write(pkt); err != nil && !d.isClosing() {
			d.log.Printf("%s: deliver: %v", t.conn.Name, err)
		}
	}
}

func (d *Dataplane) isClosing() bool {
	select {
	case <-d.closing:
		return true
	default:
		return false
	}
}

func (d *Dataplane) stopped(what string, err error) {
	if !d.isClosing() && !errors.Is(err, os.ErrClosed) && !errors.Is(err, net.ErrClosed) {
		d.log.Printf("%s stopped: %v", what, err)
	}
}

// Stats returns the counters of every tunnel.
func (d *Dataplane) Stats() []TunnelStats {
	out := make([]TunnelStats, len(d.tunnels))
	for i, t := range d.tunnels {
		out[i] = TunnelStats{Name: t.conn.Name, Out: t.out.Stats(), In: t.in.Stats()}
	}
	return out
}

// Close stops every loop and removes the TUN interfaces.
func (d *Dataplane) Close() error {
	close(d.closing)
	for _, t := range d.tunnels {
		if t.tun != nil {
			t.tun.Close()
		}
	}
	for _, s := range d.socks {
		s.Close()
	}
	d.wg.Wait()
	return nil
}

package userspace

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"

	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/ike"
)

// install makes out the tunnel's sending SA (through w to dst) and adds in
// to the inbound SAs; the previous inbound SAs stay until Remove, so
// packets in flight during a rekey are still accepted (RFC 7296 §2.8).
func (d *Dataplane) install(t *tunnel, outCfg, inCfg esp.Config, w packetWriter, dst net.Addr) error {
	out, err := esp.NewOutbound(outCfg)
	if err != nil {
		return err
	}
	in, err := esp.NewInbound(inCfg)
	if err != nil {
		return err
	}
	d.spiMu.Lock()
	defer d.spiMu.Unlock()
	old := *d.bySPI.Load()
	if _, dup := old[inCfg.SPI]; dup {
		return fmt.Errorf("inbound SPI 0x%08x is used twice on this node", inCfg.SPI)
	}
	m := maps.Clone(old)
	m[inCfg.SPI] = &inboundSA{t: t, in: in}
	d.bySPI.Store(&m)
	t.in.Store(in)
	t.tx.Store(&txPath{out: out, w: w, dst: dst, payloadOffset: outCfg.Algorithm.PayloadOffset()})
	return nil
}

// Encap is where ESP-in-UDP (RFC 3948) leaves a node: the NAT-T socket the
// IKE endpoint owns, since only one socket may hold port 4500.
type Encap struct {
	Conn *net.UDPConn
}

func (e Encap) writer() packetWriter { return udpWriter{ipv4.NewPacketConn(e.Conn)} }

type udpWriter struct{ c *ipv4.PacketConn }

// writeAll ignores df: the NAT-T socket is the IKE endpoint's, shared by
// every tunnel of the address, and keeps the kernel's UDP default (DF set,
// path MTU discovery); switching it per batch would race the other tunnels.
func (u udpWriter) writeAll(ms []ipv4.Message, _ bool) error {
	for len(ms) > 0 {
		n, err := u.c.WriteBatch(ms, 0)
		if err != nil {
			return err
		}
		ms = ms[n:]
	}
	return nil
}

// Install gives the IKE-keyed tunnel of connection name a new pair of SAs
// (out, in). With encap nil ESP goes on the raw socket; otherwise in UDP
// through encap to the peer's port remotePort.
func (d *Dataplane) Install(name string, out, in esp.Config, encap *Encap, remotePort uint16) error {
	t := d.tunnel(name)
	if t == nil {
		return fmt.Errorf("no tunnel for connection %s", name)
	}
	if encap == nil {
		return d.install(t, out, in, d.socks[t.conn.Local], &net.IPAddr{IP: t.conn.Remote.AsSlice()})
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.conn.Remote, remotePort))
	return d.install(t, out, in, encap.writer(), dst)
}

// Remove drops the inbound SA inSPI of connection name, and the outbound
// one too when it was the pair's last inbound SA (the tunnel went down).
func (d *Dataplane) Remove(name string, inSPI uint32) {
	d.spiMu.Lock()
	defer d.spiMu.Unlock()
	old := *d.bySPI.Load()
	sa := old[inSPI]
	if sa == nil || sa.t.conn.Name != name {
		return
	}
	m := maps.Clone(old)
	delete(m, inSPI)
	d.bySPI.Store(&m)
	if sa.t.in.Load() == sa.in {
		// The newest SA went: no rekey replaced it, the CHILD SA is down.
		sa.t.tx.Store(nil)
		sa.t.in.Store(nil)
	}
}

func (d *Dataplane) tunnel(name string) *tunnel {
	for _, t := range d.tunnels {
		if t.conn.Name == name {
			return t
		}
	}
	return nil
}

// open finds the SA of an ESP packet from a peer and appends its inner
// packet to dst; nil when there is nothing to deliver: the packet is not
// for us (counted in Drops), does not authenticate (counted in the SA's
// stats) or is a dummy packet (RFC 4303 §2.6), empty inside, which the tun
// package would refuse along with its whole batch.
func (d *Dataplane) open(from netip.Addr, pkt, dst []byte) (*tunnel, []byte) {
	if len(pkt) < 8 {
		d.drops.short.Add(1)
		return nil, nil
	}
	sa := (*d.bySPI.Load())[binary.BigEndian.Uint32(pkt[:4])]
	if sa == nil {
		d.drops.unknownSPI.Add(1)
		return nil, nil
	}
	if from != sa.t.conn.Remote {
		d.drops.wrongSource.Add(1)
		return nil, nil
	}
	inner, _, err := sa.in.Open(dst, pkt)
	if err != nil || len(inner) == len(dst) {
		return nil, nil
	}
	return sa.t, inner
}

// encapReceiver delivers the ESP-in-UDP packets of one IKE endpoint's
// NAT-T socket. The endpoint hands them over one at a time from its
// socket's read loop, so the buffer is reused without a lock and nothing is
// allocated per packet; the TUN write is a batch of one.
type encapReceiver struct {
	d    *Dataplane
	buf  []byte   // the decrypted packet, tunOffset bytes in
	bufs [][]byte // buf's packet, as tun.Device.Write takes it
}

func (d *Dataplane) newEncapReceiver() *encapReceiver {
	return &encapReceiver{d: d, buf: make([]byte, tunOffset+maxIPPacket), bufs: make([][]byte, 1)}
}

// receive takes an ESP packet that arrived in UDP from a peer and delivers
// its inner packet to the tunnel of its SA.
func (r *encapReceiver) receive(from netip.AddrPort, pkt []byte) {
	t, inner := r.d.open(from.Addr(), pkt, r.buf[:tunOffset])
	if inner == nil {
		return
	}
	r.bufs[0] = inner
	if _, err := t.tun.Write(r.bufs, tunOffset); err != nil && !r.d.isClosing() {
		r.d.log.Printf("%s: deliver: %v", t.conn.Name, err)
	}
}

// ListenIKE starts an IKE endpoint whose CHILD SAs key this dataplane's
// tunnels (matched by connection name) and whose NAT-T socket carries
// their ESP-in-UDP both ways.
func (d *Dataplane) ListenIKE(opt ike.Options) (*ike.Endpoint, error) {
	h := &ikeHandler{d: d}
	opt.Handler, opt.ESP = h, d.newEncapReceiver().receive
	e, err := ike.Listen(opt)
	if err != nil {
		return nil, err
	}
	// Set before any connection is added, so before any ChildUp.
	h.encap = &Encap{Conn: e.NATTConn()}
	return e, nil
}

type ikeHandler struct {
	d     *Dataplane
	encap *Encap
}

func (h *ikeHandler) ChildUp(c ike.ChildSA) {
	var encap *Encap
	if c.Encap {
		encap = h.encap
	}
	if err := h.d.Install(c.Conn, c.Out, c.In, encap, c.RemotePort); err != nil {
		h.d.log.Printf("%s: install CHILD SA in 0x%08x: %v", c.Conn, c.InSPI, err)
	}
}

func (h *ikeHandler) ChildDown(conn string, inSPI uint32) { h.d.Remove(conn, inSPI) }

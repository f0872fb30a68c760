package userspace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/ike"
)

// install makes out the tunnel's sending SA (through w to dst) and adds in
// to the inbound SAs; the previous inbound SAs stay until Remove, so
// packets in flight during a rekey are still accepted (RFC 7296 §2.8).
func (d *Dataplane) install(t *tunnel, outCfg, inCfg esp.Config, w packetWriter, dst net.Addr, sendLater bool) error {
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
	// A draining SA (deleted by IKE, see Remove) gives its SPI up to a
	// new SA: the new one is current.
	if sa, dup := old[inCfg.SPI]; dup && sa.drainUntil.IsZero() {
		return fmt.Errorf("inbound SPI 0x%08x is used twice on this node", inCfg.SPI)
	}
	m := cloneLive(old, time.Now())
	_, encap := w.(*udpWriter) // ESP in UDP leaves by the NAT-T socket, and arrives there
	m[inCfg.SPI] = &inboundSA{t: t, in: in, encap: encap}
	d.bySPI.Store(&m)
	t.in.Store(in)
	tx := &txPath{out: out, w: w, dst: dst, payloadOffset: outCfg.Algorithm.PayloadOffset()}
	if sendLater && t.tx.Load() != nil {
		t.nextTx = tx
		return nil
	}
	t.nextTx = nil // superseded
	t.tx.Store(tx)
	return nil
}

// Encap is where ESP-in-UDP (RFC 3948) leaves a node: the NAT-T socket the
// IKE endpoint owns, since only one socket may hold port 4500.
type Encap struct {
	Conn *net.UDPConn
	// noGSO is set once the kernel refused a UDP_SEGMENT send: the
	// socket's every writer sends packet by packet from then on.
	noGSO atomic.Bool
	// gsoSends and gsoSegments count the super-datagrams made for
	// UDP_SEGMENT and the ESP packets in them; gsoRefused the batches the
	// kernel refused some of, sent again packet by packet.
	gsoSends, gsoSegments, gsoRefused atomic.Uint64
}

// writer is one tunnel's sender on the socket: its messages and control
// buffers belong to the tunnel's send loop, the only goroutine using it.
func (e *Encap) writer() packetWriter {
	w := &udpWriter{e: e, c: ipv4.NewPacketConn(e.Conn), maxPayload: maxIPv4UDPPayload}
	if a, ok := e.Conn.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		w.c, w.maxPayload = ipv6.NewPacketConn(e.Conn), maxIPv6UDPPayload
	}
	return w
}

type udpWriter struct {
	e          *Encap
	c          batchConn
	maxPayload int
	out        []ipv4.Message // ms coalesced, one message per super-datagram
	oob        [][]byte       // out[i]'s UDP_SEGMENT control message
	segs       []int          // how many packets out[i] holds
}

// The limits of one UDP_SEGMENT send (udp(7), udp_send_skb): the datagram
// with its headers fits an IP packet, and the kernel cuts it into at most
// 64 segments (UDP_MAX_SEGMENTS before Linux 6.9).
const (
	maxIPv4UDPPayload = 1<<16 - 1 - 20 - 8
	maxIPv6UDPPayload = 1<<16 - 1 - 8
	maxGSOSegments    = 64
)

// writeAll sends ms as UDP GSO super-datagrams, as wireguard-go's
// conn.StdNetBind does: a run of equal-sized ESP packets (the last may be
// shorter) to one peer is copied behind the first, in its buffer's spare
// capacity (the send loop's buffers hold 64 KiB each), and goes as one
// datagram with its segment size in a UDP_SEGMENT control message; the
// kernel forwards it as one packet to where it is cut.
//
// The packets of a super-datagram the kernel refuses, and those after it,
// go one by one: for good when it cannot segment at all (EIO: no checksum
// offload on the way out, what wireguard-go turns GSO off for), for this
// batch otherwise (EINVAL when a segment outgrows a path MTU the socket
// learnt, which a plain send fragments).
//
// df is ignored: the NAT-T socket is the IKE endpoint's, shared by every
// tunnel of the address, and keeps the kernel's UDP default (DF set, path
// MTU discovery); switching it per batch would race the other tunnels.
func (w *udpWriter) writeAll(ms []ipv4.Message, _ bool) error {
	if w.e.noGSO.Load() {
		_, err := sendAll(w.c, ms)
		return err
	}
	n := w.coalesce(ms)
	sent, err := sendAll(w.c, w.out[:n])
	if err == nil {
		return nil
	}
	if isGSORefused(err) {
		w.e.noGSO.Store(true)
	}
	w.e.gsoRefused.Add(1)
	done := 0
	for _, k := range w.segs[:sent] {
		done += k
	}
	_, err = sendAll(w.c, ms[done:])
	return err
}

// coalesce fills w.out with ms merged into super-datagrams and returns how
// many it made.
func (w *udpWriter) coalesce(ms []ipv4.Message) int {
	for len(w.out) < len(ms) {
		w.out = append(w.out, ipv4.Message{Buffers: [][]byte{nil}})
		w.oob = append(w.oob, make([]byte, 0, unix.CmsgSpace(2)))
		w.segs = append(w.segs, 0)
	}
	n := -1
	var size, segs int
	for i := range ms {
		b := ms[i].Buffers[0]
		if n >= 0 {
			base := &w.out[n]
			head := base.Buffers[0]
			if len(b) <= size && len(head)+len(b) <= w.maxPayload && len(b) <= cap(head)-len(head) &&
				segs < maxGSOSegments && sameAddr(base.Addr, ms[i].Addr) && len(head)%size == 0 {
				base.Buffers[0] = append(head, b...)
				segs++
				w.segs[n] = segs
				w.setGSO(n, size, segs)
				continue
			}
		}
		n++
		size, segs = len(b), 1
		w.segs[n] = 1
		w.out[n].Buffers[0], w.out[n].Addr, w.out[n].OOB = b, ms[i].Addr, nil
	}
	return n + 1
}

// setGSO gives out[n] its UDP_SEGMENT control message once it holds more
// than one packet.
func (w *udpWriter) setGSO(n, size, segs int) {
	if segs == 2 {
		oob := w.oob[n][:unix.CmsgSpace(2)]
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
		w.out[n].OOB = oob
		w.e.gsoSends.Add(1)
		w.e.gsoSegments.Add(1)
	}
	w.e.gsoSegments.Add(1)
}

// sameAddr reports whether two destinations are one: a batch of a tunnel's
// send loop has a single destination, compared by pointer.
func sameAddr(a, b net.Addr) bool { return a == b }

// isGSORefused reports whether a send failed because the kernel cannot
// segment UDP on the outgoing device (udp_send_skb: EIO without checksum
// offload), as wireguard-go's conn decides to turn GSO off.
func isGSORefused(err error) bool {
	return errors.Is(err, unix.EIO)
}

// sendAll sends ms in as few sendmmsg calls as the kernel allows and
// returns how many it sent.
func sendAll(c batchConn, ms []ipv4.Message) (sent int, err error) {
	for sent < len(ms) {
		n, err := c.WriteBatch(ms[sent:], 0)
		sent += max(n, 0) // sendmmsg reports a failure only for the first message it could not send
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// Install gives the IKE-keyed tunnel of connection name a new pair of SAs
// (out, in). With encap nil ESP goes on the raw socket; otherwise in UDP
// through encap to the peer's port remotePort.
//
// With sendLater (ike.ChildSA.SendAfterOldDeleted: this end answered a
// rekey) the new inbound SA receives at once, but the tunnel keeps sending
// on the old outbound SA until Remove takes the old pair: the peer installs
// its new inbound SA only when our answer arrives, and drops what comes
// sooner on the new one.
func (d *Dataplane) Install(name string, out, in esp.Config, encap *Encap, remotePort uint16, sendLater bool) error {
	t := d.tunnel(name)
	if t == nil {
		return fmt.Errorf("no tunnel for connection %s", name)
	}
	if encap == nil {
		return d.install(t, out, in, d.socks[t.conn.Local], &net.IPAddr{IP: t.conn.Remote.AsSlice()}, sendLater)
	}
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(t.conn.Remote, remotePort))
	return d.install(t, out, in, encap.writer(), dst, sendLater)
}

// Remove drops the inbound SA inSPI of connection name, and the outbound
// one too when it was the pair's last inbound SA (the tunnel went down).
//
// The inbound SA of an older pair (a rekey replaced it) drains first: it
// still opens what arrives for drainGrace, then counts as an unknown SPI.
// IKE's DELETE comes by UDP while the SA's last packets may still wait in
// the raw ESP socket's receive buffer, which the kernel's XFRM does not
// have; dropping them cost thousands of packets at each rekey under load.
// Everything else happens at once: the switch to a rekey's new outbound
// SA, and a tunnel going down, which takes its draining SAs with it.
func (d *Dataplane) Remove(name string, inSPI uint32) {
	d.spiMu.Lock()
	defer d.spiMu.Unlock()
	now := time.Now()
	old := *d.bySPI.Load()
	sa := old[inSPI]
	if sa == nil || sa.t.conn.Name != name || !sa.drainUntil.IsZero() {
		return
	}
	m := cloneLive(old, now)
	t := sa.t
	if t.in.Load() == sa.in {
		// The newest SA went: no rekey replaced it, the CHILD SA is down.
		for spi, o := range m {
			if o.t == t {
				delete(m, spi)
			}
		}
		d.bySPI.Store(&m)
		t.tx.Store(nil)
		t.in.Store(nil)
		t.nextTx = nil
		return
	}
	drain := *sa // the receive loops read sa without a lock: it is not changed
	drain.drainUntil = now.Add(drainGrace)
	m[inSPI] = &drain
	d.bySPI.Store(&m)
	// An older pair went: a rekey we answered may send on its new one now.
	if next := t.nextTx; next != nil {
		t.tx.Store(next)
		t.nextTx = nil
	}
}

// drainGrace is how long an inbound SA deleted after a rekey still opens
// packets: long enough to drain a full receive buffer of the raw ESP
// socket at the dataplane's slowest rate. The buffer holds at most 16 MiB
// (socketBuffer, which the kernel doubles); the slowest algorithm, raw ESP
// 3des-cbc-sha1, carried 0.11 Gbit/s (14 MB/s) in the bench: 1.2 s, and
// rates swing 3× on a loaded machine. Packets for the SA are still
// authenticated and replay-checked, and the peer sends nothing new on it
// once it deleted it, so a longer grace costs only the SA's memory.
const drainGrace = 4 * time.Second

// cloneLive copies an SPI table without the SAs whose drain ended by now.
func cloneLive(m map[uint32]*inboundSA, now time.Time) map[uint32]*inboundSA {
	c := maps.Clone(m)
	maps.DeleteFunc(c, func(_ uint32, sa *inboundSA) bool { return sa.drainedBy(now) })
	return c
}

func (d *Dataplane) tunnel(name string) *tunnel {
	for _, t := range d.tunnels {
		if t.conn.Name == name {
			return t
		}
	}
	return nil
}

// open finds the SA of an ESP packet from a peer, which came in UDP (on
// the NAT-T socket) if encap, and appends its inner packet to dst; nil when
// there is nothing to deliver: the packet is not for us (counted in Drops),
// does not authenticate (counted in the SA's stats) or is a dummy packet
// (RFC 4303 §2.6), empty inside, which the tun package would refuse along
// with its whole batch.
//
// An SA takes only the encapsulation it was negotiated for, as xfrm_input
// drops a packet whose encap type is not its state's (XfrmInStateMismatch).
// The UDP source port is not checked: the kernel does not either, it
// accepts ESP in UDP from another port or address (a NAT mapping that
// changed) and only reports it to the IKE daemon (esp_input_done2,
// km_new_mapping).
func (d *Dataplane) open(from netip.Addr, encap bool, pkt, dst []byte) (*tunnel, []byte) {
	if len(pkt) < 8 {
		d.drops.short.Add(1)
		return nil, nil
	}
	sa := (*d.bySPI.Load())[binary.BigEndian.Uint32(pkt[:4])]
	draining := sa != nil && !sa.drainUntil.IsZero()
	if sa == nil || draining && sa.drainedBy(time.Now()) {
		d.drops.unknownSPI.Add(1)
		return nil, nil
	}
	if encap != sa.encap {
		d.drops.wrongEncap.Add(1)
		return nil, nil
	}
	if from != sa.t.conn.Remote {
		d.drops.wrongSource.Add(1)
		return nil, nil
	}
	inner, _, err := sa.in.Open(dst, pkt)
	if draining {
		sa.t.drained.count(err, len(inner)-len(dst))
	}
	if err != nil || len(inner) == len(dst) {
		return nil, nil
	}
	return sa.t, inner
}

// ListenIKE starts an IKE endpoint whose CHILD SAs key this dataplane's
// tunnels (matched by connection name) and whose NAT-T socket carries
// their ESP-in-UDP both ways.
func (d *Dataplane) ListenIKE(opt ike.Options) (*ike.Endpoint, error) {
	h := &ikeHandler{d: d}
	opt.Handler, opt.ESP = h, d.newReceiver(nil)
	e, err := ike.Listen(opt)
	if err != nil {
		return nil, err
	}
	// Set before any connection is added, so before any ChildUp.
	h.encap = &Encap{Conn: e.NATTConn()}
	d.spiMu.Lock()
	d.encaps = append(d.encaps, h.encap)
	d.spiMu.Unlock()
	return e, nil
}

// UDPOffload counts what UDP GSO did for ESP in UDP on a node's NAT-T
// sockets; the receiving side's GRO is in ike.Counters.
type UDPOffload struct {
	// GSOSends counts the datagrams sent with UDP_SEGMENT, each carrying
	// GSOSegments/GSOSends ESP packets on average that the kernel cuts
	// apart where the packet leaves the last device that can carry it whole.
	GSOSends    uint64 `json:"gso_sends"`
	GSOSegments uint64 `json:"gso_segments"`
	// GSORefused counts the batches whose super-datagrams the kernel
	// refused, sent again packet by packet; GSOOff: one refused for want of
	// checksum offload on the outgoing device (EIO), and ESP in UDP goes
	// packet by packet from then on.
	GSORefused uint64 `json:"gso_refused,omitempty"`
	GSOOff     bool   `json:"gso_off,omitempty"`
}

// UDPOffload sums the counters of every NAT-T socket of the dataplane.
func (d *Dataplane) UDPOffload() UDPOffload {
	d.spiMu.Lock()
	defer d.spiMu.Unlock()
	var o UDPOffload
	for _, e := range d.encaps {
		o.GSOSends += e.gsoSends.Load()
		o.GSOSegments += e.gsoSegments.Load()
		o.GSORefused += e.gsoRefused.Load()
		o.GSOOff = o.GSOOff || e.noGSO.Load()
	}
	return o
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
	if err := h.d.Install(c.Conn, c.Out, c.In, encap, c.RemotePort, c.SendAfterOldDeleted); err != nil {
		h.d.log.Printf("%s: install CHILD SA in 0x%08x: %v", c.Conn, c.InSPI, err)
	}
}

func (h *ikeHandler) ChildDown(conn string, inSPI uint32) { h.d.Remove(conn, inSPI) }

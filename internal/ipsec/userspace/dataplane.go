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
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// Dataplane is the set of tunnels of one node.
type Dataplane struct {
	log     *log.Logger
	tunnels []*tunnel
	socks   map[netip.Addr]*espSocket // one raw ESP socket per local endpoint
	// bySPI maps inbound SPIs to their SA; replaced whole (copy on write)
	// when IKE installs or removes SAs, so the receive loops read it
	// without a lock.
	bySPI   atomic.Pointer[map[uint32]*inboundSA]
	spiMu   sync.Mutex // serialises writers of bySPI; guards encaps
	encaps  []*Encap   // the NAT-T sockets of ListenIKE, for UDPOffload
	wg      sync.WaitGroup
	closing chan struct{}
	drops   struct{ short, unknownSPI, wrongEncap, wrongSource atomic.Uint64 }
}

// Drops counts ESP packets refused before any SA saw them, the userspace
// counterparts of the kernel's XfrmInHdrError and XfrmInNoStates: bytes from
// the wire that no SA's counters would show.
type Drops struct {
	Short      uint64 `json:"short"`       // shorter than an ESP header (SPI + sequence number)
	UnknownSPI uint64 `json:"unknown_spi"` // no inbound SA has the SPI
	// WrongEncap counts raw ESP for an SA negotiated for ESP in UDP, and
	// ESP in UDP for one negotiated for raw ESP: the kernel's
	// XfrmInStateMismatch.
	WrongEncap  uint64 `json:"wrong_encap"`
	WrongSource uint64 `json:"wrong_source"` // the SPI's SA expects another peer address
}

type tunnel struct {
	conn ipsec.Conn
	tun  tun.Device
	// tx is how the tunnel sends: SA, socket and destination; nil while
	// an IKE-keyed tunnel has no CHILD SA (its packets are dropped and
	// counted in noSA).
	tx atomic.Pointer[txPath]
	// nextTx is the newer outbound SA of a rekey this end answered: it
	// takes over from tx once the old pair is removed (Install's
	// sendLater). Guarded by the dataplane's spiMu.
	nextTx *txPath
	in     atomic.Pointer[esp.Inbound] // the newest inbound SA, for Stats
	noSA   atomic.Uint64
	// drained counts what the tunnel's draining inbound SAs opened or
	// refused (Remove), since no SA the Stats show does.
	drained drainCounters
}

// drainCounters are the tunnel's InAfterDelete.
type drainCounters struct {
	packets, bytes, authFailures, replayDrops, errors atomic.Uint64
}

// count files the outcome of opening one packet on a draining SA: err from
// Open, or n inner bytes delivered.
func (c *drainCounters) count(err error, n int) {
	switch {
	case err == nil:
		c.packets.Add(1)
		c.bytes.Add(uint64(n))
	case errors.Is(err, esp.ErrAuth):
		c.authFailures.Add(1)
	case errors.Is(err, esp.ErrReplay):
		c.replayDrops.Add(1)
	default:
		c.errors.Add(1)
	}
}

func (c *drainCounters) stats() DrainStats {
	return DrainStats{Packets: c.packets.Load(), Bytes: c.bytes.Load(), AuthFailures: c.authFailures.Load(),
		ReplayDrops: c.replayDrops.Load(), Errors: c.errors.Load()}
}

// txPath is one outbound SA and where its packets go.
type txPath struct {
	out *esp.Outbound
	w   packetWriter
	dst net.Addr
	// payloadOffset is the SA's Algorithm.PayloadOffset: where Seal wants
	// the inner packet for encrypting it in place.
	payloadOffset int
}

// packetWriter is what the raw ESP socket and the ESP-in-UDP socket share;
// df asks for the outer DF bit (RFC 4301 §8.1).
type packetWriter interface {
	writeAll(ms []ipv4.Message, df bool) error
}

type inboundSA struct {
	t  *tunnel
	in *esp.Inbound
	// encap: negotiated for ESP in UDP (RFC 3948), so it takes only what
	// arrives on the NAT-T socket; otherwise only raw ESP.
	encap bool
	// drainUntil is set once IKE deleted the SA after a rekey: it opens
	// what arrives until then (Remove); zero while the SA is in use.
	drainUntil time.Time
}

// drainedBy reports whether the SA's drain ended by now.
func (sa *inboundSA) drainedBy(now time.Time) bool {
	return !sa.drainUntil.IsZero() && now.After(sa.drainUntil)
}

// TunnelStats is the traffic of one connection: its SAs' SPIs and counters.
type TunnelStats struct {
	Name   string    `json:"name"`
	OutSPI uint32    `json:"out_spi"`
	InSPI  uint32    `json:"in_spi"`
	Out    esp.Stats `json:"out"`
	In     esp.Stats `json:"in"`
	// NoSA counts the packets routed into the tunnel while it had no
	// outbound SA (an IKE-keyed tunnel before its CHILD SA, or after it
	// went down), dropped.
	NoSA uint64 `json:"no_sa,omitempty"`
	// InAfterDelete is what arrived, since the tunnel started, on its
	// inbound SAs after IKE deleted them at a rekey, while they drained
	// (packets still queued in the socket when the DELETE was handled):
	// neither InSPI nor In shows those SAs, which are no longer current.
	InAfterDelete DrainStats `json:"in_after_delete,omitzero"`
}

// DrainStats counts the packets that draining inbound SAs opened and those
// they refused, as esp.Stats does for one SA.
type DrainStats struct {
	Packets      uint64 `json:"packets"`
	Bytes        uint64 `json:"bytes"` // inner packet bytes
	AuthFailures uint64 `json:"auth_failures"`
	ReplayDrops  uint64 `json:"replay_drops"`
	Errors       uint64 `json:"errors"`
}

// SeqReserve is how many sequence numbers a resumed outbound SA skips past
// its last checkpoint: the numbers sent after it and before the crash are
// unknown, and RFC 4303 §3.3.3 forbids sending one twice. It holds as long as
// fewer than SeqReserve packets leave between two checkpoints (half a second
// in the agent: 2 million packets a second, 40 times this dataplane's peak).
const SeqReserve = 1 << 20

// Start creates the TUN interfaces and sockets of conns and starts moving
// packets. On error nothing is left running.
func Start(conns []ipsec.Conn, logger *log.Logger) (*Dataplane, error) {
	return StartFrom(conns, logger, nil)
}

// StartFrom is Start for a process that takes over SAs another one ran:
// prev is the last checkpoint of their counters (Stats). An SA found there by
// SPI resumes: outbound past its last sequence number plus SeqReserve,
// inbound refusing every number up to the highest accepted, so the peer's
// replay window accepts the first packet and nothing is accepted twice.
func StartFrom(conns []ipsec.Conn, logger *log.Logger, prev []TunnelStats) (*Dataplane, error) {
	d, err := newDataplane(conns, logger)
	if err != nil {
		return nil, err
	}
	for _, t := range d.tunnels {
		for _, p := range prev {
			// IKE-keyed tunnels start without SAs: theirs are negotiated anew.
			if tx := t.tx.Load(); tx != nil && p.OutSPI == tx.out.SPI() {
				tx.out.Resume(uint64(p.Out.Seq) + SeqReserve)
			}
			if in := t.in.Load(); in != nil && p.InSPI == in.SPI() {
				in.Resume(uint64(p.In.Seq))
			}
		}
	}
	d.start()
	return d, nil
}

// start starts moving packets: a send loop per tunnel, a receive loop per
// socket.
func (d *Dataplane) start() {
	for _, t := range d.tunnels {
		d.wg.Add(1)
		go d.sendLoop(t)
	}
	for _, s := range d.socks {
		d.wg.Add(1)
		go d.receiveLoop(s)
	}
}

// newDataplane makes the interfaces and sockets without moving packets yet.
func newDataplane(conns []ipsec.Conn, logger *log.Logger) (_ *Dataplane, err error) {
	d := &Dataplane{log: logger, socks: map[netip.Addr]*espSocket{}, closing: make(chan struct{})}
	d.bySPI.Store(&map[uint32]*inboundSA{})
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
	return d, nil
}

// addTunnel registers the tunnel before opening anything, so Close releases
// whatever a failure leaves half-made. A tunnel keyed by IKE starts without
// SAs: Install adds them as they are negotiated.
func (d *Dataplane) addTunnel(c ipsec.Conn) error {
	t := &tunnel{conn: c}
	sock, err := d.socket(c.Local)
	if err != nil {
		return err
	}
	if c.IKE == nil {
		outCfg, err := c.Outbound()
		if err != nil {
			return err
		}
		inCfg, err := c.Inbound()
		if err != nil {
			return err
		}
		if err := d.install(t, outCfg, inCfg, sock, &net.IPAddr{IP: c.Remote.AsSlice()}, false); err != nil {
			return err
		}
	}
	d.tunnels = append(d.tunnels, t)
	if t.tun, err = openTUN(c.Interface); err != nil {
		return err
	}
	if err := configureLink(c, t.tun.BatchSize()); err != nil {
		return err
	}
	return nil
}

// socket returns the raw ESP socket bound to a local endpoint; the kernel
// writes the outer IP header with that source address.
func (d *Dataplane) socket(local netip.Addr) (*espSocket, error) {
	if s := d.socks[local]; s != nil {
		return s, nil
	}
	s, err := listenESP(local)
	if err != nil {
		return nil, err
	}
	d.socks[local] = s
	return s, nil
}

// configureLink sets up the tunnel interface. maxSegs bounds the segments
// of a TSO super-packet to what one read splits into (the tun package
// drops a larger one whole, and the sender would retransmit it whole: with
// a small MSS a flow stalls).
func configureLink(c ipsec.Conn, maxSegs int) error {
	// The tunnel carries IPv6 as well (ESP next header 41), so IPv6 stays
	// on: routes into the interface need it. Without a link-local address
	// (addr_gen_mode 1, "none") the interface sends no router
	// solicitations, duplicate address probes or MLD reports into the
	// tunnel on its own.
	if !c.Address.Addr().Is6() {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+c.Interface+"/addr_gen_mode", []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("IPv6 link-local address off on %s: %w", c.Interface, err)
		}
	}
	link, err := netlink.LinkByName(c.Interface)
	if err != nil {
		return fmt.Errorf("find %s: %w", c.Interface, err)
	}
	if err := netlink.LinkSetGSOMaxSegs(link, maxSegs); err != nil {
		return fmt.Errorf("GSO segments of %s: %w", c.Interface, err)
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

// sendLoop encrypts what routing sends into the tunnel interface. One TUN
// read may be a TCP super-packet, which the tun package cuts into segments
// (each at sendHeadroom of its buffer, so Seal encrypts it where it lies).
//
// It is the first stage of a pipeline: while it reads and seals one batch,
// transmit sends the previous one (sendmmsg, whose system call also carries
// the kernel's forwarding of every packet over the lab's links), so the two
// overlap: the worker has one P (agent.WorkerGOMAXPROCS), and the Go
// runtime hands it to the other goroutine while transmit is in that long
// system call.
//
// The tunnel's txPath is loaded once per read: a rekey takes effect at the
// next read, and while an IKE-keyed tunnel has no SA what it reads is
// dropped (and counted), as the kernel drops what no xfrm state matches.
func (d *Dataplane) sendLoop(t *tunnel) {
	defer d.wg.Done()
	free := make(chan *sendBatch, sendDepth)
	sealed := make(chan *sendBatch, sendDepth)
	for range sendDepth {
		free <- newSendBatch(t.tun.BatchSize())
	}
	d.wg.Add(1)
	go d.transmit(t, sealed, free)
	defer close(sealed)
	for {
		b := <-free
		count, err := t.tun.Read(b.bufs, b.sizes, sendHeadroom)
		if err != nil {
			free <- b
			if d.isClosing() || errors.Is(err, os.ErrClosed) {
				d.stopped(t.conn.Interface, err)
				return
			}
			// A packet the tun package could not split (too many
			// segments, bad header): dropped, as a NIC would.
			d.log.Printf("%s: read from %s: %v", t.conn.Name, t.conn.Interface, err)
			continue
		}
		tx := t.tx.Load()
		if tx == nil {
			t.noSA.Add(uint64(count))
			free <- b
			continue
		}
		b.seal(tx, count)
		sealed <- b
	}
}

// sendDepth is how many batches a tunnel's pipeline holds: one being read
// and sealed, one being sent, one spare for when the two drift.
const sendDepth = 3

// sendBatch is one TUN read on its way out: the inner packets, sealed in
// place into the ESP packets wire[:count].
type sendBatch struct {
	bufs  [][]byte
	sizes []int
	count int
	tx    *txPath
	wire  [][]byte // wire[i] is the ESP packet sealed from bufs[i]; nil: none
	df    []bool   // df[i] is the outer DF bit of wire[i] (innerDF)
}

func newSendBatch(n int) *sendBatch {
	b := &sendBatch{bufs: make([][]byte, n), sizes: make([]int, n), wire: make([][]byte, n), df: make([]bool, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, sendBufLen)
	}
	return b
}

// seal encrypts the count packets of b with tx's SA, each where it lies at
// sendHeadroom of its buffer, with the ESP header and IV written in front.
//
// Sealing a large batch on several cores was tried: on two cores that the
// lab's forwarding and TCP keep busy, handing half a batch to another
// goroutine made it slower (45 packets of aes-cbc-sha1: 156 µs alone, 190
// split), so one goroutine seals a tunnel's batches in order.
func (b *sendBatch) seal(tx *txPath, count int) {
	b.count, b.tx = count, tx
	start := sendHeadroom - tx.payloadOffset
	for i, size := range b.sizes[:count] {
		b.wire[i] = nil
		if size == 0 {
			continue
		}
		inner := b.bufs[i][sendHeadroom : sendHeadroom+size]
		next := byte(4) // IP-in-IP: IPv4
		if inner[0]>>4 == 6 {
			next = 41
		}
		b.df[i] = innerDF(inner) // read before Seal encrypts inner
		wire, err := tx.out.Seal(b.bufs[i][start:start], inner, next)
		if err != nil {
			continue // counted in the SA's stats
		}
		b.wire[i] = wire
	}
}

// transmit is the second stage of a tunnel's send pipeline: it sends each
// sealed batch in as few sendmmsg calls as its packets' DF bits allow (a
// batch leaves through one socket, so one DF setting: a packet with the
// other ends it, which also keeps the packets in order), and hands the
// batch back to sendLoop.
func (d *Dataplane) transmit(t *tunnel, sealed <-chan *sendBatch, free chan<- *sendBatch) {
	defer d.wg.Done()
	msgs := make([]ipv4.Message, t.tun.BatchSize())
	for i := range msgs {
		msgs[i].Buffers = [][]byte{nil}
	}
	failing := sendErrors{log: d.log, tunnel: t.conn.Name}
	for b := range sealed {
		queued, queuedDF := 0, false
		for i, wire := range b.wire[:b.count] {
			if wire == nil {
				continue
			}
			if b.df[i] != queuedDF {
				if queued > 0 {
					d.send(b.tx, msgs[:queued], queuedDF, &failing)
					queued = 0
				}
				queuedDF = b.df[i]
			}
			msgs[queued].Buffers[0], msgs[queued].Addr = wire, b.tx.dst
			queued++
		}
		if queued > 0 {
			d.send(b.tx, msgs[:queued], queuedDF, &failing)
		}
		free <- b
	}
}

func (d *Dataplane) send(tx *txPath, ms []ipv4.Message, df bool, failing *sendErrors) {
	if err := tx.w.writeAll(ms, df); !d.isClosing() {
		failing.report(tx.dst, err)
	}
}

// sendHeadroom is where the send loop reads inner packets into its buffers:
// room for the ESP header and IV of every algorithm, since the SA (and so
// the algorithm) is only known once the read returned. sendBufLen holds the
// largest ESP packet of every algorithm sealed from there.
var sendHeadroom, sendBufLen = func() (headroom, size int) {
	for _, a := range esp.Algorithms() {
		headroom = max(headroom, a.PayloadOffset())
	}
	for _, a := range esp.Algorithms() {
		size = max(size, headroom-a.PayloadOffset()+a.SealedLen(maxIPPacket))
	}
	return headroom, size
}()

// innerDF reports whether the outer header of inner's ESP packet carries
// DF: copied from an inner IPv4 header (RFC 4301 §8.1 default, and what the
// kernel's xfrm4 tunnel mode does); clear for inner IPv6, which has no DF
// and whose size the sender already fitted to the tunnel's MTU, so the
// outer path may fragment.
func innerDF(inner []byte) bool {
	return len(inner) >= 20 && inner[0]>>4 == 4 && inner[6]&0x40 != 0
}

// maxIPPacket is the largest IP packet, what TUN and raw-socket buffers hold.
const maxIPPacket = 65535

// receiveLoop decrypts ESP arriving at a local endpoint and hands the inner
// packets to the tunnel interface of their SA, as if they arrived there.
// One goroutine per socket keeps the packets of an SA in order, which the
// replay window and TCP both prefer.
func (d *Dataplane) receiveLoop(s *espSocket) {
	defer d.wg.Done()
	r := d.newReceiver(s)
	for {
		n, err := s.batch.ReadBatch(r.msgs, 0)
		if err != nil {
			d.stopped("raw socket", err)
			return
		}
		r.handle(n)
	}
}

// receiver holds the buffers of one receive loop, allocated once: a raw
// ESP socket's, or the ESP-in-UDP one of an IKE endpoint's NAT-T socket.
type receiver struct {
	d     *Dataplane
	s     *espSocket     // nil for ESP in UDP
	msgs  []ipv4.Message // what recvmmsg fills
	inner [][]byte       // decrypted packets, tunOffset bytes in
	used  int            // inner[:used] hold packets not yet delivered
	// touched are the tunnels this batch delivers to and rx[j] the packets
	// of touched[j], for one TUN write per tunnel. They are the receiver's,
	// not the tunnel's: a tunnel's SAs may be raw ESP and ESP in UDP at
	// once (NAT detected at a rekey), so two receive loops may deliver to
	// one tunnel.
	touched []*tunnel
	rx      [][][]byte
}

func (d *Dataplane) newReceiver(s *espSocket) *receiver {
	r := &receiver{d: d, s: s, inner: make([][]byte, batchSize),
		touched: make([]*tunnel, 0, batchSize), rx: make([][][]byte, batchSize)}
	if s != nil {
		r.msgs = make([]ipv4.Message, batchSize)
		for i := range r.msgs {
			r.msgs[i].Buffers = [][]byte{make([]byte, maxIPPacket)}
		}
	}
	for i := range r.inner {
		// Room for a whole GRO super-packet: the tun package merges the
		// segments of a flow into the buffer of its first one.
		r.inner[i] = make([]byte, tunOffset+maxIPPacket)
		r.rx[i] = make([][]byte, 0, batchSize)
	}
	return r
}

// handle decrypts the first n received messages and writes the inner
// packets of each tunnel to its interface in one call, which merges the
// segments of each TCP or UDP flow (GRO).
func (r *receiver) handle(n int) {
	for i := range r.msgs[:n] {
		from, pkt, ok := r.s.packet(&r.msgs[i])
		if !ok {
			r.d.drops.short.Add(1)
			continue
		}
		r.ESP(netip.AddrPortFrom(from, 0), pkt)
	}
	r.Flush()
}

// ESP decrypts one ESP packet from a peer into the next free buffer; a
// full set of buffers is delivered at once. It is the ike.ESPSink of the
// NAT-T socket, which hands over ESP in UDP segment by segment.
func (r *receiver) ESP(from netip.AddrPort, pkt []byte) {
	t, inner := r.d.open(from.Addr(), r.s == nil, pkt, r.inner[r.used][:tunOffset])
	if inner == nil {
		return
	}
	j := slices.Index(r.touched, t)
	if j < 0 {
		j = len(r.touched)
		r.touched = append(r.touched, t)
	}
	r.rx[j] = append(r.rx[j], inner)
	if r.used++; r.used == len(r.inner) {
		r.Flush()
	}
}

// Flush writes the decrypted packets to their tunnels' interfaces, one
// write per tunnel.
func (r *receiver) Flush() {
	for j, t := range r.touched {
		if _, err := t.tun.Write(r.rx[j], tunOffset); err != nil && !r.d.isClosing() {
			r.d.log.Printf("%s: deliver: %v", t.conn.Name, err)
		}
		clear(r.rx[j]) // the buffers belong to r.inner; drop the references
		r.rx[j] = r.rx[j][:0]
	}
	r.touched = r.touched[:0]
	r.used = 0
}

// sendErrors logs a tunnel's failing sends once, not once per batch: a
// fresh agent sends before its routes exist ("network is unreachable")
// and would log every packet until they do. The next success says how many
// batches failed; a different error is logged anew.
type sendErrors struct {
	log    *log.Logger
	tunnel string
	last   string // the error being suppressed, "" while sends succeed
	failed int    // batches failed since last was logged
}

func (s *sendErrors) report(dst net.Addr, err error) {
	switch {
	case err == nil && s.last != "":
		s.log.Printf("%s: send to %s works again, after %d failed batches", s.tunnel, dst, s.failed)
		s.last, s.failed = "", 0
	case err == nil:
	case err.Error() == s.last:
		s.failed++
	default:
		s.log.Printf("%s: send to %s: %v (logged once until a send succeeds)", s.tunnel, dst, err)
		s.last, s.failed = err.Error(), 1
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
		out[i].Name, out[i].NoSA, out[i].InAfterDelete = t.conn.Name, t.noSA.Load(), t.drained.stats()
		if tx := t.tx.Load(); tx != nil {
			out[i].OutSPI, out[i].Out = tx.out.SPI(), tx.out.Stats()
		}
		if in := t.in.Load(); in != nil {
			out[i].InSPI, out[i].In = in.SPI(), in.Stats()
		}
	}
	return out
}

// Drops returns the counters of packets refused before an SA.
func (d *Dataplane) Drops() Drops {
	return Drops{Short: d.drops.short.Load(), UnknownSPI: d.drops.unknownSPI.Load(),
		WrongEncap: d.drops.wrongEncap.Load(), WrongSource: d.drops.wrongSource.Load()}
}

// Close stops every loop and removes the TUN interfaces.
//
// The interfaces are closed all at once: removing one waits some 17 ms for
// the kernel (RCU grace periods), and removals that run together share
// their waits, so 256 tunnels close in a fraction of the 4.5 s they take
// one after another, well within the 2 s an agent gets to stop.
func (d *Dataplane) Close() error {
	close(d.closing)
	var closing sync.WaitGroup
	for _, t := range d.tunnels {
		if t.tun != nil {
			closing.Go(func() { t.tun.Close() })
		}
	}
	closing.Wait()
	for _, s := range d.socks {
		s.Close()
	}
	d.wg.Wait()
	return nil
}

package ike

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Options configure an Endpoint: one local address of a gateway, its IKE
// sockets and what receives the negotiated SAs.
type Options struct {
	Addr netip.Addr
	// IKEPort and NATTPort default to 500 and 4500 (RFC 7296 §2, RFC 3948);
	// tests use unprivileged ports. A peer is assumed to use the same two.
	IKEPort, NATTPort uint16
	Handler           Handler
	// ESP receives the ESP-in-UDP packets of the NAT-T port; nil drops them.
	ESP ESPSink
	Log *slog.Logger
	// RetransmitBase is the first retransmission timeout, doubled on each
	// try (RFC 7296 §2.1); RetransmitTries requests are sent before the
	// peer is declared dead. Defaults: 500ms, 5.
	RetransmitBase  time.Duration
	RetransmitTries int
	// RetryAfter is how long an initiator waits before negotiating again
	// after a failure or a dead peer. Default 2s.
	RetryAfter time.Duration
}

// Endpoint runs IKEv2 for the connections of one local address. All
// protocol state lives in one goroutine (the loop); sockets and the public
// methods hand it closures.
type Endpoint struct {
	opt      Options
	log      *slog.Logger
	sock     [2]*net.UDPConn // IKE port, NAT-T port
	events   chan func()
	done     chan struct{}
	wg       sync.WaitGroup
	conns    []*conn           // appended under mu, since Status reads it
	sas      map[uint64]*ikeSA // by our SPI
	mu       sync.Mutex        // guards status and counters for readers outside the loop
	counters Counters
	stop     sync.Once
	trace    func([]byte) // tests: sees every IKE message received
	// cookieSecret keys the COOKIEs asked of initiators while many SAs
	// are half-open (RFC 7296 §2.6); random per endpoint, never sent.
	cookieSecret [32]byte
	refusedLog   refusedLog
}

// refusedLogInterval is how often at most a refused unauthenticated
// exchange is logged: the first of an interval is, the rest are summed up
// in one line when it ends, so a flood of spoofed IKE_SA_INITs cannot grow
// the log without bound.
const refusedLogInterval = 10 * time.Second

// refusedLog is the state of that rate limit; only the loop touches it.
type refusedLog struct {
	since      time.Time // when the first line of the interval was logged; zero: none
	suppressed int       // refusals not logged since
	conn, last string    // the last suppressed refusal's connection and reason
}

type conn struct {
	cfg     Config
	child   *ChildSA // newest installed CHILD SA, for ChildSAs; under mu
	sa      *ikeSA   // current IKE SA, nil when none
	status  Status
	retryAt time.Time
}

// Listen opens the IKE and NAT-T sockets on opt.Addr and starts the loop.
func Listen(opt Options) (*Endpoint, error) {
	if opt.IKEPort == 0 {
		opt.IKEPort = 500
	}
	if opt.NATTPort == 0 {
		opt.NATTPort = 4500
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.RetransmitBase == 0 {
		opt.RetransmitBase = 500 * time.Millisecond
	}
	if opt.RetransmitTries == 0 {
		opt.RetransmitTries = 5
	}
	if opt.RetryAfter == 0 {
		opt.RetryAfter = 2 * time.Second
	}
	e := &Endpoint{opt: opt, log: opt.Log, events: make(chan func(), 256), done: make(chan struct{}), sas: map[uint64]*ikeSA{}}
	rand.Read(e.cookieSecret[:])
	for i, port := range []uint16{opt.IKEPort, opt.NATTPort} {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(opt.Addr, port)))
		if err != nil {
			e.closeSockets()
			return nil, fmt.Errorf("ike: listen on %s port %d: %w", opt.Addr, port, err)
		}
		e.sock[i] = c
	}
	if opt.ESP != nil {
		// Only for a userspace ESP sink: on a socket the kernel's XFRM
		// decapsulates (UDP_ENCAP_ESPINUDP) GRO would hand it a train of
		// ESP packets as one, which it would take for one packet.
		tuneNATT(e.sock[1])
	}
	e.wg.Add(2)
	go e.readIKE()
	go e.readNATT()
	e.wg.Add(1)
	go e.loop()
	return e, nil
}

func (e *Endpoint) closeSockets() {
	for _, s := range e.sock {
		if s != nil {
			s.Close()
		}
	}
}

// Add registers a connection; an initiator starts negotiating at once.
func (e *Endpoint) Add(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	e.do(func() {
		c := &conn{cfg: cfg, status: Status{Name: cfg.Name, Local: cfg.Local.String(), Remote: cfg.Remote.String(), Phase1: StateDown, Phase2: StateDown}}
		e.mu.Lock()
		e.conns = append(e.conns, c)
		e.mu.Unlock()
		if cfg.Initiate {
			e.initiate(c)
		}
	})
	return nil
}

// Connect negotiates connection name now, once, even on a responder-only
// end, unless it has an IKE SA: what a gateway that restarted does so the
// peer need not wait for its DPD to notice (RFC 7296 §2.4 suggests
// INITIAL_CONTACT for this). Later retries follow Config.Initiate.
func (e *Endpoint) Connect(name string) {
	e.do(func() {
		for _, c := range e.conns {
			if c.cfg.Name == name && c.sa == nil {
				e.initiate(c)
			}
		}
	})
}

// Status returns the state of every connection.
func (e *Endpoint) Status() []Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Status, len(e.conns))
	for i, c := range e.conns {
		out[i] = c.status
	}
	return out
}

// ChildSAs returns the newest CHILD SA of every established connection,
// keys included: the agent stores them 0600 so captures can be decrypted.
func (e *Endpoint) ChildSAs() []ChildSA {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ChildSA
	for _, c := range e.conns {
		if c.child != nil {
			out = append(out, *c.child)
		}
	}
	return out
}

// Counters returns the endpoint's packet counters.
func (e *Endpoint) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.counters
}

// NATTConn is the NAT-T socket: ESP-in-UDP leaves through it too (RFC
// 3948 §2.1), since only one socket may own port 4500.
func (e *Endpoint) NATTConn() *net.UDPConn { return e.sock[1] }

// Close deletes every established IKE SA (an INFORMATIONAL Delete, RFC 7296
// §1.4.1, answered or not within a second) and stops the endpoint.
func (e *Endpoint) Close() error {
	deleted := make(chan struct{})
	go e.do(func() {
		for _, c := range e.conns {
			if c.sa != nil && c.sa.established {
				c.sa.sendDelete()
			}
		}
		close(deleted)
	})
	select {
	case <-deleted:
	case <-time.After(time.Second):
	}
	// Give the peers' answers a moment; an unanswered Delete is fine.
	time.Sleep(50 * time.Millisecond)
	e.abort()
	return nil
}

// abort stops the endpoint without a word to the peers, as a crash would.
func (e *Endpoint) abort() {
	e.stop.Do(func() {
		close(e.done)
		e.closeSockets()
	})
	e.wg.Wait()
}

// do runs f on the loop; after Close it is dropped.
func (e *Endpoint) do(f func()) {
	select {
	case e.events <- f:
	case <-e.done:
	}
}

func (e *Endpoint) loop() {
	defer e.wg.Done()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case f := <-e.events:
			f()
		case now := <-tick.C:
			e.tick(now)
		case <-e.done:
			return
		}
	}
}

// readIKE reads the IKE port, where every datagram is an IKE message.
func (e *Endpoint) readIKE() {
	defer e.wg.Done()
	buf := make([]byte, MaxMessageLen)
	for {
		n, from, err := e.sock[0].ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				e.log.Warn("ike socket stopped", "addr", e.opt.Addr, "err", err)
			}
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		b := append([]byte(nil), buf[:n]...) // the loop keeps it after buf is reused
		e.do(func() { e.receive(b, from, false) })
	}
}

func (e *Endpoint) count(f func(*Counters)) {
	e.mu.Lock()
	f(&e.counters)
	e.mu.Unlock()
}

// setStatus changes a connection's status under the lock readers take.
func (e *Endpoint) setStatus(c *conn, f func(*Status)) {
	e.mu.Lock()
	f(&c.status)
	e.mu.Unlock()
}

// receive dispatches one IKE message (marker removed) to its SA.
func (e *Endpoint) receive(b []byte, from netip.AddrPort, natt bool) {
	e.count(func(c *Counters) { c.Received++ })
	if e.trace != nil {
		e.trace(b)
	}
	h, ps, err := Parse(b)
	if err != nil {
		e.count(func(c *Counters) { c.Malformed++ })
		e.log.Debug("ike: dropped malformed message", "from", from, "err", err)
		return
	}
	if h.Exchange == IKESAInit && !h.IsResponse() && h.Flags&FlagInitiator != 0 && h.SPIr == 0 {
		e.respondInit(h, ps, b, from, natt)
		return
	}
	spi := h.SPIi
	if h.Flags&FlagInitiator != 0 {
		spi = h.SPIr
	}
	sa := e.sas[spi]
	if sa == nil || from.Addr() != sa.c.cfg.Remote {
		e.count(func(c *Counters) { c.UnknownSA++ })
		return
	}
	sa.handle(h, ps, b, from, natt)
}

func (e *Endpoint) connFor(remote netip.Addr) *conn {
	for _, c := range e.conns {
		if c.cfg.Remote == remote {
			return c
		}
	}
	return nil
}

func (e *Endpoint) tick(now time.Time) {
	e.flushRefusedLog(now)
	for _, sa := range e.sas {
		sa.tick(now)
	}
	for _, c := range e.conns {
		if c.sa == nil && c.cfg.Initiate && !c.retryAt.IsZero() && now.After(c.retryAt) {
			e.initiate(c)
		}
	}
}

// send writes an IKE message to the peer: on the IKE port, or with the
// non-ESP marker on the NAT-T port once the SA floated (RFC 7296 §2.23).
func (e *Endpoint) send(sa *ikeSA, msg []byte) {
	var err error
	if sa.natt {
		_, err = e.sock[1].WriteToUDPAddrPort(append(make([]byte, 4, 4+len(msg)), msg...), netip.AddrPortFrom(sa.c.cfg.Remote, e.opt.NATTPort))
	} else {
		_, err = e.sock[0].WriteToUDPAddrPort(msg, netip.AddrPortFrom(sa.c.cfg.Remote, e.opt.IKEPort))
	}
	if err != nil {
		e.log.Warn("ike: send", "conn", sa.c.cfg.Name, "err", err)
	}
}

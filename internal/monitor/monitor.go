// Package monitor watches an IPsec connection from inside its gateway by
// probing through the tunnel, and withdraws the routes that depend on it
// while the probes fail, putting them back when they succeed again. It is
// both the on-premises gateway's dead peer detection (routes into a dead
// tunnel go, so traffic falls back to the plain path) and the provider's
// IPsec connection health check (revoke_route: the routes the VPN gateway
// published into the VPC go).
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// Config is one watched connection.
type Config struct {
	Connection string     `json:"connection"`
	Interface  string     `json:"interface"` // the tunnel interface probes leave by
	Source     netip.Addr `json:"source,omitzero"`
	Target     netip.Addr `json:"target"` // an address only reachable through the tunnel
	// Interval between probes; a probe unanswered within it counts as lost.
	Interval time.Duration `json:"interval"`
	// Retries lost probes in a row declare the connection down; one answer
	// declares it up again.
	Retries int `json:"retries"`
	// Withdraw lists the routes to remove while down. Level-triggered: every
	// interval they are made absent (down) or present (up), so a route added
	// late by deploy or by hand converges too.
	Withdraw []Route `json:"withdraw"`
}

// Route is a route in some namespace of the lab ("" = the agent's own).
type Route struct {
	Namespace string       `json:"namespace,omitempty"`
	Dst       netip.Prefix `json:"dst"`
	Via       netip.Addr   `json:"via,omitzero"`
	Dev       string       `json:"dev,omitempty"`
	Metric    int          `json:"metric,omitempty"`
}

func (r Route) String() string {
	s := r.Dst.String()
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Namespace != "" {
		s += " in " + r.Namespace
	}
	return s
}

// Run probes until ctx ends. It logs every change of state with how long
// the connection had been in the old one.
func Run(ctx context.Context, cfg Config, logger *log.Logger) error {
	if cfg.Interval <= 0 || cfg.Retries <= 0 {
		return fmt.Errorf("monitor %s: interval and retries must be positive", cfg.Connection)
	}
	conn, err := listen(cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	m := &monitor{cfg: cfg, log: logger, conn: conn, up: true, since: time.Now(), handles: map[string]*netlink.Handle{}}
	defer m.closeHandles()
	replies := make(chan int, 16)
	go m.readReplies(replies)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	seq, lost, answered := 0, 0, false
	for {
		seq++
		m.send(seq)
		answered = false
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case s := <-replies:
				if s == seq {
					answered = true
				}
			case <-tick.C:
				break wait
			}
		}
		if answered {
			lost = 0
			m.set(true)
		} else if lost++; lost >= cfg.Retries {
			m.set(false)
		}
		m.converge()
	}
}

type monitor struct {
	cfg     Config
	log     *log.Logger
	conn    net.PacketConn
	up      bool
	since   time.Time
	handles map[string]*netlink.Handle
}

// listen opens an ICMP socket bound to the tunnel interface, so a probe can
// only ever leave through the tunnel, never by a fallback route.
func listen(cfg Config) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, cfg.Interface)
		})
		return errors.Join(err, serr)
	}}
	src := ""
	if cfg.Source.IsValid() {
		src = cfg.Source.String()
	}
	c, err := lc.ListenPacket(context.Background(), "ip4:icmp", src)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: ICMP socket on %s: %w", cfg.Connection, cfg.Interface, err)
	}
	return c, nil
}

func (m *monitor) id() int { return os.Getpid() & 0xffff }

func (m *monitor) send(seq int) {
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: m.id(), Seq: seq & 0xffff, Data: []byte("emu-monitor " + m.cfg.Connection)}}
	wire, _ := msg.Marshal(nil)
	m.conn.WriteTo(wire, &net.IPAddr{IP: m.cfg.Target.AsSlice()})
}

func (m *monitor) readReplies(out chan<- int) {
	buf := make([]byte, 1500)
	for {
		n, from, err := m.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		msg, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || msg.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		echo, ok := msg.Body.(*icmp.Echo)
		if !ok || echo.ID != m.id() || from.String() != m.cfg.Target.String() {
			continue
		}
		select {
		case out <- echo.Seq:
		default:
		}
	}
}

func (m *monitor) set(up bool) {
	if up == m.up {
		return
	}
	was := map[bool]string{true: "up", false: "down"}
	m.log.Printf("connection %s %s after %s %s (probes to %s via %s)", m.cfg.Connection, was[up], was[m.up], time.Since(m.since).Round(time.Millisecond), m.cfg.Target, m.cfg.Interface)
	m.up, m.since = up, time.Now()
}

// converge makes the withdrawable routes match the connection's state.
func (m *monitor) converge() {
	for _, r := range m.cfg.Withdraw {
		h, err := m.handle(r.Namespace)
		if err != nil {
			m.log.Printf("connection %s: %v", m.cfg.Connection, err)
			continue
		}
		nr, err := toNetlink(h, r)
		if err != nil {
			continue // e.g. the device vanished with the lab
		}
		if m.up {
			err = h.RouteAdd(nr)
			if err == nil {
				m.log.Printf("connection %s: restored route %s", m.cfg.Connection, r)
			}
		} else {
			nr.Scope = netlink.SCOPE_NOWHERE
			err = h.RouteDel(nr)
			if err == nil {
				m.log.Printf("connection %s: withdrew route %s", m.cfg.Connection, r)
			}
		}
	}
}

func (m *monitor) handle(ns string) (*netlink.Handle, error) {
	if h := m.handles[ns]; h != nil {
		return h, nil
	}
	var h *netlink.Handle
	var err error
	if ns == "" {
		h, err = netlink.NewHandle()
	} else {
		var nsh netns.NsHandle
		if nsh, err = netns.GetFromName(ns); err != nil {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
		defer nsh.Close()
		h, err = netlink.NewHandleAt(nsh)
	}
	if err != nil {
		return nil, err
	}
	m.handles[ns] = h
	return h, nil
}

func (m *monitor) closeHandles() {
	for _, h := range m.handles {
		h.Close()
	}
}

func toNetlink(h *netlink.Handle, r Route) (*netlink.Route, error) {
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		Priority: r.Metric,
	}
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
	}
	if r.Dev != "" {
		link, err := h.LinkByName(r.Dev)
		if err != nil {
			return nil, err
		}
		nr.LinkIndex = link.Attrs().Index
		if !r.Via.IsValid() {
			nr.Scope = netlink.SCOPE_LINK
		}
	}
	return nr, nil
}

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

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/wiring"
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

// Route is a route in a namespace of the lab: the gateway's own, or for the
// health check, the VPC's.
type Route struct {
	Namespace string       `json:"namespace"`
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
	return s + " in " + r.Namespace
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
	m := &monitor{cfg: cfg, log: logger, conn: conn, up: true, since: time.Now(), net: wiring.New()}
	defer m.net.Close()
	replies := make(chan int, 16)
	go m.readReplies(replies)
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	v := verdict{retries: cfg.Retries, up: true}
	seq, answered := 0, false
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
				// A late reply to an earlier probe proves nothing now.
				if s == seq&0xffff {
					answered = true
				}
			case <-tick.C:
				break wait
			}
		}
		m.set(v.probe(answered))
		m.converge()
	}
}

// verdict is the state of a connection as the probes tell it: one answered
// probe makes it up, retries lost in a row make it down, and in between it
// keeps its state (the provider's health check: "3 retries"; DPD likewise).
type verdict struct {
	retries, lost int
	up            bool
}

// probe records one probe's fate and returns the connection's state.
func (v *verdict) probe(answered bool) (up bool) {
	if answered {
		v.lost, v.up = 0, true
	} else if v.lost++; v.lost >= v.retries {
		v.up = false
	}
	return v.up
}

type monitor struct {
	cfg   Config
	log   *log.Logger
	conn  net.PacketConn
	up    bool
	since time.Time
	net   *wiring.Net // netlink handles of the namespaces whose routes it manages
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
		echo, ok := probe.EchoReply(1, buf[:n])
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

// converge makes the withdrawable routes match the connection's state. Only
// a change is logged: a route already as wanted fails with EEXIST or ESRCH,
// and one whose device vanished with the lab is retried at the next tick.
func (m *monitor) converge() {
	for _, r := range m.cfg.Withdraw {
		var err error
		if m.up {
			err = m.net.AddRoute(r.Namespace, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
		} else {
			err = m.net.DeleteRoute(r.Namespace, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric)
		}
		if err == nil {
			m.log.Printf("connection %s: %s route %s", m.cfg.Connection, map[bool]string{true: "restored", false: "withdrew"}[m.up], r)
		}
	}
}

// Package ike benchmarks IKEv2 negotiation: time to an established tunnel
// emu↔emu and emu↔strongSwan, and N connections on one VPN gateway from
// Add to all established, which must grow linearly with N.
//
//	go test -run '^$' -bench . -benchtime 5x ./bench/ike
//
// emu↔emu runs on loopback addresses (127.0.0.0/8) with unprivileged
// ports; emu↔strongSwan needs root and Debian's charon (ike/swtest).
package ike

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/ike/swtest"
	"github.com/emu-lab/emu/internal/netnsx"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// provider is the provider's default suite: aes-sha1-modp1024, PFS group2.
func provider(name string, local, remote netip.Addr, psk string) ike.Config {
	return ike.Config{
		Name: name, Local: local, Remote: remote, PSK: []byte(psk), NATT: true,
		IKE: ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196, PRF: ike.PRFHMACSHA1, DH: 2},
		ESP: ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196, DH: 2},
	}
}

type nopHandler struct{}

func (nopHandler) ChildUp(ike.ChildSA)      {}
func (nopHandler) ChildDown(string, uint32) {}

func listen(b *testing.B, addr netip.Addr, port uint16) *ike.Endpoint {
	b.Helper()
	e, err := ike.Listen(ike.Options{Addr: addr, IKEPort: port, NATTPort: port + 1, Handler: nopHandler{}, Log: quiet, RetryAfter: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// waitAll polls until n connections of e are established both phases.
func waitAll(b *testing.B, e *ike.Endpoint, n int) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		up := 0
		for _, s := range e.Status() {
			if s.Phase1 == ike.StateEstablished && s.Phase2 == ike.StateEstablished {
				up++
			}
		}
		if up == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d connections established after 60s: %+v", up, n, e.Status())
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkEstablish_EmuToEmu: from Add on both ends to phase 2
// established on the responder (the provider's gateway).
func BenchmarkEstablish_EmuToEmu(b *testing.B) {
	gw, op := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	var total time.Duration
	for b.Loop() {
		port := uint16(20000 + rand.IntN(20000))
		g, o := listen(b, gw, port), listen(b, op, port)
		start := time.Now()
		g.Add(provider("vpn", gw, op, "bench-psk"))
		c := provider("vpn", op, gw, "bench-psk")
		c.Initiate = true
		o.Add(c)
		waitAll(b, g, 1)
		total += time.Since(start)
		o.Close()
		g.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/established")
}

// BenchmarkEstablish_EmuToStrongSwan: emu's gateway initiates to a running
// charon (Debian's, kernel-libipsec, so IKE floats to 4500); measured from
// Add to phase 2 established. Needs root and charon.
func BenchmarkEstablish_EmuToStrongSwan(b *testing.B) {
	var total time.Duration
	for b.Loop() {
		l := swtest.New(b)
		var e *ike.Endpoint
		if err := netnsx.Do(l.NSEmu, func() (err error) {
			e, err = ike.Listen(ike.Options{Addr: swtest.EmuAddr, Handler: nopHandler{}, Log: quiet})
			return err
		}); err != nil {
			b.Fatal(err)
		}
		l.StartCharon(swtest.DefaultConf())
		c := provider("vpn", swtest.EmuAddr, swtest.CharonAddr, swtest.DefaultConf().PSK)
		c.LocalTS, c.RemoteTS = []netip.Prefix{swtest.VPCNet}, []netip.Prefix{swtest.OnpremNet}
		c.Initiate = true
		start := time.Now()
		e.Add(c)
		waitAll(b, e, 1)
		total += time.Since(start)
		e.Close()
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms/established")
}

// BenchmarkGateway_NConnections: one VPN gateway endpoint with N
// connections, N on-prem endpoints initiating at once; from the Adds to
// all N established on the gateway. ms/conn must stay flat as N grows.
func BenchmarkGateway_NConnections(b *testing.B) {
	for _, n := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) {
			gw := netip.MustParseAddr("127.0.0.1")
			var total time.Duration
			for b.Loop() {
				port := uint16(20000 + rand.IntN(20000))
				g := listen(b, gw, port)
				peers := make([]*ike.Endpoint, n)
				for i := range peers {
					peers[i] = listen(b, netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), port)
				}
				start := time.Now()
				for i, p := range peers {
					addr := netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)})
					name := fmt.Sprintf("vpn%d", i)
					g.Add(provider(name, gw, addr, "bench-psk"))
					c := provider(name, addr, gw, "bench-psk")
					c.Initiate = true
					p.Add(c)
				}
				waitAll(b, g, n)
				total += time.Since(start)
				for _, p := range peers {
					p.Close()
				}
				g.Close()
			}
			ms := float64(total.Microseconds()) / float64(b.N) / 1000
			b.ReportMetric(ms, "ms/all-established")
			b.ReportMetric(ms/float64(n), "ms/conn")
		})
	}
}

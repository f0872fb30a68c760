// Package failover measures, per configuration method, how long traffic
// stops when the tunnel breaks and when it is repaired, with a probe stream
// of 100 echoes a second (each lost probe is 10 ms of outage):
//
//	go test -run '^$' -bench Failover -benchtime 1x ./bench/failover
//
// Targets (issue 4): under 3.5 s with BGP hold 3 s, under 1 s with the
// health check.
package failover

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/fault"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/probe"
)

func TestMain(m *testing.M) { labtest.Main(m) }

var ecs = netip.MustParseAddr("172.16.2.10")

// outage streams probes for d, running action after lead, and returns the
// longest run of lost probes.
func outage(b *testing.B, ns string, lead, d time.Duration, action func() error) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	go func() {
		time.Sleep(lead)
		if err := action(); err != nil {
			b.Error(err)
		}
	}()
	res, err := probe.Stream(ctx, ns, ecs, 10*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s", res)
	return res.Outage
}

func BenchmarkFailover(b *testing.B) {
	for _, scenario := range []string{"static-healthcheck.yaml", "static-bgp.yaml", "bgp.yaml"} {
		b.Run(scenario, func(b *testing.B) {
			l := labtest.Deploy(b, scenario)
			tun := l.Topology.Node("onprem").Tunnels[0]
			onprem := l.NS("onprem")
			var down, up time.Duration
			for range b.N {
				down += outage(b, l.NS("client"), time.Second, 10*time.Second, func() error {
					return fault.TunnelDown(onprem, tun.Name, tun.Local, tun.Remote)
				})
				up += outage(b, l.NS("client"), time.Second, 10*time.Second, func() error {
					return fault.TunnelUp(onprem, tun.Name)
				})
			}
			b.ReportMetric(float64(down.Milliseconds())/float64(b.N), "failover-ms")
			b.ReportMetric(float64(up.Milliseconds())/float64(b.N), "recovery-ms")
		})
	}
}

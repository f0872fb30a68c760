package checks

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/topology"
)

// ipv4Frame is an Ethernet frame carrying an IPv4 packet src → dst with
// the given TTL and payload.
func ipv4Frame(src, dst netip.Addr, ttl byte, payload string) []byte {
	f := make([]byte, 14+20+len(payload))
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, ttl, 17
	ip[2], ip[3] = byte((20+len(payload))>>8), byte(20+len(payload))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	copy(ip[20:], payload)
	return f
}

// What the failover row says of the wire comes from the frames counted,
// not from the method: the same counter reports requests lost in the
// tunnel (DPD off) and requests crossing in clear with replies looping at
// the VPN gateway (DPD on).
func TestOutageWire_DescribesEachDirectionFromTheFrames(t *testing.T) {
	client, ecs := netip.MustParseAddr("10.1.0.10"), netip.MustParseAddr("172.16.2.10")
	vbr := &topology.Node{Name: "vbr", Roles: topology.Roles{PrivatePath: true}}
	gw := &topology.Node{Name: "vpngw"}
	nodeOf := map[string]*topology.Node{"ns-vbr": vbr, "ns-vpngw": gw}
	marker := "emu-marker-1234"

	var leaking []capture.Packet
	for range 2 {
		leaking = append(leaking, capture.Packet{NS: "ns-vbr", Interface: "eth1", Data: ipv4Frame(client, ecs, 63, marker)})
	}
	for ttl := byte(62); ttl > 58; ttl-- { // one reply looping: the same bytes after the IP header
		leaking = append(leaking, capture.Packet{NS: "ns-vpngw", Interface: "eth1", Data: ipv4Frame(ecs, client, ttl, "reply-1")})
	}
	leaking = append(leaking, capture.Packet{NS: "ns-vpngw", Interface: "eth1", Data: ipv4Frame(ecs, client, 62, "reply-2")})
	leaking = append(leaking, capture.Packet{NS: "ns-vpngw", Interface: "eth1", Outgoing: true, Data: ipv4Frame(ecs, client, 61, "reply-2")})
	w := outageWire{udpSent: 2, udpArrived: 2, pings: 2}
	w.count(leaking, nodeOf, client, ecs, gw, []byte(marker))
	got := w.describe("client", "ecs", "vpngw")
	for _, want := range []string{
		"one-way traffic still arrives, in clear: requests reach ecs over Express Connect + CEN (2 of 2 UDP datagrams from client arrived; 2 frames client → ecs in clear on vbr:eth1, marker in 2)",
		"replies are routed to the VPN gateway vpngw and lost (2 replies arrived there as 5 frames, each 2 times on average: looping until their TTL ran out; none on the private path)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("evidence lacks %q:\n%s", want, got)
		}
	}

	// Negative control: nothing in clear, nothing arrived.
	w = outageWire{udpSent: 2, pings: 2}
	w.count([]capture.Packet{{NS: "ns-vbr", Interface: "eth1", Data: ipv4Frame(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("172.16.1.10"), 63, "esp?")}}, nodeOf, client, ecs, gw, []byte(marker))
	got = w.describe("client", "ecs", "vpngw")
	if want := "requests do not reach ecs (0 of 2 UDP datagrams arrived, none in clear on the private path)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// FuzzIPPayload feeds the loop counter's header walk arbitrary frames, as
// any host on a captured link may send them: it must never panic, and what
// it returns lies inside the frame, after a header of the announced size.
func FuzzIPPayload(f *testing.F) {
	f.Add(ipv4Frame(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 64, "payload"))
	f.Add(ipv6Frame(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p, ok := ipPayload(frame)
		if !ok {
			return
		}
		if len(frame) < 14+20 || len(p) > len(frame)-14-20 {
			t.Fatalf("payload of %d bytes from a frame of %d", len(p), len(frame))
		}
	})
}

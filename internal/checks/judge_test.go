package checks

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/capture"
)

// ipv6Frame is an Ethernet frame carrying an IPv6 UDP packet src → dst.
func ipv6Frame(src, dst netip.Addr) []byte {
	f := make([]byte, 14+40+8)
	f[12], f[13] = 0x86, 0xdd
	ip := f[14:]
	ip[0] = 0x60
	ip[5] = 8  // payload length
	ip[6] = 17 // UDP
	ip[7] = 64
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return f
}

// A dual-stack host's IPv6 address in clear on the private path is a leak,
// as its IPv4 address is.
func TestJudge_InnerIPv6AddressesInClear_CountAsLeak(t *testing.T) {
	client, ecs := netip.MustParseAddr("fd00:1::10"), netip.MustParseAddr("fd00:172:2::10")
	inner := map[netip.Addr]string{client: "client", ecs: "ecs", netip.MustParseAddr("10.1.0.10"): "client"}
	v := judge([]capture.Packet{{NS: "emu-x-vbr", Interface: "eth1", Data: ipv6Frame(client, ecs)}}, map[netip.Addr]bool{}, inner, []byte("marker"))
	if v.innerFrames != 1 || v.firstLeak == "" {
		t.Fatalf("verdict %+v: want the IPv6 frame counted as inner addresses in clear", v)
	}
}

// With no ESP seen, the summary says "0 ESP" and no empty list of pairs
// and SPIs ("0 ESP (; SPI )" before).
func TestJudge_NoESP_SummaryHasNoEmptyLists(t *testing.T) {
	client, ecs := netip.MustParseAddr("fd00:1::10"), netip.MustParseAddr("fd00:172:2::10")
	v := judge([]capture.Packet{{NS: "emu-x-vbr", Interface: "eth1", Data: ipv6Frame(client, ecs)}}, map[netip.Addr]bool{}, map[netip.Addr]string{client: "client"}, []byte("marker"))
	if s := v.summary(); !strings.HasPrefix(s, "1 frames, 0 ESP, 1 with inner addresses") {
		t.Errorf("summary %q", s)
	}
}

// A dual-stack private path's routers check each other by unicast neighbour
// solicitations between global addresses: not traffic between sites.
func TestJudge_UnicastNeighbourDiscovery_IsNotOtherTraffic(t *testing.T) {
	ns := ipv6Frame(netip.MustParseAddr("fd00:10::1"), netip.MustParseAddr("fd00:10::2"))
	ns[14+6], ns[14+40] = 58, 135 // ICMPv6 neighbour solicitation
	udp := ipv6Frame(netip.MustParseAddr("fd00:10::1"), netip.MustParseAddr("fd00:10::2"))
	v := judge([]capture.Packet{{Data: ns}, {Data: udp}}, map[netip.Addr]bool{}, map[netip.Addr]string{}, []byte("marker"))
	if v.otherIP != 1 {
		t.Fatalf("verdict %+v: want only the UDP frame counted as other traffic", v)
	}
}

func FuzzIsND(f *testing.F) {
	f.Add(ipv6Frame(netip.MustParseAddr("fd00:10::1"), netip.MustParseAddr("fd00:10::2")))
	f.Fuzz(func(t *testing.T, frame []byte) { isND(frame) })
}

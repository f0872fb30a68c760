package trace

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// icmp4 builds an IPv4 ICMP packet from src to dst of the given type and
// code, quoting an IPv4 header qsrc → qdst and 8 bytes after it.
func icmp4(src, dst, qsrc, qdst netip.Addr, typ, code uint8) []byte {
	quoted := make([]byte, 28)
	quoted[0], quoted[9] = 0x45, 1
	copy(quoted[12:], qsrc.AsSlice())
	copy(quoted[16:], qdst.AsSlice())
	pkt := make([]byte, 20+8+len(quoted))
	pkt[0], pkt[8], pkt[9] = 0x45, 64, 1
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	copy(pkt[12:], src.AsSlice())
	copy(pkt[16:], dst.AsSlice())
	pkt[20], pkt[21] = typ, code
	copy(pkt[28:], quoted)
	return pkt
}

// icmp6 is icmp4 for IPv6 (RFC 4443).
func icmp6(src, dst, qsrc, qdst netip.Addr, typ, code uint8) []byte {
	quoted := make([]byte, 48)
	quoted[0], quoted[6] = 0x60, 58
	copy(quoted[8:], qsrc.AsSlice())
	copy(quoted[24:], qdst.AsSlice())
	pkt := make([]byte, 40+8+len(quoted))
	pkt[0], pkt[6], pkt[7] = 0x60, 58, 64
	binary.BigEndian.PutUint16(pkt[4:], uint16(8+len(quoted)))
	copy(pkt[8:], src.AsSlice())
	copy(pkt[24:], dst.AsSlice())
	pkt[40], pkt[41] = typ, code
	copy(pkt[48:], quoted)
	return pkt
}

func TestQuotedError_NamesSenderTypeCodeAndTheQuotedPacket(t *testing.T) {
	a := netip.MustParseAddr
	gw, ecs, client := a("172.16.1.10"), a("172.16.2.10"), a("10.1.0.10")
	for _, c := range []struct {
		name string
		pkt  []byte
		want string // "" when not an ICMP error
	}{
		{"v4 time exceeded", icmp4(gw, ecs, ecs, client, 11, 0), "ICMP time exceeded (type 11, code 0) from 172.16.1.10 about 172.16.2.10 → 10.1.0.10"},
		{"v4 port unreachable", icmp4(gw, client, client, ecs, 3, 3), "ICMP destination unreachable (type 3, code 3) from 172.16.1.10 about 10.1.0.10 → 172.16.2.10"},
		{"v6 time exceeded", icmp6(a("fd00::1"), a("fd00::2"), a("fd00::2"), a("fd00::3"), 3, 0), "ICMP time exceeded (type 3, code 0) from fd00::1 about fd00::2 → fd00::3"},
		{"v4 echo reply", icmp4(ecs, client, ecs, client, 0, 0), ""},
		{"v6 echo request", icmp6(a("fd00::1"), a("fd00::2"), a("fd00::2"), a("fd00::3"), 128, 0), ""},
		{"v4 ICMP header cut", icmp4(gw, ecs, ecs, client, 11, 0)[:24], ""},
	} {
		got := ""
		if e := quotedError(c.pkt); e != nil {
			got = e.String()
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

// "Last seen" is the probe's own last hop, even when an ICMP error about
// it travelled further (method 1 with the tunnel down: the reply dies
// looping at the VPN gateway, whose time exceeded reaches the ECS).
func TestDied_LastSeenIsTheProbeNotTheICMPErrorAboutIt(t *testing.T) {
	a := netip.MustParseAddr
	e := &ICMPError{From: a("172.16.1.10"), Type: 11, Name: "time exceeded", AboutSrc: a("172.16.2.10"), AboutDst: a("10.1.0.10")}
	hops := []Hop{
		{Node: "client", Action: Sends}, {Node: "ecs", Action: Receives}, {Node: "ecs", Action: Sends}, {Node: "vpngw", Action: Drops},
		{Node: "vpngw", Action: Sends, ICMPError: e, Time: time.Now()}, {Node: "vpc", Action: Forwards, ICMPError: e}, {Node: "ecs", Action: Receives, ICMPError: e},
	}
	got := Died(hops)
	want := "last seen at vpngw (drops); vpngw sent ICMP time exceeded (type 11, code 0) from 172.16.1.10 about 172.16.2.10 → 10.1.0.10, ecs received it"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := Died(nil); !strings.Contains(got, "no frame of it was seen") {
		t.Errorf("no hops: %q", got)
	}
}

// FuzzQuotedError feeds the ICMP error reader arbitrary packets, as any
// host on a link can send them: it must never panic, and it names only
// ICMP or ICMPv6 packets of an error type.
func FuzzQuotedError(f *testing.F) {
	a := netip.MustParseAddr
	f.Add(icmp4(a("10.0.0.1"), a("10.0.0.2"), a("10.0.0.2"), a("10.0.0.3"), 11, 0))
	f.Add(icmp6(a("fd00::1"), a("fd00::2"), a("fd00::2"), a("fd00::3"), 1, 4))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		e := quotedError(pkt)
		if e == nil {
			return
		}
		v4 := pkt[0]>>4 == 4 && pkt[9] == 1 && icmp4Errors[e.Type] != ""
		v6 := pkt[0]>>4 == 6 && pkt[6] == 58 && icmp6Errors[e.Type] != ""
		if !v4 && !v6 {
			t.Fatalf("called an ICMP error: % x", pkt)
		}
	})
}

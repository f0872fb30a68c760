package probe

import (
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// FuzzEchoReply feeds the parser of ping, the probe stream and the
// monitors' DPD and health-check replies arbitrary ICMP bytes, as any host
// may send them: it must never panic, and what it accepts is an echo reply
// of the right family whose ID, sequence number and data are those bytes.
func FuzzEchoReply(f *testing.F) {
	for _, m := range []icmp.Message{
		{Type: ipv4.ICMPTypeEchoReply, Body: &icmp.Echo{ID: 1, Seq: 2, Data: []byte("emu-stream")}},
		{Type: ipv6.ICMPTypeEchoReply, Body: &icmp.Echo{ID: 1, Seq: 2, Data: []byte("emu-monitor")}},
		{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 1, Seq: 2}},
	} {
		b, err := m.Marshal(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Type == ipv6.ICMPTypeEchoReply, b)
	}
	f.Add(false, []byte{0})
	f.Fuzz(func(t *testing.T, v6 bool, b []byte) {
		proto, want := 1, byte(ipv4.ICMPTypeEchoReply)
		if v6 {
			proto, want = 58, byte(ipv6.ICMPTypeEchoReply)
		}
		echo, ok := EchoReply(proto, b)
		if !ok {
			return
		}
		if b[0] != want {
			t.Fatalf("accepted ICMP type %d as an echo reply", b[0])
		}
		if len(b) < 8 || echo.ID != int(b[4])<<8|int(b[5]) || echo.Seq != int(b[6])<<8|int(b[7]) || string(echo.Data) != string(b[8:]) {
			t.Fatalf("echo %+v does not match the bytes % x", echo, b)
		}
	})
}

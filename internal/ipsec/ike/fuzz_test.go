package ike

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FuzzParse feeds arbitrary datagrams to the parser, which faces the
// network: it must never panic, and what it accepts must re-encode into
// something it accepts again with the same payloads. The seed corpus holds
// emu's own messages and, in testdata/strongswan, datagrams charon sent in
// TestStrongSwan_* (written there when EMU_IKE_CAPTURE is set).
func FuzzParse(f *testing.F) {
	h, ps := sampleInit()
	f.Add(Marshal(h, ps))
	seeds, _ := filepath.Glob("testdata/strongswan/*.bin")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ps, err := Parse(b)
		if err != nil {
			return
		}
		for _, p := range ps {
			if _, ok := p.(*Encrypted); ok {
				return // its content is opaque here; FuzzHandle covers it
			}
		}
		again := Marshal(h, ps)
		_, ps2, err := Parse(again)
		if err != nil || len(ps2) != len(ps) {
			t.Fatalf("re-encoded message: %v (%d payloads, had %d)", err, len(ps2), len(ps))
		}
	})
}

// FuzzHandle feeds arbitrary datagrams to a responder endpoint as if they
// came from its configured peer, on either port: hostile bytes must never
// crash it, and whatever it drops is counted.
func FuzzHandle(f *testing.F) {
	h, ps := sampleInit()
	f.Add(Marshal(h, ps), false)
	seeds, _ := filepath.Glob("testdata/strongswan/*.bin")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b, false)
		}
	}
	cfg := baseConfig(addrA, addrB)
	// Each fuzz worker is its own process with its own endpoint.
	var e *Endpoint
	var err error
	for try := 0; e == nil; try++ {
		port := uint16(20000 + rand.IntN(40000))
		if e, err = Listen(Options{Addr: addrA, IKEPort: port, NATTPort: port + 1}); err != nil && try > 10 {
			f.Fatal(err)
		}
	}
	defer e.Close()
	if err := e.Add(cfg); err != nil {
		f.Fatal(err)
	}
	from := netip.AddrPortFrom(addrB, e.opt.IKEPort)
	f.Fuzz(func(t *testing.T, b []byte, natt bool) {
		before := e.Counters()
		done := make(chan struct{})
		e.do(func() { e.receive(b, from, natt); close(done) })
		<-done
		after := e.Counters()
		if after.Received != before.Received+1 {
			t.Fatalf("message not counted: %+v -> %+v", before, after)
		}
		if _, _, err := Parse(b); err != nil && after.Malformed != before.Malformed+1 {
			t.Fatalf("malformed message not counted as malformed: %v", err)
		}
	})
}

// espRecorder is an ESPSink keeping copies of what it was handed.
type espRecorder struct{ pkts [][]byte }

func (r *espRecorder) ESP(_ netip.AddrPort, pkt []byte) { r.pkts = append(r.pkts, bytes.Clone(pkt)) }
func (r *espRecorder) Flush()                           {}

// FuzzNATTSplit feeds the NAT-T socket's read path a datagram as a GRO read
// returns it, b with segment size size: the split must give back b whole,
// in segments of size but the last, and each segment is demultiplexed on
// its own: ESP (non-zero first word) to the sink, a NAT keepalive dropped,
// anything under 4 bytes counted malformed, the rest to the IKE loop.
func FuzzNATTSplit(f *testing.F) {
	esp := func(n int) []byte { b := bytes.Repeat([]byte{0xee}, n); b[0] = 1; return b }
	marker := append(make([]byte, 4), Marshal(sampleInit())...)
	f.Add(slices.Concat(esp(100), esp(100), esp(60)), 100) // the last segment short
	f.Add(esp(300), 0)                                     // not coalesced: no UDP_GRO control message
	f.Add(esp(300), 1000)                                  // gso_size beyond the datagram
	f.Add(slices.Concat(esp(len(marker)), marker, esp(len(marker))), len(marker))
	f.Add([]byte{0xff, 1, 2, 3, 0, 0, 0}, 1) // keepalive, short ones
	f.Fuzz(func(t *testing.T, b []byte, size int) {
		rec := &espRecorder{}
		e := &Endpoint{opt: Options{ESP: rec}, events: make(chan func()), done: make(chan struct{})}
		close(e.done) // IKE messages are dropped, not run
		var got []byte
		var wantESP [][]byte
		var wantMalformed uint64
		n := 0
		for seg := range segments(b, size) {
			if len(seg) == 0 || (size > 0 && len(seg) > size) {
				t.Fatalf("segment %d of %d bytes (size %d)", n, len(seg), size)
			}
			if size > 0 && len(got)+len(seg) < len(b) && len(seg) != size {
				t.Fatalf("segment %d of %d bytes before the last (size %d)", n, len(seg), size)
			}
			got = append(got, seg...)
			switch {
			case len(seg) == 1 && seg[0] == 0xff:
			case len(seg) >= 4 && binary.BigEndian.Uint32(seg) != 0:
				wantESP = append(wantESP, seg)
			case len(seg) < 4:
				wantMalformed++
			}
			e.nattDatagram(netip.AddrPortFrom(addrB, 4500), seg)
			n++
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("segments of %d bytes joined give %d bytes", len(b), len(got))
		}
		if len(rec.pkts) != len(wantESP) {
			t.Fatalf("%d ESP packets handed over, want %d", len(rec.pkts), len(wantESP))
		}
		for i := range wantESP {
			if !bytes.Equal(rec.pkts[i], wantESP[i]) {
				t.Fatalf("ESP packet %d differs", i)
			}
		}
		if c := e.Counters(); c.Malformed != wantMalformed {
			t.Fatalf("%d malformed counted, want %d", c.Malformed, wantMalformed)
		}
	})
}

// groSize reads the gso_size the kernel puts in a UDP_GRO control message
// and nothing from a control buffer without one.
func TestGROSize_ParsesTheKernelsControlMessage(t *testing.T) {
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], 1452)
	if got := groSize(oob); got != 1452 {
		t.Fatalf("gso_size %d, want 1452", got)
	}
	h.Type = unix.UDP_SEGMENT
	if got := groSize(oob); got != 0 {
		t.Fatalf("gso_size %d from a control message of another type", got)
	}
	if got := groSize(oob[:5]); got != 0 {
		t.Fatalf("gso_size %d from a truncated buffer", got)
	}
}

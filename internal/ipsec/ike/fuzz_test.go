package ike

import (
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
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

package ike

import (
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

package userspace

import (
	"encoding/binary"
	"testing"

	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// A batch leaves with its sequence numbers in order, empty slots skipped,
// every packet opens at the peer, and each packet's outer DF bit is its own
// inner one, read before encryption overwrote it.
func TestSeal_Batch_InSequenceWithEachPacketsOwnDF(t *testing.T) {
	for _, alg := range []esp.Algorithm{esp.AESGCM128, esp.AESCBCSHA1} {
		t.Run(alg.String(), func(t *testing.T) {
			cfg := esp.Config{SPI: 0x5ea1, Algorithm: alg, EncKey: make([]byte, alg.EncKeyLen()), AuthKey: make([]byte, alg.AuthKeyLen()), ReplayWindow: 64}
			out, err := esp.NewOutbound(cfg)
			if err != nil {
				t.Fatal(err)
			}
			in, err := esp.NewInbound(cfg)
			if err != nil {
				t.Fatal(err)
			}
			tx := &txPath{out: out, payloadOffset: alg.PayloadOffset()}
			const n = 48
			b := newSendBatch(n)
			for i := range n {
				b.sizes[i] = 0
				if i == 5 || i == 17 { // empty slots, as the tun package leaves
					continue
				}
				pkt := b.bufs[i][sendHeadroom : sendHeadroom+100+i]
				pkt[0] = 0x45
				if i%3 == 0 {
					pkt[6] = 0x40 // DF
				}
				binary.BigEndian.PutUint32(pkt[16:20], uint32(i)) // marks the packet
				b.sizes[i] = len(pkt)
			}
			want := uint32(1)
			for round := range 2 {
				b.seal(tx, n)
				for i, wire := range b.wire[:n] {
					if b.sizes[i] == 0 {
						if wire != nil {
							t.Fatalf("empty slot %d sealed", i)
						}
						continue
					}
					if seq := binary.BigEndian.Uint32(wire[4:8]); seq != want {
						t.Fatalf("round %d packet %d: sequence number %d, want %d", round, i, seq, want)
					}
					want++
					inner, _, err := in.Open(nil, wire)
					if err != nil {
						t.Fatalf("packet %d: %v", i, err)
					}
					if got := binary.BigEndian.Uint32(inner[16:20]); got != uint32(i) || len(inner) != 100+i {
						t.Fatalf("slot %d opened as packet %d of %d bytes", i, got, len(inner))
					}
					if b.df[i] != (i%3 == 0) {
						t.Fatalf("packet %d: outer DF %v, inner DF %v", i, b.df[i], i%3 == 0)
					}
					// The next round seals the same inner packets again.
					copy(b.bufs[i][sendHeadroom:], inner)
				}
			}
		})
	}
}

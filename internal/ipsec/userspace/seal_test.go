package userspace

import (
	"encoding/binary"
	"testing"

	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// A batch sealed on the send loop and a seal worker at once leaves with its
// sequence numbers in order, every packet opens at the peer, and each
// packet's outer DF bit is its own inner one (read before encryption).
func TestSeal_BatchSplitAmongWorkers_LeavesInSequenceWithItsOwnDF(t *testing.T) {
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
			d := &Dataplane{closing: make(chan struct{}), sealJobs: make(chan sealJob), sealWorkers: 2}
			for range d.sealWorkers {
				d.wg.Add(1)
				go d.sealWorker()
			}
			defer func() { close(d.closing); d.wg.Wait() }()
			tx := &txPath{out: out, payloadOffset: alg.PayloadOffset()}
			const n = 3 * parallelSealMin
			b := newSendBatch(n + 2)
			for i := range n + 2 {
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
			for round := range 2 {
				d.seal(b, tx, n+2)
				want := uint32(round*n + 1)
				for i, wire := range b.wire[:n+2] {
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

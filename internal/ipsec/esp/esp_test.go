package esp

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestParseAlgorithm_KnownNames_RoundTripThroughString(t *testing.T) {
	for _, alg := range allAlgorithms() {
		got, err := ParseAlgorithm(alg.String())
		if err != nil || got != alg {
			t.Errorf("ParseAlgorithm(%q) = %v, %v", alg.String(), got, err)
		}
	}
	var zero Algorithm
	if zero != AESGCM128 {
		t.Errorf("zero Algorithm is %v, want the default aes-gcm-128", zero)
	}
}

func TestParseAlgorithm_Unknown_ErrorListsKnownNames(t *testing.T) {
	_, err := ParseAlgorithm("aes-gcm-256")
	if err == nil || !strings.Contains(err.Error(), "aes-cbc-sha256") {
		t.Fatalf("err = %v, want one listing the known names", err)
	}
}

func TestAlgorithm_XFRMMetadata_MatchesKernelNames(t *testing.T) {
	tests := []struct {
		alg      Algorithm
		xfrm     XFRM
		enc, aut int
	}{
		{AESGCM128, XFRM{AEAD: "rfc4106(gcm(aes))", AEADICVBits: 128}, 20, 0},
		{AESCBCSHA1, XFRM{Crypt: "cbc(aes)", Auth: "hmac(sha1)", AuthTruncBits: 96}, 16, 20},
		{AESCBCSHA256, XFRM{Crypt: "cbc(aes)", Auth: "hmac(sha256)", AuthTruncBits: 128}, 16, 32},
		{CBCAlgorithm(AES192, MD5), XFRM{Crypt: "cbc(aes)", Auth: "hmac(md5)", AuthTruncBits: 96}, 24, 16},
		{CBCAlgorithm(AES256, SHA384), XFRM{Crypt: "cbc(aes)", Auth: "hmac(sha384)", AuthTruncBits: 192}, 32, 48},
		{CBCAlgorithm(TripleDES, SHA512), XFRM{Crypt: "cbc(des3_ede)", Auth: "hmac(sha512)", AuthTruncBits: 256}, 24, 64},
		{CBCAlgorithm(DES, SHA1), XFRM{Crypt: "cbc(des)", Auth: "hmac(sha1)", AuthTruncBits: 96}, 8, 20},
	}
	for _, tt := range tests {
		if got := tt.alg.XFRM(); got != tt.xfrm {
			t.Errorf("%v.XFRM() = %+v, want %+v", tt.alg, got, tt.xfrm)
		}
		if tt.alg.EncKeyLen() != tt.enc || tt.alg.AuthKeyLen() != tt.aut {
			t.Errorf("%v key lengths = %d, %d, want %d, %d", tt.alg, tt.alg.EncKeyLen(), tt.alg.AuthKeyLen(), tt.enc, tt.aut)
		}
		// The ICV the kernel is told about is the one on the wire.
		bits := tt.xfrm.AEADICVBits + tt.xfrm.AuthTruncBits
		if suites[tt.alg].icvLen*8 != bits {
			t.Errorf("%v: wire ICV %d bytes, kernel told %d bits", tt.alg, suites[tt.alg].icvLen, bits)
		}
	}
}

func TestNewOutbound_BadConfig_ErrorNamesSAAndFix(t *testing.T) {
	good := testConfig(AESCBCSHA1, 0x1234)
	good.Src, good.Dst = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"SPI zero", func(c *Config) { c.SPI = 0 }, "SPI 0 is reserved"},
		{"unknown algorithm", func(c *Config) { c.Algorithm = Algorithm(len(suites)) }, "unknown algorithm"},
		{"short encryption key", func(c *Config) { c.EncKey = c.EncKey[:15] }, "EncKey is 15 bytes, want 16"},
		{"GCM key without salt", func(c *Config) { c.Algorithm, c.AuthKey = AESGCM128, nil }, "EncKey is 16 bytes, want 20"},
		{"auth key on AEAD", func(c *Config) { c.Algorithm, c.EncKey = AESGCM128, make([]byte, 20) }, "AuthKey is 20 bytes, want 0"},
		{"short auth key", func(c *Config) { c.AuthKey = c.AuthKey[:12] }, "AuthKey is 12 bytes, want 20"},
		{"negative window", func(c *Config) { c.ReplayWindow = -1 }, "ReplayWindow -1"},
		{"huge window", func(c *Config) { c.ReplayWindow = MaxReplayWindow + 1 }, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mutate(&c)
			for _, err := range []error{errOf(NewOutbound(c)), errOf(NewInbound(c))} {
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "192.0.2.1->198.51.100.1") {
					t.Errorf("err = %v, want it to name the SA and contain %q", err, tt.want)
				}
			}
		})
	}
}

func errOf[T any](_ T, err error) error { return err }

func TestSealOpen_EveryAlgorithmEveryLength_RoundTripsWithRFCPadding(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			c := testConfig(alg, 0x1000)
			out, in := newPair(t, c)
			align := suites[alg].align
			for n := 0; n <= 1500; n++ {
				inner := payload(n)
				nh := byte(4 + n%2*37) // IPv4 and IPv6 alternately
				pkt, err := out.Seal(nil, inner, nh)
				if err != nil {
					t.Fatal(err)
				}
				if len(pkt) != alg.SealedLen(n) {
					t.Fatalf("n=%d: len %d, SealedLen says %d", n, len(pkt), alg.SealedLen(n))
				}
				// What the kernel would decrypt: payload, 1,2,3... padding to
				// the alignment and no further, pad length, next header.
				if plain, want := uncraft(t, c, pkt), append(inner, trailer(n, align, nh)...); !bytes.Equal(plain, want) {
					t.Fatalf("n=%d: plaintext %x\nwant %x", n, plain, want)
				}
				got, gotNH, err := in.Open(nil, pkt)
				if err != nil {
					t.Fatalf("n=%d: Open: %v", n, err)
				}
				if !bytes.Equal(got, inner) || gotNH != nh {
					t.Fatalf("n=%d: Open returned %d bytes, next header %d", n, len(got), gotNH)
				}
			}
			if s := in.Stats(); s.Packets != 1501 || s.Bytes != 1500*1501/2 || s.Seq != 1501 {
				t.Errorf("inbound stats %+v", s)
			}
			if s := out.Stats(); s.Packets != 1501 || s.Bytes != 1500*1501/2 || s.Seq != 1501 {
				t.Errorf("outbound stats %+v", s)
			}
		})
	}
}

func TestSeal_AppendsToDst_AndInnerMayShareTheBuffer(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newPair(t, testConfig(alg, 0x2000))
			inner := payload(333)

			prefix := []byte("outer header")
			pkt, err := out.Seal(bytes.Clone(prefix), inner, 4)
			if err != nil || !bytes.HasPrefix(pkt, prefix) {
				t.Fatalf("Seal kept prefix? %q, %v", pkt[:len(prefix)], err)
			}
			if got, _, err := in.Open(nil, pkt[len(prefix):]); err != nil || !bytes.Equal(got, inner) {
				t.Fatalf("Open after append: %v", err)
			}

			// A TUN reader leaves headroom and reads the inner packet after it.
			buf := make([]byte, max(alg.SealedLen(len(inner)), 40+len(inner)))
			copy(buf[40:], inner)
			pkt, err = out.Seal(buf[:0], buf[40:40+len(inner)], 4)
			if err != nil {
				t.Fatal(err)
			}
			if &pkt[0] != &buf[0] {
				t.Fatal("Seal reallocated although dst had room")
			}
			if got, _, err := in.Open(nil, pkt); err != nil || !bytes.Equal(got, inner) {
				t.Fatalf("Open of in-place sealed packet: %v", err)
			}
		})
	}
}

func TestOpen_TamperedByte_DroppedAndCounted(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			s := suites[alg]
			out, in := newPair(t, testConfig(alg, 0x3000))
			var pkt []byte
			for range 5 { // a sequence number that no single bit flip turns into 0
				pkt, _ = out.Seal(nil, payload(100), 4)
			}
			icvOff := len(pkt) - s.icvLen
			regions := []struct {
				name     string
				from, to int
				want     error
			}{
				{"SPI", 0, 4, ErrSPI},
				{"sequence number", 4, 8, ErrAuth},
				{"IV", 8, 8 + s.ivLen, ErrAuth},
				{"ciphertext", 8 + s.ivLen, icvOff, ErrAuth},
				{"ICV", icvOff, len(pkt), ErrAuth},
			}
			var wantAuth, wantOther uint64
			for _, r := range regions {
				for i := r.from; i < r.to; i++ {
					bad := bytes.Clone(pkt)
					bad[i] ^= 0x01
					got, _, err := in.Open(nil, bad)
					if !errors.Is(err, r.want) || got != nil {
						t.Fatalf("%s byte %d flipped: err %v, want %v", r.name, i, err, r.want)
					}
					if r.want == ErrAuth {
						wantAuth++
					} else {
						wantOther++
					}
				}
			}
			if st := in.Stats(); st.AuthFailures != wantAuth || st.Errors != wantOther || st.Packets != 0 || st.Seq != 0 {
				t.Fatalf("stats %+v, want %d auth failures and %d other errors", st, wantAuth, wantOther)
			}
			// None of the forgeries moved the window: the real packet still opens.
			if _, _, err := in.Open(nil, pkt); err != nil {
				t.Fatalf("genuine packet after forgeries: %v", err)
			}
		})
	}
}

func TestOpen_TruncatedPacket_DroppedAndCounted(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newPair(t, testConfig(alg, 0x3100))
			pkt, _ := out.Seal(nil, payload(64), 4)
			// One byte short breaks block alignment for CBC, the tag for GCM.
			oneShort := ErrMisaligned
			if alg == AESGCM128 {
				oneShort = ErrAuth
			}
			tests := []struct {
				name string
				n    int
				want error
			}{
				{"empty", 0, ErrShort},
				{"header only", 8, ErrShort},
				{"no body", 8 + suites[alg].ivLen + suites[alg].icvLen, ErrShort},
				{"one byte short", len(pkt) - 1, oneShort},
				{"one block short", len(pkt) - 16, ErrAuth},
			}
			for _, tt := range tests {
				if _, _, err := in.Open(nil, pkt[:tt.n]); !errors.Is(err, tt.want) {
					t.Errorf("%s (%d bytes): err %v, want %v", tt.name, tt.n, err, tt.want)
				}
			}
			if st := in.Stats(); st.AuthFailures+st.Errors != uint64(len(tests)) || st.Packets != 0 {
				t.Fatalf("stats %+v, want %d drops", st, len(tests))
			}
		})
	}
}

func TestOpen_AuthenticButBadPadding_DroppedWithoutMovingWindow(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			c := testConfig(alg, 0x3200)
			in, err := NewInbound(c)
			if err != nil {
				t.Fatal(err)
			}
			s := suites[alg]
			iv := make([]byte, s.ivLen)
			inner := payload(30)
			good := append(bytes.Clone(inner), trailer(len(inner), s.align, 4)...)
			tests := []struct {
				name  string
				plain []byte
			}{
				{"pad length beyond plaintext", append(bytes.Clone(good[:len(good)-2]), 200, 4)},
				{"padding bytes not 1,2,3", func() []byte {
					p := bytes.Clone(good)
					p[len(inner)] = 9
					return p
				}()},
			}
			for _, tt := range tests {
				if _, _, err := in.Open(nil, craft(t, c, 7, iv, tt.plain)); !errors.Is(err, ErrPadding) {
					t.Errorf("%s: err %v, want ErrPadding", tt.name, err)
				}
			}
			if st := in.Stats(); st.Errors != uint64(len(tests)) || st.Seq != 0 {
				t.Fatalf("stats %+v", st)
			}
			if got, _, err := in.Open(nil, craft(t, c, 7, iv, good)); err != nil || !bytes.Equal(got, inner) {
				t.Fatalf("well-padded packet with the same sequence number: %v", err)
			}
		})
	}
}

func TestOpen_WrongSPI_DroppedAndCounted(t *testing.T) {
	out, _ := newPair(t, testConfig(AESGCM128, 0x4000))
	_, in := newPair(t, testConfig(AESGCM128, 0x4001))
	pkt, _ := out.Seal(nil, payload(20), 4)
	if _, _, err := in.Open(nil, pkt); !errors.Is(err, ErrSPI) {
		t.Fatalf("err %v, want ErrSPI", err)
	}
	if st := in.Stats(); st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOpen_SamePacketTwice_SecondDroppedAndCounted(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newPair(t, testConfig(alg, 0x5000))
			pkt, _ := out.Seal(nil, payload(60), 4)
			if _, _, err := in.Open(nil, pkt); err != nil {
				t.Fatal(err)
			}
			if got, _, err := in.Open(nil, pkt); !errors.Is(err, ErrReplay) || got != nil {
				t.Fatalf("replay: err %v", err)
			}
			if st := in.Stats(); st.ReplayDrops != 1 || st.Packets != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// sealMany returns packets[i] carrying sequence number i (packets[0] is nil).
func sealMany(t testing.TB, out *Outbound, n int) [][]byte {
	pkts := make([][]byte, n+1)
	for i := 1; i <= n; i++ {
		var err error
		if pkts[i], err = out.Seal(nil, payload(i%50), 4); err != nil {
			t.Fatal(err)
		}
	}
	return pkts
}

func TestOpen_ReplayWindow_AcceptsReorderedRejectsOldAndDuplicate(t *testing.T) {
	for _, window := range []int{0, 32, 64, 100, 1024, MaxReplayWindow} {
		size := window
		if size == 0 {
			size = DefaultReplayWindow
		}
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			c := testConfig(AESGCM128, 0x6000)
			c.ReplayWindow = window
			out, in := newPair(t, c)
			top := size + 100
			pkts := sealMany(t, out, top)
			steps := []struct {
				seq  int
				want error
			}{
				{top, nil},
				{top - 1, nil},              // reordered, inside the window
				{top - size + 1, nil},       // oldest position the window holds
				{top - size, ErrReplay},     // just outside
				{1, ErrReplay},              // far outside
				{top - 1, ErrReplay},        // duplicate inside the window
				{top - size/2, nil},         // middle of the window
				{top - size/2, ErrReplay},   // and its duplicate
				{top - size + 1, ErrReplay}, // duplicate at the edge
			}
			for _, st := range steps {
				if _, _, err := in.Open(nil, pkts[st.seq]); !errors.Is(err, st.want) {
					t.Fatalf("seq %d (top %d, window %d): err %v, want %v", st.seq, top, size, err, st.want)
				}
			}
			if s := in.Stats(); s.ReplayDrops != 5 || s.Packets != 4 || s.Seq != uint32(top) {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestOpen_ForgedPacketFarAhead_DoesNotAdvanceWindow(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newPair(t, testConfig(alg, 0x7000))
			pkts := sealMany(t, out, 200)
			forged := bytes.Clone(pkts[200])
			forged[len(forged)-1] ^= 0xff
			if _, _, err := in.Open(nil, forged); !errors.Is(err, ErrAuth) {
				t.Fatalf("forged: err %v, want ErrAuth", err)
			}
			// Had the forgery moved the window to 200, seq 1 would be too old.
			if _, _, err := in.Open(nil, pkts[1]); err != nil {
				t.Fatalf("seq 1 after forged seq 200: %v", err)
			}
			if s := in.Stats(); s.Seq != 1 || s.AuthFailures != 1 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestOpen_SequenceZero_Rejected(t *testing.T) {
	c := testConfig(AESGCM128, 0x7100)
	_, in := newPair(t, c)
	pkt := craft(t, c, 0, make([]byte, 8), append(payload(8), trailer(8, 4, 4)...))
	if _, _, err := in.Open(nil, pkt); !errors.Is(err, ErrReplay) {
		t.Fatalf("err %v, want ErrReplay: without ESN sequence number 0 is never sent", err)
	}
}

func TestSeal_SequenceExhausted_RefusesAndCounts(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newPair(t, testConfig(alg, 0x8000))
			out.seq.Store(math.MaxUint32 - 1)
			last, err := out.Seal(nil, payload(10), 4)
			if err != nil {
				t.Fatalf("last sequence number: %v", err)
			}
			if _, _, err := in.Open(nil, last); err != nil {
				t.Fatalf("open seq 2^32-1: %v", err)
			}
			for range 2 {
				if pkt, err := out.Seal(nil, payload(10), 4); !errors.Is(err, ErrSeqExhausted) || pkt != nil {
					t.Fatalf("after 2^32-1: err %v", err)
				}
			}
			if s := out.Stats(); s.Seq != math.MaxUint32 || s.Packets != 1 || s.Errors != 2 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestSeal_GCMIVs_UniqueAndNotTheBareSequence(t *testing.T) {
	out, _ := newPair(t, testConfig(AESGCM128, 0x8100))
	seen := map[string]bool{}
	for range 1000 {
		pkt, _ := out.Seal(nil, nil, 4)
		iv := string(pkt[8:16])
		if seen[iv] {
			t.Fatalf("IV %x repeated", iv)
		}
		seen[iv] = true
	}
	if out.ivMask == 0 {
		t.Fatal("IV mask not drawn")
	}
}

func TestSeal_CBCIVs_UniquePerPacketAndPerSA(t *testing.T) {
	c := testConfig(AESCBCSHA256, 0x8200)
	a, _ := newPair(t, c)
	b, _ := newPair(t, c)
	seen := map[string]bool{}
	for range 500 {
		for _, o := range []*Outbound{a, b} {
			pkt, _ := o.Seal(nil, nil, 4)
			iv := string(pkt[8:24])
			if seen[iv] {
				t.Fatalf("IV %x repeated", iv)
			}
			seen[iv] = true
		}
	}
}

func TestSealOpen_ConcurrentUse_EverySequenceOnceEveryPacketAccepted(t *testing.T) {
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			c := testConfig(alg, 0x9000)
			c.ReplayWindow = MaxReplayWindow // senders race, so arrival order is loose
			out, in := newPair(t, c)
			const workers, each = 8, 200
			pkts := make(chan []byte, workers*each)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						pkt, err := out.Seal(nil, payload(80), 4)
						if err != nil {
							t.Error(err)
							return
						}
						pkts <- pkt
					}
				})
			}
			wg.Wait()
			close(pkts)
			var all [][]byte
			for p := range pkts {
				all = append(all, p, p) // every packet twice: one copy must be dropped
			}
			for w := range workers {
				wg.Go(func() {
					for i := w; i < len(all); i += workers {
						in.Open(nil, all[i])
					}
				})
			}
			wg.Wait()
			if s := in.Stats(); s.Packets != workers*each || s.ReplayDrops != workers*each || s.Seq != workers*each {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestSealOpen_WarmBuffers_DoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	for _, alg := range allAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			out, in := newPair(t, testConfig(alg, 0xa000))
			inner := payload(1400)
			buf := make([]byte, 0, 2048)
			if n := testing.AllocsPerRun(100, func() { out.Seal(buf, inner, 4) }); n != 0 {
				t.Errorf("Seal: %v allocations per packet", n)
			}
			pkts := sealMany(t, out, 200)
			i := 0
			if n := testing.AllocsPerRun(100, func() {
				i++
				if _, _, err := in.Open(buf, pkts[i]); err != nil {
					t.Fatal(err)
				}
			}); n != 0 {
				t.Errorf("Open: %v allocations per packet", n)
			}
		})
	}
}

func TestAlgorithm_OutOfRange_ZeroMetadataInsteadOfPanic(t *testing.T) {
	bad := Algorithm(len(suites))
	if bad.XFRM() != (XFRM{}) || bad.EncKeyLen() != 0 || bad.AuthKeyLen() != 0 || bad.SealedLen(100) != 0 {
		t.Errorf("metadata for %v is not zero", bad)
	}
	if bad.String() != fmt.Sprintf("Algorithm(%d)", len(suites)) {
		t.Errorf("String() = %q", bad.String())
	}
}

func TestString_NamesSAButNeverItsKeys(t *testing.T) {
	c := testConfig(AESCBCSHA256, 0xc0ffee)
	c.Src, c.Dst = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	out, in := newPair(t, c)
	for _, s := range []interface {
		String() string
		SPI() uint32
	}{out, in} {
		str := s.String()
		if s.SPI() != 0xc0ffee || !strings.Contains(str, "spi=0x00c0ffee 2001:db8::1->2001:db8::2 aes-cbc-sha256") {
			t.Errorf("String() = %q, SPI() = %#x", str, s.SPI())
		}
		for _, key := range [][]byte{c.EncKey, c.AuthKey} {
			if strings.Contains(str, string(key)) || strings.Contains(str, fmt.Sprintf("%x", key[:4])) {
				t.Errorf("String() %q shows key material", str)
			}
		}
	}
}

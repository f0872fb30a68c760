package ike

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"fmt"
	"math/big"
	"strings"
	"testing"
)

// TestPiFixed_MatchesKnownHexDigits: the primes are built from pi, so pi
// must be right to the last bit used.
func TestPiFixed_MatchesKnownHexDigits(t *testing.T) {
	got := fmt.Sprintf("%X", piFixed(128))
	if want := "3243F6A8885A308D313198A2E0370734"; !strings.HasPrefix(got, want) || len(got) != 33 {
		t.Fatalf("pi*2^128 = %s, want %s?", got, want)
	}
}

// TestMODPGroupsAreSafePrimes checks each group of RFC 2409 §6 / RFC 3526:
// the modulus and (p-1)/2 are prime (a wrong k or pi bit would not be),
// and the hex printed in the RFCs starts and ends as computed.
func TestMODPGroupsAreSafePrimes(t *testing.T) {
	ends := map[uint16]string{
		1:  "A63A3620FFFFFFFFFFFFFFFF",
		2:  "49286651ECE65381FFFFFFFFFFFFFFFF",
		5:  "CA237327FFFFFFFFFFFFFFFF",
		14: "15728E5A8AACAA68FFFFFFFFFFFFFFFF",
	}
	for id, end := range ends {
		g, err := modpGroup(id)
		if err != nil {
			t.Fatal(err)
		}
		hex := fmt.Sprintf("%X", g.p)
		if !strings.HasPrefix(hex, "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1") || !strings.HasSuffix(hex, end) {
			t.Errorf("group %d: p = %s...%s", id, hex[:48], hex[len(hex)-32:])
		}
		if g.p.BitLen() != g.size*8 {
			t.Errorf("group %d: %d bits, want %d", id, g.p.BitLen(), g.size*8)
		}
		q := new(big.Int).Rsh(g.p, 1)
		if !g.p.ProbablyPrime(8) || !q.ProbablyPrime(8) {
			t.Errorf("group %d: p or (p-1)/2 is not prime", id)
		}
	}
}

func TestDH_BothSidesAgree_AndRefuseDegenerateValues(t *testing.T) {
	for _, id := range []uint16{1, 2, 5, 14} {
		g, _ := modpGroup(id)
		a, _ := g.generate()
		b, _ := g.generate()
		sa, err := a.shared(b.public)
		if err != nil {
			t.Fatal(err)
		}
		sb, _ := b.shared(a.public)
		if !bytes.Equal(sa, sb) || len(sa) != g.size {
			t.Fatalf("group %d: shared secrets differ", id)
		}
		one := make([]byte, g.size)
		one[g.size-1] = 1
		if _, err := a.shared(one); err == nil {
			t.Fatalf("group %d: accepted public value 1", id)
		}
		if _, err := a.shared(b.public[1:]); err == nil {
			t.Fatalf("group %d: accepted a short public value", id)
		}
	}
}

// TestPRFPlus_FollowsRFC7296Section2_13 recomputes T1 | T2 by hand.
func TestPRFPlus_FollowsRFC7296Section2_13(t *testing.T) {
	f, _ := newPRF(PRFHMACSHA1)
	key, seed := []byte("key"), []byte("seed")
	h := func(data []byte) []byte { m := hmac.New(sha1.New, key); m.Write(data); return m.Sum(nil) }
	t1 := h(append(append([]byte{}, seed...), 1))
	t2 := h(append(append(append([]byte{}, t1...), seed...), 2))
	want := append(t1, t2...)[:30]
	if got := f.plus(key, seed, 30); !bytes.Equal(got, want) {
		t.Fatalf("prf+ = %x, want %x", got, want)
	}
}

func TestSKPayload_SealOpen_EverySuite_AndTamperDetected(t *testing.T) {
	suites := []struct{ encr, bits, integ uint16 }{
		{EncrAESCBC, 128, IntegHMACSHA196}, {EncrAESCBC, 256, IntegHMACSHA256128},
		{EncrAESCBC, 192, IntegHMACSHA512256}, {Encr3DES, 0, IntegHMACMD596},
		{EncrDES, 0, IntegHMACSHA384192}, {EncrAESGCM16, 128, 0}, {EncrAESGCM16, 256, 0},
	}
	for _, s := range suites {
		cs, err := newCipherSuite(s.encr, s.bits, s.integ)
		if err != nil {
			t.Fatal(err)
		}
		ek, ik := bytes.Repeat([]byte{7}, cs.keyLen), bytes.Repeat([]byte{9}, cs.integKeyLen())
		for _, n := range []int{0, 1, 15, 16, 100} {
			plain := bytes.Repeat([]byte{0xab}, n)
			aad := []byte("header-and-sk-generic-header")
			msg, err := cs.seal(ek, ik, aad, plain)
			if err != nil {
				t.Fatal(err)
			}
			if len(msg)-len(aad) != cs.sealedLen(n) {
				t.Fatalf("%v: sealed %d bytes, sealedLen says %d", s, len(msg)-len(aad), cs.sealedLen(n))
			}
			got, err := cs.open(ek, ik, msg, msg[len(aad):])
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("%v n=%d: open: %v", s, n, err)
			}
			msg[len(msg)/2] ^= 1
			if _, err := cs.open(ek, ik, msg, msg[len(aad):]); err == nil {
				t.Fatalf("%v n=%d: tampered message opened", s, n)
			}
		}
	}
}

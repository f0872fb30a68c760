package ipsec

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/emu-lab/emu/internal/topology"
)

// hkdfSHA256 is RFC 5869 written out with crypto/hmac: the oracle the key
// derivation is checked against, independent of crypto/hkdf.
func hkdfSHA256(ikm, salt []byte, info string, n int) []byte {
	if salt == nil {
		salt = make([]byte, sha256.Size)
	}
	ext := hmac.New(sha256.New, salt)
	ext.Write(ikm)
	prk := ext.Sum(nil)
	var okm, prev []byte
	for i := byte(1); len(okm) < n; i++ {
		exp := hmac.New(sha256.New, prk)
		exp.Write(prev)
		exp.Write([]byte(info))
		exp.Write([]byte{i})
		prev = exp.Sum(nil)
		okm = append(okm, prev...)
	}
	return okm[:n]
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The oracle itself, against RFC 5869 appendix A.1.
func TestHKDFOracle_RFC5869TestCase1(t *testing.T) {
	ikm := unhex(t, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
	salt := unhex(t, "000102030405060708090a0b0c")
	info := string(unhex(t, "f0f1f2f3f4f5f6f7f8f9"))
	want := unhex(t, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
	if got := hkdfSHA256(ikm, salt, info, 42); !bytes.Equal(got, want) {
		t.Fatalf("oracle OKM = %x, want %x", got, want)
	}
}

func tunnelPair(key, cipher string) (onprem, vpngw *topology.Tunnel) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("172.16.1.10")
	return &topology.Tunnel{Name: "to-vpc", Local: a, Remote: b, Cipher: cipher, Key: key},
		&topology.Tunnel{Name: "to-onprem", Local: b, Remote: a, Cipher: cipher, Key: key}
}

// Keys and SPIs of each direction are HKDF-SHA256(master, info "emu esp
// SRC>DST"): encryption key, then authentication key, then 4 bytes for the
// SPI, which is kept clear of the reserved 1-255 (RFC 4303 §2.1).
func TestResolve_GivenKey_EachDirectionIsHKDFOfTheMasterKey(t *testing.T) {
	master := "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for _, c := range []struct {
		cipher        string
		encLen, auLen int
	}{{"aes-gcm-128", 20, 0}, {"aes-cbc-sha1", 16, 20}, {"aes-cbc-sha256", 16, 32}} {
		onprem, _ := tunnelPair(master, c.cipher)
		conn, err := (&Secrets{}).Resolve(onprem)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []struct {
			sa       SA
			src, dst string
		}{{conn.Out, "10.0.0.1", "172.16.1.10"}, {conn.In, "172.16.1.10", "10.0.0.1"}} {
			okm := hkdfSHA256(unhex(t, master), nil, "emu esp "+d.src+">"+d.dst, c.encLen+c.auLen+4)
			wantSPI := binary.BigEndian.Uint32(okm[c.encLen+c.auLen:])%(1<<31) + 0x1000
			if !bytes.Equal(d.sa.EncKey, okm[:c.encLen]) || !bytes.Equal(d.sa.AuthKey, okm[c.encLen:c.encLen+c.auLen]) || d.sa.SPI != wantSPI {
				t.Errorf("%s %s>%s: SA %+v, want enc %x auth %x spi %#x", c.cipher, d.src, d.dst, d.sa, okm[:c.encLen], okm[c.encLen:c.encLen+c.auLen], wantSPI)
			}
			if d.sa.SPI < 256 {
				t.Errorf("%s: reserved SPI %d", c.cipher, d.sa.SPI)
			}
		}
	}
}

// Both ends derive the same SAs independently: one's outbound is the
// other's inbound, and the two directions never share a key.
func TestResolve_BothEndsAgree_DirectionsDiffer(t *testing.T) {
	for _, key := range []string{topology.KeyGenerate, "aa55aa55aa55aa55aa55aa55aa55aa55"} {
		s := &Secrets{}
		onprem, vpngw := tunnelPair(key, "aes-gcm-128")
		a, err := s.Resolve(onprem)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Resolve(vpngw)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSA(a.Out, b.In) || !sameSA(a.In, b.Out) {
			t.Errorf("key %s: ends disagree: %+v / %+v", key, a, b)
		}
		if bytes.Equal(a.Out.EncKey, a.In.EncKey) || a.Out.SPI == a.In.SPI {
			t.Errorf("key %s: both directions share a key or SPI", key)
		}
	}
}

// "generate" draws a fresh master key per deploy: two deploys of the same
// topology never share keys.
func TestResolve_Generate_FreshKeysPerDeploy(t *testing.T) {
	onprem, _ := tunnelPair(topology.KeyGenerate, "aes-gcm-128")
	a, err := (&Secrets{}).Resolve(onprem)
	if err != nil {
		t.Fatal(err)
	}
	b, err := (&Secrets{}).Resolve(onprem)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Out.EncKey, b.Out.EncKey) {
		t.Fatal("two deploys derived the same key from \"generate\"")
	}
}

func sameSA(x, y SA) bool {
	return x.SPI == y.SPI && bytes.Equal(x.EncKey, y.EncKey) && bytes.Equal(x.AuthKey, y.AuthKey)
}

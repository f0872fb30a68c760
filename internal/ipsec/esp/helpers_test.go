package esp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"encoding/hex"
	"strings"
	"testing"
)

// unhex decodes hex written the way RFCs print it, with spaces and newlines.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

// testConfig returns a valid config with deterministic, direction-distinct keys.
func testConfig(alg Algorithm, spi uint32) Config {
	enc := make([]byte, alg.EncKeyLen())
	for i := range enc {
		enc[i] = byte(i*7 + int(spi))
	}
	auth := make([]byte, alg.AuthKeyLen())
	for i := range auth {
		auth[i] = byte(i*13 + 1)
	}
	return Config{SPI: spi, Algorithm: alg, EncKey: enc, AuthKey: auth}
}

// newPair returns both halves of one SA, as the two gateways would hold them.
func newPair(t testing.TB, c Config) (*Outbound, *Inbound) {
	t.Helper()
	out, err := NewOutbound(c)
	if err != nil {
		t.Fatal(err)
	}
	in, err := NewInbound(c)
	if err != nil {
		t.Fatal(err)
	}
	return out, in
}

// payload returns an n-byte inner packet whose bytes differ from padding.
func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(0xa5 ^ i)
	}
	return p
}

func allAlgorithms() []Algorithm { return Algorithms() }

// independentBlock is the block cipher of c built from the algorithm's name
// rather than from the suite table, so a wrong table entry shows.
func independentBlock(t testing.TB, c Config) cipher.Block {
	t.Helper()
	name := c.Algorithm.String()
	var b cipher.Block
	var err error
	switch {
	case c.Algorithm == AESGCM128:
		b, err = aes.NewCipher(c.EncKey[:16])
	case strings.HasPrefix(name, "3des-"):
		b, err = des.NewTripleDESCipher(c.EncKey)
	case strings.HasPrefix(name, "des-"):
		b, err = des.NewCipher(c.EncKey)
	default:
		bits := map[string]int{"aes": 128, "aes192": 192, "aes256": 256}[strings.Split(name, "-")[0]]
		if len(c.EncKey)*8 != bits {
			t.Fatalf("%s: %d-byte key", name, len(c.EncKey))
		}
		b, err = aes.NewCipher(c.EncKey)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// craft builds an ESP packet with the standard library alone, from a
// plaintext that already carries its padding and trailer. It is the
// independent construction Seal and Open are checked against.
func craft(t testing.TB, c Config, seq uint32, iv, plain []byte) []byte {
	t.Helper()
	block := independentBlock(t, c)
	pkt := []byte{byte(c.SPI >> 24), byte(c.SPI >> 16), byte(c.SPI >> 8), byte(c.SPI),
		byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
	pkt = append(pkt, iv...)
	if c.Algorithm == AESGCM128 {
		aead, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		nonce := append(bytes.Clone(c.EncKey[16:]), iv...)
		return aead.Seal(pkt, nonce, plain, pkt[:8])
	}
	ct := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, plain)
	pkt = append(pkt, ct...)
	return append(pkt, independentICV(c, pkt)...)
}

// independentICV is HMAC over SPI|seq|IV|ciphertext, truncated as RFC 2404
// and RFC 4868 say, computed with crypto/hmac directly.
func independentICV(c Config, authenticated []byte) []byte {
	s := suites[c.Algorithm]
	m := hmac.New(s.newHash, c.AuthKey)
	m.Write(authenticated)
	return m.Sum(nil)[:s.icvLen]
}

// uncraft decrypts a packet with the standard library alone and returns the
// plaintext with its padding and trailer, failing the test if the ICV does
// not verify.
func uncraft(t testing.TB, c Config, pkt []byte) []byte {
	t.Helper()
	s := suites[c.Algorithm]
	block := independentBlock(t, c)
	iv := pkt[8 : 8+s.ivLen]
	if c.Algorithm == AESGCM128 {
		aead, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := aead.Open(nil, append(bytes.Clone(c.EncKey[16:]), iv...), pkt[16:], pkt[:8])
		if err != nil {
			t.Fatalf("independent GCM open: %v", err)
		}
		return plain
	}
	end := len(pkt) - s.icvLen
	if want := independentICV(c, pkt[:end]); !bytes.Equal(pkt[end:], want) {
		t.Fatalf("ICV %x, independent HMAC says %x", pkt[end:], want)
	}
	plain := make([]byte, end-8-s.ivLen)
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, pkt[8+s.ivLen:end])
	return plain
}

// trailer returns the RFC 4303 padding, pad length and next header that
// follow an n-byte payload aligned to align.
func trailer(n, align int, nextHeader byte) []byte {
	var t []byte
	for i := 1; (n+len(t)+2)%align != 0; i++ {
		t = append(t, byte(i))
	}
	return append(t, byte(len(t)), nextHeader)
}

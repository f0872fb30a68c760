package ike

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"sync"
)

// Transform IDs (IANA "IKEv2 Parameters", RFC 7296 §3.3.2).
const (
	EncrDES      = 2
	Encr3DES     = 3
	EncrAESCBC   = 12
	EncrAESGCM16 = 20 // RFC 5282 (IKE), RFC 4106 (ESP)

	PRFHMACMD5    = 1
	PRFHMACSHA1   = 2
	PRFHMACSHA256 = 5
	PRFHMACSHA384 = 6
	PRFHMACSHA512 = 7

	IntegHMACMD596     = 1
	IntegHMACSHA196    = 2
	IntegHMACSHA256128 = 12
	IntegHMACSHA384192 = 13
	IntegHMACSHA512256 = 14

	ESNNone = 0
)

// hashes maps a PRF transform ID to its hash; INTEG IDs have their own map
// because the truncation differs.
var prfHashes = map[uint16]func() hash.Hash{
	PRFHMACMD5: md5.New, PRFHMACSHA1: sha1.New, PRFHMACSHA256: sha256.New,
	PRFHMACSHA384: sha512.New384, PRFHMACSHA512: sha512.New,
}

type integAlg struct {
	newHash func() hash.Hash
	trunc   int // ICV bytes
}

var integAlgs = map[uint16]integAlg{
	IntegHMACMD596:     {md5.New, 12},
	IntegHMACSHA196:    {sha1.New, 12},
	IntegHMACSHA256128: {sha256.New, 16},
	IntegHMACSHA384192: {sha512.New384, 24},
	IntegHMACSHA512256: {sha512.New, 32},
}

// prf is an IKEv2 pseudo-random function (RFC 7296 §2.13), always HMAC here.
type prf func(key, data []byte) []byte

func newPRF(id uint16) (prf, error) {
	h, ok := prfHashes[id]
	if !ok {
		return nil, fmt.Errorf("ike: unsupported PRF %d", id)
	}
	return func(key, data []byte) []byte {
		m := hmac.New(h, key)
		m.Write(data)
		return m.Sum(nil)
	}, nil
}

// plus is prf+ of RFC 7296 §2.13: T1 | T2 | ... with
// Tn = prf(K, Tn-1 | S | n), cut to n bytes.
func (f prf) plus(key, seed []byte, n int) []byte {
	out := make([]byte, 0, n+64)
	var t []byte
	for i := byte(1); len(out) < n; i++ {
		in := append(append(append([]byte{}, t...), seed...), i)
		t = f(key, in)
		out = append(out, t...)
		if i == 255 {
			break // RFC 7296 §2.13: at most 255 iterations
		}
	}
	return out[:n]
}

// cipherSuite is the SK payload protection of an IKE SA (RFC 7296 §3.14,
// RFC 5282 for AES-GCM): encryption with either an AEAD or a separate
// integrity algorithm.
type cipherSuite struct {
	encr   uint16
	keyLen int // encryption key bytes; for GCM including the 4-byte salt
	block  int // padding alignment and CBC IV size
	integ  integAlg
	aead   bool
}

const gcmSalt, gcmIV, gcmICV = 4, 8, 16

func newCipherSuite(encr, keyBits, integ uint16) (cipherSuite, error) {
	c := cipherSuite{encr: encr}
	switch encr {
	case EncrAESCBC, EncrAESGCM16:
		if keyBits != 128 && keyBits != 192 && keyBits != 256 {
			return c, fmt.Errorf("ike: AES key length %d", keyBits)
		}
		c.keyLen, c.block = int(keyBits)/8, aes.BlockSize
		if encr == EncrAESGCM16 {
			c.keyLen += gcmSalt
			c.aead = true
			return c, nil
		}
	case Encr3DES:
		c.keyLen, c.block = 24, des.BlockSize
	case EncrDES:
		c.keyLen, c.block = 8, des.BlockSize
	default:
		return c, fmt.Errorf("ike: unsupported encryption %d", encr)
	}
	ia, ok := integAlgs[integ]
	if !ok {
		return c, fmt.Errorf("ike: unsupported integrity %d", integ)
	}
	c.integ = ia
	return c, nil
}

func (c cipherSuite) integKeyLen() int {
	if c.aead {
		return 0
	}
	return c.integ.newHash().Size()
}

func (c cipherSuite) ivLen() int {
	if c.aead {
		return gcmIV
	}
	return c.block
}

func (c cipherSuite) icvLen() int {
	if c.aead {
		return gcmICV
	}
	return c.integ.trunc
}

func (c cipherSuite) newBlock(key []byte) (cipher.Block, error) {
	switch c.encr {
	case Encr3DES:
		return des.NewTripleDESCipher(key)
	case EncrDES:
		return des.NewCipher(key)
	}
	return aes.NewCipher(key)
}

var errICV = errors.New("ike: integrity check of the encrypted payload failed")

// seal builds the SK payload of a message: aad is the message from the IKE
// header through the SK payload's generic header (whose length fields
// already count what seal appends), and the result is aad followed by IV,
// ciphertext and ICV — the whole datagram.
func (c cipherSuite) seal(encKey, integKey, aad, plain []byte) ([]byte, error) {
	blk, err := c.newBlock(encKey[:c.keyLen-c.saltLen()])
	if err != nil {
		return nil, err
	}
	align := c.block
	if c.aead {
		align = 1 // RFC 5282 §3: no padding needed beyond the Pad Length octet
	}
	padLen := (align - (len(plain)+1)%align) % align
	body := make([]byte, 0, len(plain)+padLen+1)
	body = append(body, plain...)
	body = append(body, make([]byte, padLen)...)
	body = append(body, byte(padLen))
	iv := make([]byte, c.ivLen())
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	out := append(append([]byte{}, aad...), iv...)
	if c.aead {
		g, err := cipher.NewGCM(blk)
		if err != nil {
			return nil, err
		}
		nonce := append(append([]byte{}, encKey[c.keyLen-gcmSalt:]...), iv...)
		return g.Seal(out, nonce, body, aad), nil
	}
	ct := make([]byte, len(body))
	cipher.NewCBCEncrypter(blk, iv).CryptBlocks(ct, body)
	out = append(out, ct...)
	m := hmac.New(c.integ.newHash, integKey)
	m.Write(out)
	return m.Sum(out)[:len(out)+c.integ.trunc], nil
}

func (c cipherSuite) saltLen() int {
	if c.aead {
		return gcmSalt
	}
	return 0
}

// sealedLen is the SK payload body length for a plaintext of n bytes.
func (c cipherSuite) sealedLen(n int) int {
	if c.aead {
		return gcmIV + n + 1 + gcmICV
	}
	return c.block + (n+1+c.block-1)/c.block*c.block + c.integ.trunc
}

// open checks and decrypts an SK payload: msg is the whole datagram and
// body the SK payload's content within it.
func (c cipherSuite) open(encKey, integKey, msg, body []byte) ([]byte, error) {
	iv, icv := c.ivLen(), c.icvLen()
	if len(body) < iv+icv+1 {
		return nil, ErrTruncated
	}
	blk, err := c.newBlock(encKey[:c.keyLen-c.saltLen()])
	if err != nil {
		return nil, err
	}
	var plain []byte
	if c.aead {
		g, err := cipher.NewGCM(blk)
		if err != nil {
			return nil, err
		}
		aad := msg[:len(msg)-len(body)]
		nonce := append(append([]byte{}, encKey[c.keyLen-gcmSalt:]...), body[:iv]...)
		if plain, err = g.Open(nil, nonce, body[iv:], aad); err != nil {
			return nil, errICV
		}
	} else {
		m := hmac.New(c.integ.newHash, integKey)
		m.Write(msg[:len(msg)-icv])
		if subtle.ConstantTimeCompare(m.Sum(nil)[:icv], msg[len(msg)-icv:]) != 1 {
			return nil, errICV
		}
		ct := body[iv : len(body)-icv]
		if len(ct) == 0 || len(ct)%c.block != 0 {
			return nil, fmt.Errorf("%w: ciphertext of %d bytes", ErrSyntax, len(ct))
		}
		plain = make([]byte, len(ct))
		cipher.NewCBCDecrypter(blk, body[:iv]).CryptBlocks(plain, ct)
	}
	if len(plain) == 0 {
		return nil, ErrTruncated
	}
	pad := int(plain[len(plain)-1])
	if pad+1 > len(plain) {
		return nil, fmt.Errorf("%w: pad length %d", ErrSyntax, pad)
	}
	return plain[:len(plain)-1-pad], nil
}

// group is a MODP Diffie-Hellman group with generator 2.
type group struct {
	id   uint16
	p    *big.Int
	size int // modulus bytes: the KE payload's data length
}

// modpSpec is how RFC 2409 §6 and RFC 3526 define each prime:
// p = 2^n - 2^(n-64) - 1 + 2^64 * ( floor(2^(n-130) * pi) + k ).
// Computing them from pi instead of pasting hex means a typo cannot
// survive: TestMODPGroupsAreSafePrimes checks p and (p-1)/2 are prime.
var modpSpec = map[uint16]struct{ bits, k int64 }{
	1:  {768, 149686},  // RFC 2409 §6.1, First Oakley Group
	2:  {1024, 129093}, // RFC 2409 §6.2, Second Oakley Group
	5:  {1536, 741804}, // RFC 3526 §2
	14: {2048, 124476}, // RFC 3526 §3
}

var (
	groupsOnce sync.Once
	groups     map[uint16]*group
)

func modpGroup(id uint16) (*group, error) {
	groupsOnce.Do(func() {
		pi := piFixed(2048)
		groups = map[uint16]*group{}
		for gid, s := range modpSpec {
			n := s.bits
			p := new(big.Int).Lsh(big.NewInt(1), uint(n))
			p.Sub(p, new(big.Int).Lsh(big.NewInt(1), uint(n-64)))
			p.Sub(p, big.NewInt(1))
			// floor(2^(n-130) * pi) from pi scaled by 2^2048.
			t := new(big.Int).Rsh(pi, uint(2048-(n-130)))
			t.Add(t, big.NewInt(s.k))
			p.Add(p, t.Lsh(t, 64))
			groups[gid] = &group{id: gid, p: p, size: int(n / 8)}
		}
	})
	g, ok := groups[id]
	if !ok {
		return nil, fmt.Errorf("ike: unsupported DH group %d (supported: 1, 2, 5, 14)", id)
	}
	return g, nil
}

// piFixed returns floor(pi * 2^bits) by Machin's formula
// pi = 16 atan(1/5) - 4 atan(1/239), with guard bits against truncation.
func piFixed(bits uint) *big.Int {
	const guard = 64
	one := new(big.Int).Lsh(big.NewInt(1), bits+guard)
	atanInv := func(x int64) *big.Int {
		sum := new(big.Int)
		xx := big.NewInt(x * x)
		term := new(big.Int).Div(one, big.NewInt(x)) // 1/x^(2k+1), scaled
		for k := int64(0); term.Sign() != 0; k++ {
			q := new(big.Int).Div(term, big.NewInt(2*k+1))
			if k%2 == 0 {
				sum.Add(sum, q)
			} else {
				sum.Sub(sum, q)
			}
			term.Div(term, xx)
		}
		return sum
	}
	pi := new(big.Int).Mul(big.NewInt(16), atanInv(5))
	pi.Sub(pi, new(big.Int).Mul(big.NewInt(4), atanInv(239)))
	return pi.Rsh(pi, guard)
}

// dhKey is one side's ephemeral Diffie-Hellman key.
type dhKey struct {
	g      *group
	priv   *big.Int
	public []byte // g^x mod p, padded to the modulus length (RFC 7296 §3.4)
}

func (g *group) generate() (*dhKey, error) {
	// A 2x-security-level exponent (RFC 3526 §8 suggests 2x the strength),
	// capped at the modulus.
	bits := min(g.p.BitLen()-1, 512)
	x, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
	if err != nil {
		return nil, err
	}
	x.SetBit(x, bits-1, 1)
	y := new(big.Int).Exp(big.NewInt(2), x, g.p)
	return &dhKey{g: g, priv: x, public: y.FillBytes(make([]byte, g.size))}, nil
}

// shared computes g^ir from the peer's public value, refusing the
// degenerate values 0, 1 and p-1 (RFC 6989 §2.1 for MODP groups).
func (k *dhKey) shared(peer []byte) ([]byte, error) {
	if len(peer) != k.g.size {
		return nil, fmt.Errorf("ike: KE data of %d bytes for group %d (want %d)", len(peer), k.g.id, k.g.size)
	}
	y := new(big.Int).SetBytes(peer)
	pm1 := new(big.Int).Sub(k.g.p, big.NewInt(1))
	if y.Cmp(big.NewInt(1)) <= 0 || y.Cmp(pm1) >= 0 {
		return nil, fmt.Errorf("ike: degenerate DH public value for group %d", k.g.id)
	}
	return new(big.Int).Exp(y, k.priv, k.g.p).FillBytes(make([]byte, k.g.size)), nil
}

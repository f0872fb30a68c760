package esp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"strings"
)

// Algorithm is an ESP transform: the cipher, the integrity check and every
// length that follows from them. Algorithms lists them all: AES-GCM-128 and
// every CBC cipher × HMAC pair the provider's IpsecConfig allows (SPEC §10).
//
// The zero value is AESGCM128, the lab's default, so a Config that names no
// algorithm gets the one both backends are tested with first.
type Algorithm uint8

const (
	// AESGCM128 is rfc4106(gcm(aes)) with a 128-bit key, 8-byte explicit IV
	// and 16-byte ICV.
	AESGCM128 Algorithm = iota
	// AESCBCSHA1 is AES-128-CBC (RFC 3602) with HMAC-SHA1-96 (RFC 2404): the
	// provider's default pair.
	AESCBCSHA1
	// AESCBCSHA256 is AES-128-CBC with HMAC-SHA256-128 (RFC 4868).
	AESCBCSHA256
	// The other CBC pairs follow, Cipher by Cipher, Integrity by Integrity;
	// CBCAlgorithm finds one.
)

// Cipher is an ESP CBC encryption algorithm the provider allows.
type Cipher uint8

const (
	AES128    Cipher = iota // RFC 3602, provider "aes"
	AES192                  // RFC 3602, provider "aes192"
	AES256                  // RFC 3602, provider "aes256"
	DES                     // RFC 2405 (8-byte block and IV), provider "des"
	TripleDES               // RFC 2451 3DES-EDE, provider "3des"
	numCiphers
)

// Integrity is an ESP HMAC with its RFC truncation.
type Integrity uint8

const (
	MD5    Integrity = iota // HMAC-MD5-96, RFC 2403
	SHA1                    // HMAC-SHA1-96, RFC 2404
	SHA256                  // HMAC-SHA-256-128, RFC 4868
	SHA384                  // HMAC-SHA-384-192, RFC 4868
	SHA512                  // HMAC-SHA-512-256, RFC 4868
	numIntegrities
)

type cipherInfo struct {
	name    string // the provider's IpsecConfig.IpsecEncAlg value
	keyLen  int    // bytes
	block   int    // bytes; also the explicit IV length (RFC 3602 §3, RFC 2405 §5)
	newCiph func([]byte) (cipher.Block, error)
	xfrm    string
}

var ciphers = [numCiphers]cipherInfo{
	AES128:    {"aes", 16, aes.BlockSize, aes.NewCipher, "cbc(aes)"},
	AES192:    {"aes192", 24, aes.BlockSize, aes.NewCipher, "cbc(aes)"},
	AES256:    {"aes256", 32, aes.BlockSize, aes.NewCipher, "cbc(aes)"},
	DES:       {"des", 8, des.BlockSize, des.NewCipher, "cbc(des)"},
	TripleDES: {"3des", 24, des.BlockSize, des.NewTripleDESCipher, "cbc(des3_ede)"},
}

type integInfo struct {
	name    string // the provider's IpsecConfig.IpsecAuthAlg value
	newHash func() hash.Hash
	icvLen  int
	xfrm    string
}

var integrities = [numIntegrities]integInfo{
	MD5:    {"md5", md5.New, 12, "hmac(md5)"},
	SHA1:   {"sha1", sha1.New, 12, "hmac(sha1)"},
	SHA256: {"sha256", sha256.New, 16, "hmac(sha256)"},
	SHA384: {"sha384", sha512.New384, 24, "hmac(sha384)"},
	SHA512: {"sha512", sha512.New, 32, "hmac(sha512)"},
}

// XFRM spells an Algorithm the way the kernel's XFRM netlink API wants it, so
// the kernel backend can be programmed with the very keys this package uses
// and the two backends interoperate. Either AEAD is set, or Crypt and Auth.
//
// Auth must go in XFRMA_ALG_AUTH_TRUNC with AuthTruncBits: plain
// XFRMA_ALG_AUTH takes the kernel's default truncation, which for
// hmac(sha256) is the pre-RFC 4868 96 bits and would not interoperate.
type XFRM struct {
	AEAD          string // XFRMA_ALG_AEAD name; "" when the transform is not AEAD
	AEADICVBits   int    // xfrm_algo_aead.alg_icv_len
	Crypt         string // XFRMA_ALG_CRYPT name
	Auth          string // XFRMA_ALG_AUTH_TRUNC name
	AuthTruncBits int    // xfrm_algo_auth.alg_trunc_len
}

// suite holds everything that differs between algorithms, so the packet code
// has no per-algorithm branches beyond "AEAD or not".
type suite struct {
	name       string
	encKeyLen  int // for GCM this includes the 4-byte salt, as the kernel's AEAD key does
	authKeyLen int
	ivLen      int
	align      int // payload|padding|padlen|nexthdr is padded to a multiple of this
	icvLen     int
	newHash    func() hash.Hash // nil for AEAD
	newBlock   func([]byte) (cipher.Block, error)
	cipher     Cipher    // CBC only
	integ      Integrity // CBC only
	xfrm       XFRM
}

// gcmSaltLen is the RFC 4106 salt that trails the AES key in the keying material.
const gcmSaltLen = 4

var suites = buildSuites()

func cbcSuite(c Cipher, i Integrity) suite {
	ci, ii := &ciphers[c], &integrities[i]
	return suite{
		name:       ci.name + "-cbc-" + ii.name,
		encKeyLen:  ci.keyLen,
		authKeyLen: ii.newHash().Size(), // RFC 2104 key = hash output, RFC 2403/2404/4868
		ivLen:      ci.block,
		align:      ci.block,
		icvLen:     ii.icvLen,
		newHash:    ii.newHash,
		newBlock:   ci.newCiph,
		cipher:     c,
		integ:      i,
		xfrm:       XFRM{Crypt: ci.xfrm, Auth: ii.xfrm, AuthTruncBits: ii.icvLen * 8},
	}
}

// buildSuites keeps the first three values where they always were (they
// are in topology files and journals as names, in tests as constants) and
// appends every other CBC pair.
func buildSuites() []suite {
	out := []suite{
		AESGCM128: {
			name:      "aes-gcm-128",
			encKeyLen: 16 + gcmSaltLen,
			ivLen:     8,
			// The kernel aligns to ALIGN(crypto_aead_blocksize, 4) and GCM's block
			// size is 1, so the 4-byte minimum of RFC 4303 §2.4 applies.
			align:    4,
			icvLen:   16,
			newBlock: aes.NewCipher,
			xfrm:     XFRM{AEAD: "rfc4106(gcm(aes))", AEADICVBits: 128},
		},
		AESCBCSHA1:   cbcSuite(AES128, SHA1),
		AESCBCSHA256: cbcSuite(AES128, SHA256),
	}
	for c := range numCiphers {
		for i := range numIntegrities {
			if c == AES128 && (i == SHA1 || i == SHA256) {
				continue
			}
			out = append(out, cbcSuite(c, i))
		}
	}
	return out
}

// CBCAlgorithm is the Algorithm of cipher c with integrity i; every pair
// exists.
func CBCAlgorithm(c Cipher, i Integrity) Algorithm {
	for a := range suites {
		if s := &suites[a]; s.newHash != nil && s.cipher == c && s.integ == i {
			return Algorithm(a)
		}
	}
	panic(fmt.Sprintf("esp: no CBC algorithm %d/%d", c, i))
}

// ParseAlgorithm resolves a topology-file name such as "aes-gcm-128".
func ParseAlgorithm(s string) (Algorithm, error) {
	names := make([]string, 0, len(suites))
	for a := range Algorithm(len(suites)) {
		if suites[a].name == s {
			return a, nil
		}
		names = append(names, suites[a].name)
	}
	return 0, fmt.Errorf("unknown ESP algorithm %q (known: %s)", s, strings.Join(names, ", "))
}

func (a Algorithm) valid() bool { return int(a) < len(suites) }

// Algorithms lists every algorithm this package implements, the default
// first.
func Algorithms() []Algorithm {
	out := make([]Algorithm, len(suites))
	for i := range out {
		out[i] = Algorithm(i)
	}
	return out
}

func (a Algorithm) String() string {
	if !a.valid() {
		return fmt.Sprintf("Algorithm(%d)", uint8(a))
	}
	return suites[a].name
}

// XFRM returns the kernel's names for a; the zero XFRM for an invalid a.
func (a Algorithm) XFRM() XFRM {
	if !a.valid() {
		return XFRM{}
	}
	return suites[a].xfrm
}

// EncKeyLen is the length Config.EncKey must have. For AES-GCM it counts the
// 4-byte salt after the AES key, exactly the key blob the kernel takes.
func (a Algorithm) EncKeyLen() int {
	if !a.valid() {
		return 0
	}
	return suites[a].encKeyLen
}

// AuthKeyLen is the length Config.AuthKey must have: 0 for AEAD, otherwise
// the hash output size, as RFC 2403, 2404 and 4868 specify.
func (a Algorithm) AuthKeyLen() int {
	if !a.valid() {
		return 0
	}
	return suites[a].authKeyLen
}

// SealedLen is the length of the ESP packet (SPI through ICV, without the
// outer IP header) that Seal produces for an inner packet of n bytes, so
// callers can size buffers and derive tunnel MTUs.
func (a Algorithm) SealedLen(n int) int {
	if !a.valid() {
		return 0
	}
	s := &suites[a]
	return headerLen + s.ivLen + s.bodyLen(n) + s.icvLen
}

// PayloadOffset is where the inner packet starts in an ESP packet: after
// the SPI, the sequence number and the IV (RFC 4303 §2). A caller that reads
// an inner packet at this offset of a buffer hands Seal the buffer as dst
// and the inner packet as inner, and Seal encrypts it where it lies.
func (a Algorithm) PayloadOffset() int {
	if !a.valid() {
		return 0
	}
	return headerLen + suites[a].ivLen
}

// bodyLen is the encrypted part for an n-byte inner packet:
// payload|padding|padlen|nexthdr rounded up to the alignment.
func (s *suite) bodyLen(n int) int {
	return (n + trailerLen + s.align - 1) / s.align * s.align
}

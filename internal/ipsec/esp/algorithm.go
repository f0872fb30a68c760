package esp

import (
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"hash"
	"strings"
)

// Algorithm is an ESP transform: the cipher, the integrity check and every
// length that follows from them.
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

	numAlgorithms
)

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
	xfrm       XFRM
}

// aesKeyLen is the AES-128 key length shared by every algorithm here.
const aesKeyLen = 16

// gcmSaltLen is the RFC 4106 salt that trails the AES key in the keying material.
const gcmSaltLen = 4

var suites = [numAlgorithms]suite{
	AESGCM128: {
		name:      "aes-gcm-128",
		encKeyLen: aesKeyLen + gcmSaltLen,
		ivLen:     8,
		// The kernel aligns to ALIGN(crypto_aead_blocksize, 4) and GCM's block
		// size is 1, so the 4-byte minimum of RFC 4303 §2.4 applies.
		align:  4,
		icvLen: 16,
		xfrm:   XFRM{AEAD: "rfc4106(gcm(aes))", AEADICVBits: 128},
	},
	AESCBCSHA1: {
		name:       "aes-cbc-sha1",
		encKeyLen:  aesKeyLen,
		authKeyLen: sha1.Size,
		ivLen:      16,
		align:      16,
		icvLen:     12,
		newHash:    sha1.New,
		xfrm:       XFRM{Crypt: "cbc(aes)", Auth: "hmac(sha1)", AuthTruncBits: 96},
	},
	AESCBCSHA256: {
		name:       "aes-cbc-sha256",
		encKeyLen:  aesKeyLen,
		authKeyLen: sha256.Size,
		ivLen:      16,
		align:      16,
		icvLen:     16,
		newHash:    sha256.New,
		xfrm:       XFRM{Crypt: "cbc(aes)", Auth: "hmac(sha256)", AuthTruncBits: 128},
	},
}

// ParseAlgorithm resolves a topology-file name such as "aes-gcm-128".
func ParseAlgorithm(s string) (Algorithm, error) {
	names := make([]string, 0, numAlgorithms)
	for a := range numAlgorithms {
		if suites[a].name == s {
			return a, nil
		}
		names = append(names, suites[a].name)
	}
	return 0, fmt.Errorf("unknown ESP algorithm %q (known: %s)", s, strings.Join(names, ", "))
}

func (a Algorithm) valid() bool { return a < numAlgorithms }

// Algorithms lists every algorithm this package implements, the default
// first.
func Algorithms() []Algorithm {
	out := make([]Algorithm, numAlgorithms)
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
// the hash output size, as RFC 2404 and RFC 4868 specify.
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

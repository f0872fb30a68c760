// Package esp is a userspace ESP engine (RFC 4303 tunnel mode, RFC 4106
// AES-GCM, RFC 3602 AES-CBC with HMAC) for hosts whose kernel has XFRM but no
// ESP. Its packets are byte-compatible with the Linux kernel's esp4/esp6, so a
// gateway on the userspace backend talks to one on the kernel backend.
//
// The package knows nothing of sockets or TUN devices: Seal turns an inner IP
// packet into the bytes that follow the outer IP header, Open reverses it.
// Both are safe for concurrent use and allocate nothing once the caller's
// buffer is large enough, since they run once per packet.
package esp

import (
	"crypto/cipher"
	"crypto/hmac"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"sync"
	"sync/atomic"
)

const (
	headerLen  = 8 // SPI, sequence number
	trailerLen = 2 // pad length, next header

	// DefaultReplayWindow is what Config.ReplayWindow 0 means: the size
	// RFC 4303 §3.4.3 says SHOULD be the default.
	DefaultReplayWindow = 64
	// MaxReplayWindow bounds the bitmap; large windows only matter for
	// heavily reordering paths, which a lab does not have.
	MaxReplayWindow = 4096
)

// Errors returned by Seal and Open. They are values, not wrapped, so the
// per-packet path does not allocate; callers compare with errors.Is.
var (
	ErrShort        = errors.New("esp: packet too short for this SA")
	ErrMisaligned   = errors.New("esp: ciphertext is not a whole number of cipher blocks")
	ErrSPI          = errors.New("esp: packet SPI does not belong to this SA")
	ErrReplay       = errors.New("esp: sequence number replayed or older than the replay window")
	ErrAuth         = errors.New("esp: integrity check failed")
	ErrPadding      = errors.New("esp: invalid padding")
	ErrSeqExhausted = errors.New("esp: sequence numbers exhausted, the SA must be replaced")
)

// Config describes one SA, one direction. Use distinct keys per direction:
// GCM nonces are unique per SA, not across SAs that share a key.
type Config struct {
	SPI uint32
	// Src and Dst are the outer addresses; they only label errors and logs,
	// since the caller demultiplexes by SPI before calling Open.
	Src, Dst  netip.Addr
	Algorithm Algorithm
	EncKey    []byte // Algorithm.EncKeyLen bytes
	AuthKey   []byte // Algorithm.AuthKeyLen bytes
	// ReplayWindow is the inbound anti-replay window in packets; 0 means
	// DefaultReplayWindow. Anti-replay cannot be switched off.
	ReplayWindow int
}

func (c *Config) label() string {
	if !c.Src.IsValid() && !c.Dst.IsValid() {
		return fmt.Sprintf("ESP SA spi=0x%08x %v", c.SPI, c.Algorithm)
	}
	return fmt.Sprintf("ESP SA spi=0x%08x %v->%v %v", c.SPI, c.Src, c.Dst, c.Algorithm)
}

func (c *Config) validate() error {
	if !c.Algorithm.valid() {
		return fmt.Errorf("%s: unknown algorithm", c.label())
	}
	if c.SPI == 0 {
		// RFC 4303 §2.1: SPI 0 is reserved for local use and never sent.
		return fmt.Errorf("%s: SPI 0 is reserved (RFC 4303 §2.1); pick a nonzero SPI", c.label())
	}
	if want := c.Algorithm.EncKeyLen(); len(c.EncKey) != want {
		return fmt.Errorf("%s: EncKey is %d bytes, want %d", c.label(), len(c.EncKey), want)
	}
	if want := c.Algorithm.AuthKeyLen(); len(c.AuthKey) != want {
		return fmt.Errorf("%s: AuthKey is %d bytes, want %d", c.label(), len(c.AuthKey), want)
	}
	if c.ReplayWindow < 0 || c.ReplayWindow > MaxReplayWindow {
		return fmt.Errorf("%s: ReplayWindow %d out of range 0..%d", c.label(), c.ReplayWindow, MaxReplayWindow)
	}
	return nil
}

// Stats is a snapshot of an SA's counters.
type Stats struct {
	Packets      uint64 `json:"packets"`       // packets sealed, or opened and accepted
	Bytes        uint64 `json:"bytes"`         // inner packet bytes of those packets
	AuthFailures uint64 `json:"auth_failures"` // inbound packets whose ICV did not verify
	ReplayDrops  uint64 `json:"replay_drops"`  // inbound packets refused by the replay window
	Errors       uint64 `json:"errors"`        // every other refusal: short, misaligned, wrong SPI, padding, exhausted
	// Seq is the last sequence number sent (outbound) or the highest
	// accepted (inbound), as `ip xfrm state` shows it.
	Seq uint32 `json:"seq"`
}

type counters struct {
	packets, bytes, authFailures, replayDrops, errors atomic.Uint64
}

// count files err under the counter that names it and passes it through.
func (c *counters) count(err error) error {
	switch err {
	case ErrAuth:
		c.authFailures.Add(1)
	case ErrReplay:
		c.replayDrops.Add(1)
	default:
		c.errors.Add(1)
	}
	return err
}

func (c *counters) snapshot(seq uint32) Stats {
	return Stats{
		Packets:      c.packets.Load(),
		Bytes:        c.bytes.Load(),
		AuthFailures: c.authFailures.Load(),
		ReplayDrops:  c.replayDrops.Load(),
		Errors:       c.errors.Load(),
		Seq:          seq,
	}
}

// sa is the state both directions share: keys turned into ready-to-use
// cipher objects, and the counters.
type sa struct {
	label string
	spi   uint32
	suite *suite
	aead  cipher.AEAD // AES-GCM
	salt  [4]byte     // AES-GCM nonce prefix, RFC 4106 §4
	// scratch holds per-call buffers so that slices handed to interface
	// methods (which escape) do not cost an allocation per packet. HMAC
	// states and CBC modes are not goroutine-safe, which is why they live
	// here too.
	scratch sync.Pool
	stats   counters
}

type scratch struct {
	nonce [12]byte
	mac   hash.Hash
	sum   [64]byte
	cbc   cbcMode // this direction's CBC mode over the SA's cipher
}

// cbcMode is what crypto/cipher's CBC modes implement beyond BlockMode
// (crypto/tls relies on it too): SetIV restarts the chain, so one mode per
// pooled scratch serves every packet without an allocation. For AES,
// CryptBlocks runs the chain inside crypto/internal/fips140/aes, without
// the interface call and the length and overlap checks that Block.Encrypt
// repeats per block. That speeds up decryption, whose blocks are
// independent, by about a sixth; encryption is bound by the latency of
// the chain itself and gains little.
type cbcMode interface {
	cipher.BlockMode
	SetIV(iv []byte)
}

// newCBC is cipher.NewCBCEncrypter or cipher.NewCBCDecrypter: the direction
// of the SA's CBC modes.
type newCBC func(b cipher.Block, iv []byte) cipher.BlockMode

func newSA(c *Config, mode newCBC) (*sa, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	s := &sa{label: c.label(), spi: c.SPI, suite: &suites[c.Algorithm]}
	block, err := s.suite.newBlock(c.EncKey[:len(c.EncKey)-s.suite.saltLen()])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.label, err)
	}
	if s.suite.newHash == nil {
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("%s: %w", s.label, err)
		}
		copy(s.salt[:], c.EncKey[len(c.EncKey)-gcmSaltLen:])
		s.scratch.New = func() any { return new(scratch) }
		return s, nil
	}
	authKey, newHash := append([]byte(nil), c.AuthKey...), s.suite.newHash
	iv := make([]byte, block.BlockSize()) // replaced per packet by SetIV
	s.scratch.New = func() any {
		return &scratch{mac: hmac.New(newHash, authKey), cbc: mode(block, iv).(cbcMode)}
	}
	return s, nil
}

func (s *suite) saltLen() int {
	if s.newHash == nil {
		return gcmSaltLen
	}
	return 0
}

func (s *sa) getScratch() *scratch  { return s.scratch.Get().(*scratch) }
func (s *sa) putScratch(w *scratch) { s.scratch.Put(w) }

// icv computes the truncated HMAC over the authenticated part of a packet
// into w.sum.
func (s *sa) icv(w *scratch, authenticated []byte) []byte {
	w.mac.Reset()
	w.mac.Write(authenticated)
	return w.mac.Sum(w.sum[:0])[:s.suite.icvLen]
}

// nonce builds the RFC 4106 nonce salt|explicit IV in w.nonce.
func (s *sa) nonce(w *scratch, iv []byte) []byte {
	copy(w.nonce[:4], s.salt[:])
	copy(w.nonce[4:], iv)
	return w.nonce[:]
}

package esp

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"math"
	"slices"
	"sync/atomic"
)

// Outbound is the sending half of an SA.
type Outbound struct {
	*sa
	seq atomic.Uint64 // last sequence number handed out
	// ivMask makes GCM IVs unpredictable to observers while staying unique:
	// IV = seq XOR ivMask, which is what the kernel's seqiv template does.
	ivMask uint64
	// ivBlock derives CBC IVs by encrypting the sequence number under a
	// private random key of the SA's own cipher (NIST SP 800-38A appendix C):
	// unpredictable, unique, and one block instead of a getrandom call per
	// packet.
	ivBlock cipher.Block
}

// NewOutbound prepares c for sending. The first packet carries sequence
// number 1.
func NewOutbound(c Config) (*Outbound, error) {
	s, err := newSA(&c, cipher.NewCBCEncrypter)
	if err != nil {
		return nil, err
	}
	o := &Outbound{sa: s}
	if s.aead != nil {
		var b [8]byte
		rand.Read(b[:])
		o.ivMask = binary.BigEndian.Uint64(b[:])
		return o, nil
	}
	key := make([]byte, s.suite.encKeyLen)
	rand.Read(key)
	if o.ivBlock, err = s.suite.newBlock(key); err != nil {
		return nil, err
	}
	return o, nil
}

// Seal appends to dst the ESP packet carrying inner: SPI, sequence number,
// IV, encrypted inner|padding|padlen|nextHeader, ICV. nextHeader is the
// protocol of inner (4 for IPv4, 41 for IPv6 in tunnel mode).
//
// inner may lie in dst's spare capacity (for example right after room left
// for the ESP header): it is moved into place before anything is written.
// Seal allocates only when cap(dst)-len(dst) is below
// Algorithm.SealedLen(len(inner)).
func (o *Outbound) Seal(dst, inner []byte, nextHeader byte) ([]byte, error) {
	seq := o.seq.Add(1)
	if seq > math.MaxUint32 {
		// Without ESN the counter must not wrap (RFC 4303 §3.3.3); the kernel
		// refuses with EOVERFLOW at the same point.
		return nil, o.stats.count(ErrSeqExhausted)
	}
	s := o.suite
	body := s.bodyLen(len(inner))
	start := len(dst)
	dst = slices.Grow(dst, headerLen+s.ivLen+body+s.icvLen)
	pkt := dst[start : start+headerLen+s.ivLen+body+s.icvLen]

	bodyOff := headerLen + s.ivLen
	plain := pkt[bodyOff : bodyOff+body]
	n := copy(plain, inner)
	padLen := body - n - trailerLen
	for i := range padLen {
		plain[n+i] = byte(i + 1) // RFC 4303 §2.4 default padding
	}
	plain[body-2] = byte(padLen)
	plain[body-1] = nextHeader

	binary.BigEndian.PutUint32(pkt[0:4], o.spi)
	binary.BigEndian.PutUint32(pkt[4:8], uint32(seq))
	iv := pkt[headerLen:bodyOff]

	w := o.getScratch()
	if o.aead != nil {
		binary.BigEndian.PutUint64(iv, seq^o.ivMask)
		o.aead.Seal(plain[:0], o.nonce(w, iv), plain, pkt[:headerLen])
	} else {
		clear(iv)
		binary.BigEndian.PutUint64(iv[len(iv)-8:], seq)
		o.ivBlock.Encrypt(iv, iv)
		w.cbc.SetIV(iv)
		w.cbc.CryptBlocks(plain, plain)
		copy(pkt[bodyOff+body:], o.icv(w, pkt[:bodyOff+body]))
	}
	o.putScratch(w)

	o.stats.packets.Add(1)
	o.stats.bytes.Add(uint64(n))
	return dst[:start+len(pkt)], nil
}

// Resume makes the next packet carry sequence number last+1, for an SA that
// a restarted process takes over: the peer's replay window has moved past
// the numbers the previous process sent, and RFC 4303 §3.3.3 forbids
// sending one again. It never moves the counter back, and must be called
// before the first Seal.
func (o *Outbound) Resume(last uint64) {
	if last > o.seq.Load() {
		o.seq.Store(min(last, math.MaxUint32))
	}
}

// Stats returns a snapshot of the counters.
func (o *Outbound) Stats() Stats {
	return o.stats.snapshot(uint32(min(o.seq.Load(), math.MaxUint32)))
}

// SPI is the SA's security parameter index.
func (o *Outbound) SPI() uint32 { return o.spi }

func (o *Outbound) String() string { return o.label }

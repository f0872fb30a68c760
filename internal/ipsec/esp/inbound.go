package esp

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"slices"
)

// Inbound is the receiving half of an SA.
type Inbound struct {
	*sa
	replay *replayWindow
}

// NewInbound prepares c for receiving.
func NewInbound(c Config) (*Inbound, error) {
	s, err := newSA(&c, cipher.NewCBCDecrypter)
	if err != nil {
		return nil, err
	}
	w := c.ReplayWindow
	if w == 0 {
		w = DefaultReplayWindow
	}
	return &Inbound{sa: s, replay: newReplayWindow(w)}, nil
}

// Open checks and decrypts packet, the bytes after the outer IP header, and
// appends the inner packet to dst. nextHeader is the inner protocol the
// sender declared. dst must not overlap packet: CBC decryption panics if
// it does. On error the result is nil, the packet is counted, and nothing
// about the SA changes: a forged or replayed packet never moves the replay
// window.
func (in *Inbound) Open(dst, packet []byte) (out []byte, nextHeader byte, err error) {
	out, nextHeader, n, err := in.open(dst, packet)
	if err != nil {
		return nil, 0, in.stats.count(err)
	}
	in.stats.packets.Add(1)
	in.stats.bytes.Add(uint64(n))
	return out, nextHeader, nil
}

func (in *Inbound) open(dst, pkt []byte) (out []byte, nextHeader byte, n int, err error) {
	s := in.suite
	bodyOff := headerLen + s.ivLen
	body := len(pkt) - bodyOff - s.icvLen
	minBody := trailerLen
	if in.aead == nil {
		minBody = s.align
	}
	if body < minBody {
		return nil, 0, 0, ErrShort
	}
	if in.aead == nil && body%s.align != 0 {
		return nil, 0, 0, ErrMisaligned
	}
	if binary.BigEndian.Uint32(pkt[0:4]) != in.spi {
		return nil, 0, 0, ErrSPI
	}
	seq := uint64(binary.BigEndian.Uint32(pkt[4:8]))
	// Refusing known replays before the crypto saves the work (RFC 4303
	// §3.4.3); the window itself only moves after the ICV verified.
	if !in.replay.check(seq) {
		return nil, 0, 0, ErrReplay
	}

	start := len(dst)
	iv := pkt[headerLen:bodyOff]
	w := in.getScratch()
	if in.aead != nil {
		out, err = in.aead.Open(dst, in.nonce(w, iv), pkt[bodyOff:bodyOff+body+s.icvLen], pkt[:headerLen])
		in.putScratch(w)
		if err != nil {
			return nil, 0, 0, ErrAuth
		}
	} else {
		if subtle.ConstantTimeCompare(in.icv(w, pkt[:bodyOff+body]), pkt[bodyOff+body:]) != 1 {
			in.putScratch(w)
			return nil, 0, 0, ErrAuth
		}
		out = slices.Grow(dst, body)[:start+body]
		w.cbc.SetIV(iv)
		w.cbc.CryptBlocks(out[start:], pkt[bodyOff:bodyOff+body])
		in.putScratch(w)
	}

	plain := out[start:]
	padLen := int(plain[len(plain)-2])
	n = len(plain) - trailerLen - padLen
	if n < 0 {
		return nil, 0, 0, ErrPadding
	}
	for i, b := range plain[n : n+padLen] {
		if b != byte(i+1) {
			return nil, 0, 0, ErrPadding
		}
	}
	// Checked again under the window's lock: another goroutine may have
	// accepted the same sequence number while this one was decrypting.
	if !in.replay.accept(seq) {
		return nil, 0, 0, ErrReplay
	}
	return out[:start+n], plain[len(plain)-1], n, nil
}

// Resume treats every sequence number up to highest as already received,
// for an SA that a restarted process takes over: what the previous process
// accepted must not be accepted again (RFC 4303 §3.4.3). Call it before the
// first Open.
func (in *Inbound) Resume(highest uint64) {
	in.replay.resume(highest)
}

// Stats returns a snapshot of the counters.
func (in *Inbound) Stats() Stats {
	return in.stats.snapshot(uint32(in.replay.highest()))
}

// SPI is the SA's security parameter index.
func (in *Inbound) SPI() uint32 { return in.spi }

func (in *Inbound) String() string { return in.label }

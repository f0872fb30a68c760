// Package ike is emu's IKEv2 (RFC 7296) implementation: the message codec,
// the key schedule, proposal selection and the initiator/responder state
// machine of the provider's VPN gateway, producing CHILD SAs for the ESP
// engine.
//
// The codec is written here rather than taken from github.com/free5gc/ike:
// that module knows only DH groups 2 and 14, no AES-GCM and no 3DES/DES,
// while the provider allows groups 1/2/5/14 and des/3des/aes192/aes256
// (SPEC §10), and it drags in free5gc's logger.
package ike

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ExchangeType is the IKE header's exchange type (RFC 7296 §3.1).
type ExchangeType uint8

const (
	IKESAInit     ExchangeType = 34
	IKEAuth       ExchangeType = 35
	CreateChildSA ExchangeType = 36
	Informational ExchangeType = 37
)

func (e ExchangeType) String() string {
	switch e {
	case IKESAInit:
		return "IKE_SA_INIT"
	case IKEAuth:
		return "IKE_AUTH"
	case CreateChildSA:
		return "CREATE_CHILD_SA"
	case Informational:
		return "INFORMATIONAL"
	}
	return fmt.Sprintf("exchange(%d)", uint8(e))
}

// Header flags (RFC 7296 §3.1).
const (
	FlagInitiator = 0x08
	FlagVersion   = 0x10
	FlagResponse  = 0x20
)

// PayloadType is a payload's type in the Next Payload chain (RFC 7296 §3.2).
type PayloadType uint8

const (
	PayloadNone      PayloadType = 0
	PayloadSA        PayloadType = 33
	PayloadKE        PayloadType = 34
	PayloadIDi       PayloadType = 35
	PayloadIDr       PayloadType = 36
	PayloadCERT      PayloadType = 37
	PayloadCERTREQ   PayloadType = 38
	PayloadAUTH      PayloadType = 39
	PayloadNonce     PayloadType = 40
	PayloadNotify    PayloadType = 41
	PayloadDelete    PayloadType = 42
	PayloadVendor    PayloadType = 43
	PayloadTSi       PayloadType = 44
	PayloadTSr       PayloadType = 45
	PayloadEncrypted PayloadType = 46
	PayloadCP        PayloadType = 47
	PayloadEAP       PayloadType = 48
)

// Protocol IDs of proposals, notifications and deletes (RFC 7296 §3.3.1).
const (
	ProtoIKE = 1
	ProtoAH  = 2
	ProtoESP = 3
)

// Sizes of the fixed parts (RFC 7296 §3.1, §3.2).
const (
	HeaderLen        = 28
	genericHeaderLen = 4
	// MaxMessageLen bounds what the parser accepts and what the endpoint
	// reads: RFC 7296 §2 requires support for 1280 bytes and anything a lab
	// exchanges (no certificates) fits well below 64 KiB.
	MaxMessageLen = 65535
)

// Header is the fixed IKE header (RFC 7296 §3.1).
type Header struct {
	SPIi, SPIr uint64
	Next       PayloadType // first payload; PayloadEncrypted in protected messages
	Exchange   ExchangeType
	Flags      uint8
	MsgID      uint32
	Length     uint32 // total message length in bytes, header included
}

// IsResponse tells a response from a request (the R flag).
func (h *Header) IsResponse() bool { return h.Flags&FlagResponse != 0 }

func (h *Header) put(b []byte) {
	binary.BigEndian.PutUint64(b[0:], h.SPIi)
	binary.BigEndian.PutUint64(b[8:], h.SPIr)
	b[16] = byte(h.Next)
	b[17] = 0x20 // major 2, minor 0
	b[18] = byte(h.Exchange)
	b[19] = h.Flags
	binary.BigEndian.PutUint32(b[20:], h.MsgID)
	binary.BigEndian.PutUint32(b[24:], h.Length)
}

// Errors of the parser; every one means the packet is dropped and counted.
var (
	ErrTruncated = errors.New("ike: message truncated")
	ErrVersion   = errors.New("ike: not IKE version 2")
	ErrLength    = errors.New("ike: length field disagrees with the datagram")
	ErrSyntax    = errors.New("ike: malformed payload")
	ErrCritical  = errors.New("ike: unsupported critical payload")
)

// ParseHeader reads the fixed header of b and checks that its length field
// matches len(b) exactly (RFC 7296 §3.1).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrTruncated
	}
	h := Header{
		SPIi:     binary.BigEndian.Uint64(b[0:]),
		SPIr:     binary.BigEndian.Uint64(b[8:]),
		Next:     PayloadType(b[16]),
		Exchange: ExchangeType(b[18]),
		Flags:    b[19],
		MsgID:    binary.BigEndian.Uint32(b[20:]),
		Length:   binary.BigEndian.Uint32(b[24:]),
	}
	if b[17]>>4 != 2 {
		return h, ErrVersion
	}
	if int(h.Length) != len(b) {
		return h, ErrLength
	}
	return h, nil
}

// Payload is one decoded payload.
type Payload interface {
	Type() PayloadType
	// body appends the payload's content (without the generic header).
	body(b []byte) []byte
}

// SA is a Security Association payload (RFC 7296 §3.3).
type SA struct{ Proposals []Proposal }

// Proposal is one proposal substructure: a protocol, its SPI and the
// transforms on offer.
type Proposal struct {
	Num        uint8
	Protocol   uint8
	SPI        []byte // empty in IKE_SA_INIT, 4 bytes for ESP, 8 for an IKE rekey
	Transforms []Transform
}

// Transform is one transform substructure (RFC 7296 §3.3.2); KeyLen is the
// Key Length attribute in bits, 0 when absent.
type Transform struct {
	Type   uint8
	ID     uint16
	KeyLen uint16
}

// Transform types (RFC 7296 §3.3.2).
const (
	TransformENCR  = 1
	TransformPRF   = 2
	TransformINTEG = 3
	TransformDH    = 4
	TransformESN   = 5
)

// attrKeyLength is the Key Length attribute in TV format (RFC 7296 §3.3.5).
const attrKeyLength = 0x800e

// KE is a Key Exchange payload (RFC 7296 §3.4).
type KE struct {
	Group uint16
	Data  []byte
}

// Nonce is Ni or Nr (RFC 7296 §3.9).
type Nonce struct{ Data []byte }

// ID is IDi or IDr (RFC 7296 §3.5).
type ID struct {
	Responder bool // IDr rather than IDi
	IDType    uint8
	Data      []byte
}

// Identification types (RFC 7296 §3.5).
const (
	IDIPv4 = 1
	IDFQDN = 2
	IDIPv6 = 5
)

// Auth is the Authentication payload (RFC 7296 §3.8).
type Auth struct {
	Method uint8
	Data   []byte
}

// AuthSharedKey is "Shared Key Message Integrity Code" (RFC 7296 §3.8).
const AuthSharedKey = 2

// TS is TSi or TSr (RFC 7296 §3.13).
type TS struct {
	Responder bool // TSr rather than TSi
	Selectors []Selector
}

// Selector is one traffic selector; addresses are 4 or 16 bytes.
type Selector struct {
	Type               uint8 // TSIPv4 or TSIPv6
	Proto              uint8 // 0: any
	StartPort, EndPort uint16
	Start, End         []byte
}

// Traffic selector types (RFC 7296 §3.13.1).
const (
	TSIPv4 = 7
	TSIPv6 = 8
)

// Notify is a Notify payload (RFC 7296 §3.10).
type Notify struct {
	Protocol uint8
	SPI      []byte
	Kind     NotifyType
	Data     []byte
}

// Delete is a Delete payload (RFC 7296 §3.11).
type Delete struct {
	Protocol uint8
	SPISize  uint8
	SPIs     [][]byte
}

// Encrypted is the SK payload (RFC 7296 §3.14) before decryption: IV,
// ciphertext and ICV as they arrived. First is the type of the first
// inner payload.
type Encrypted struct {
	First PayloadType
	Data  []byte
}

// Unknown is any payload emu does not interpret (vendor IDs, CP,
// certificate requests); kept so a critical one can be refused.
type Unknown struct {
	Kind     PayloadType
	Critical bool
	Data     []byte
}

func (*SA) Type() PayloadType        { return PayloadSA }
func (*KE) Type() PayloadType        { return PayloadKE }
func (*Nonce) Type() PayloadType     { return PayloadNonce }
func (*Auth) Type() PayloadType      { return PayloadAUTH }
func (*Notify) Type() PayloadType    { return PayloadNotify }
func (*Delete) Type() PayloadType    { return PayloadDelete }
func (*Encrypted) Type() PayloadType { return PayloadEncrypted }
func (u *Unknown) Type() PayloadType { return u.Kind }
func (p *ID) Type() PayloadType {
	if p.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}
func (p *TS) Type() PayloadType {
	if p.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

func (p *SA) body(b []byte) []byte {
	for i, pr := range p.Proposals {
		start := len(b)
		last := byte(2)
		if i == len(p.Proposals)-1 {
			last = 0
		}
		b = append(b, last, 0, 0, 0, pr.Num, pr.Protocol, byte(len(pr.SPI)), byte(len(pr.Transforms)))
		b = append(b, pr.SPI...)
		for j, t := range pr.Transforms {
			tlast := byte(3)
			if j == len(pr.Transforms)-1 {
				tlast = 0
			}
			n := 8
			if t.KeyLen != 0 {
				n += 4
			}
			b = append(b, tlast, 0, byte(n>>8), byte(n), t.Type, 0, byte(t.ID>>8), byte(t.ID))
			if t.KeyLen != 0 {
				b = binary.BigEndian.AppendUint16(b, attrKeyLength)
				b = binary.BigEndian.AppendUint16(b, t.KeyLen)
			}
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b
}

func (p *KE) body(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, p.Group)
	return append(append(b, 0, 0), p.Data...)
}

func (p *Nonce) body(b []byte) []byte { return append(b, p.Data...) }

func (p *ID) body(b []byte) []byte { return append(append(b, p.IDType, 0, 0, 0), p.Data...) }

func (p *Auth) body(b []byte) []byte { return append(append(b, p.Method, 0, 0, 0), p.Data...) }

func (p *TS) body(b []byte) []byte {
	b = append(b, byte(len(p.Selectors)), 0, 0, 0)
	for _, s := range p.Selectors {
		n := 8 + len(s.Start) + len(s.End)
		b = append(b, s.Type, s.Proto, byte(n>>8), byte(n))
		b = binary.BigEndian.AppendUint16(b, s.StartPort)
		b = binary.BigEndian.AppendUint16(b, s.EndPort)
		b = append(append(b, s.Start...), s.End...)
	}
	return b
}

func (p *Notify) body(b []byte) []byte {
	b = append(b, p.Protocol, byte(len(p.SPI)))
	b = binary.BigEndian.AppendUint16(b, uint16(p.Kind))
	return append(append(b, p.SPI...), p.Data...)
}

func (p *Delete) body(b []byte) []byte {
	b = append(b, p.Protocol, p.SPISize)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.SPIs)))
	for _, s := range p.SPIs {
		b = append(b, s...)
	}
	return b
}

func (p *Encrypted) body(b []byte) []byte { return append(b, p.Data...) }
func (p *Unknown) body(b []byte) []byte   { return append(b, p.Data...) }

// appendPayloads encodes a payload chain; the caller writes the type of the
// first payload into whatever precedes the chain.
func appendPayloads(b []byte, ps []Payload) []byte {
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].Type()
		}
		if e, ok := p.(*Encrypted); ok {
			next = e.First
		}
		start := len(b)
		b = append(b, byte(next), 0, 0, 0)
		b = p.body(b)
		binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b
}

// firstType is the Next Payload value announcing ps.
func firstType(ps []Payload) PayloadType {
	if len(ps) == 0 {
		return PayloadNone
	}
	return ps[0].Type()
}

// Marshal encodes an unprotected message (IKE_SA_INIT); h.Next and h.Length
// are filled in.
func Marshal(h Header, ps []Payload) []byte {
	h.Next = firstType(ps)
	b := appendPayloads(make([]byte, HeaderLen, 512), ps)
	h.Length = uint32(len(b))
	h.put(b)
	return b
}

// ParsePayloads decodes a payload chain starting with type first. An SK
// payload must be the last one (RFC 7296 §3.14): what follows it is its
// content, left encrypted.
func ParsePayloads(first PayloadType, b []byte) ([]Payload, error) {
	var ps []Payload
	next := first
	for next != PayloadNone {
		if len(b) < genericHeaderLen {
			return nil, ErrTruncated
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < genericHeaderLen || n > len(b) {
			return nil, fmt.Errorf("%w: payload %d length %d of %d bytes left", ErrSyntax, next, n, len(b))
		}
		body := b[genericHeaderLen:n]
		critical := b[1]&0x80 != 0
		this := next
		next = PayloadType(b[0])
		p, err := parsePayload(this, next, critical, body)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
		b = b[n:]
		if this == PayloadEncrypted {
			if len(b) != 0 {
				return nil, fmt.Errorf("%w: %d bytes after the encrypted payload", ErrSyntax, len(b))
			}
			return ps, nil
		}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last payload", ErrSyntax, len(b))
	}
	return ps, nil
}

func parsePayload(t, next PayloadType, critical bool, b []byte) (Payload, error) {
	short := func(min int) error {
		if len(b) < min {
			return fmt.Errorf("%w: payload %d has %d bytes, needs %d", ErrSyntax, t, len(b), min)
		}
		return nil
	}
	switch t {
	case PayloadSA:
		return parseSA(b)
	case PayloadKE:
		if err := short(4); err != nil {
			return nil, err
		}
		return &KE{Group: binary.BigEndian.Uint16(b), Data: b[4:]}, nil
	case PayloadNonce:
		// RFC 7296 §3.9: 16 to 256 bytes.
		if len(b) < 16 || len(b) > 256 {
			return nil, fmt.Errorf("%w: nonce of %d bytes (16-256 allowed)", ErrSyntax, len(b))
		}
		return &Nonce{Data: b}, nil
	case PayloadIDi, PayloadIDr:
		if err := short(4); err != nil {
			return nil, err
		}
		return &ID{Responder: t == PayloadIDr, IDType: b[0], Data: b[4:]}, nil
	case PayloadAUTH:
		if err := short(4); err != nil {
			return nil, err
		}
		return &Auth{Method: b[0], Data: b[4:]}, nil
	case PayloadTSi, PayloadTSr:
		return parseTS(t == PayloadTSr, b)
	case PayloadNotify:
		if err := short(4); err != nil {
			return nil, err
		}
		spi := int(b[1])
		if err := short(4 + spi); err != nil {
			return nil, err
		}
		return &Notify{Protocol: b[0], Kind: NotifyType(binary.BigEndian.Uint16(b[2:])), SPI: orNil(b[4 : 4+spi]), Data: orNil(b[4+spi:])}, nil
	case PayloadDelete:
		if err := short(4); err != nil {
			return nil, err
		}
		d := &Delete{Protocol: b[0], SPISize: b[1]}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if len(b)-4 != n*int(d.SPISize) {
			return nil, fmt.Errorf("%w: delete of %d SPIs of %d bytes in %d bytes", ErrSyntax, n, d.SPISize, len(b)-4)
		}
		for i := range n {
			off := 4 + i*int(d.SPISize)
			d.SPIs = append(d.SPIs, b[off:off+int(d.SPISize)])
		}
		return d, nil
	case PayloadEncrypted:
		return &Encrypted{First: next, Data: b}, nil
	}
	if critical {
		return nil, fmt.Errorf("%w: type %d", ErrCritical, t)
	}
	return &Unknown{Kind: t, Critical: critical, Data: b}, nil
}

func parseSA(b []byte) (*SA, error) {
	sa := &SA{}
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: proposal header truncated", ErrSyntax)
		}
		last, n := b[0], int(binary.BigEndian.Uint16(b[2:]))
		if n < 8 || n > len(b) || (last != 0 && last != 2) {
			return nil, fmt.Errorf("%w: proposal length %d of %d bytes", ErrSyntax, n, len(b))
		}
		p := Proposal{Num: b[4], Protocol: b[5]}
		spiLen, count := int(b[6]), int(b[7])
		body := b[8:n]
		if spiLen > len(body) {
			return nil, fmt.Errorf("%w: proposal SPI of %d bytes", ErrSyntax, spiLen)
		}
		p.SPI, body = orNil(body[:spiLen]), body[spiLen:]
		for range count {
			t, rest, err := parseTransform(body)
			if err != nil {
				return nil, err
			}
			p.Transforms = append(p.Transforms, t)
			body = rest
		}
		if len(body) != 0 {
			return nil, fmt.Errorf("%w: %d bytes after the transforms of proposal %d", ErrSyntax, len(body), p.Num)
		}
		sa.Proposals = append(sa.Proposals, p)
		b = b[n:]
		if last == 0 && len(b) != 0 {
			return nil, fmt.Errorf("%w: bytes after the last proposal", ErrSyntax)
		}
	}
	if len(sa.Proposals) == 0 {
		return nil, fmt.Errorf("%w: SA payload without proposals", ErrSyntax)
	}
	return sa, nil
}

func parseTransform(b []byte) (Transform, []byte, error) {
	if len(b) < 8 {
		return Transform{}, nil, fmt.Errorf("%w: transform truncated", ErrSyntax)
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n < 8 || n > len(b) {
		return Transform{}, nil, fmt.Errorf("%w: transform length %d of %d bytes", ErrSyntax, n, len(b))
	}
	t := Transform{Type: b[4], ID: binary.BigEndian.Uint16(b[6:])}
	attrs := b[8:n]
	for len(attrs) > 0 {
		if len(attrs) < 4 {
			return Transform{}, nil, fmt.Errorf("%w: attribute truncated", ErrSyntax)
		}
		typ := binary.BigEndian.Uint16(attrs)
		if typ&0x8000 != 0 { // TV: the value is the 2 bytes that follow
			if typ == attrKeyLength {
				t.KeyLen = binary.BigEndian.Uint16(attrs[2:])
			}
			attrs = attrs[4:]
			continue
		}
		l := int(binary.BigEndian.Uint16(attrs[2:]))
		if 4+l > len(attrs) {
			return Transform{}, nil, fmt.Errorf("%w: attribute of %d bytes", ErrSyntax, l)
		}
		attrs = attrs[4+l:]
	}
	return t, b[n:], nil
}

func parseTS(responder bool, b []byte) (*TS, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: traffic selector payload truncated", ErrSyntax)
	}
	ts := &TS{Responder: responder}
	count := int(b[0])
	b = b[4:]
	for range count {
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: traffic selector truncated", ErrSyntax)
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		alen := 0
		switch b[0] {
		case TSIPv4:
			alen = 4
		case TSIPv6:
			alen = 16
		default:
			return nil, fmt.Errorf("%w: traffic selector type %d", ErrSyntax, b[0])
		}
		if n != 8+2*alen || n > len(b) {
			return nil, fmt.Errorf("%w: traffic selector length %d", ErrSyntax, n)
		}
		ts.Selectors = append(ts.Selectors, Selector{
			Type: b[0], Proto: b[1],
			StartPort: binary.BigEndian.Uint16(b[4:]), EndPort: binary.BigEndian.Uint16(b[6:]),
			Start: b[8 : 8+alen], End: b[8+alen : n],
		})
		b = b[n:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the traffic selectors", ErrSyntax, len(b))
	}
	return ts, nil
}

// Parse decodes a whole datagram (without the NAT-T non-ESP marker): the
// header and the outer payload chain, leaving an SK payload encrypted.
func Parse(b []byte) (Header, []Payload, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, nil, err
	}
	ps, err := ParsePayloads(h.Next, b[HeaderLen:])
	return h, ps, err
}

// orNil keeps empty fields nil, as a Payload built in code has them, so
// decoded and constructed payloads compare equal.
func orNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// payloads are the payloads of a decoded message that the exchanges read,
// by kind: of the kinds a valid message holds at most once (RFC 7296 §1.2
// to §1.4) the last one, nil when absent; every Notify and Delete, in their
// order. Where they stood among the other kinds is not kept: RFC 7296
// fixes no order but the COOKIE's, first in a request (§2.6), which
// admitInit reads from the message itself.
type payloads struct {
	sa       *SA
	ke       *KE
	nonce    *Nonce
	idi, idr *ID
	auth     *Auth
	tsi, tsr *TS
	notifies []*Notify
	deletes  []*Delete
}

// collect sorts the payloads of a message by kind.
func collect(ps []Payload) payloads {
	var m payloads
	for _, p := range ps {
		switch p := p.(type) {
		case *SA:
			m.sa = p
		case *KE:
			m.ke = p
		case *Nonce:
			m.nonce = p
		case *ID:
			if p.Responder {
				m.idr = p
			} else {
				m.idi = p
			}
		case *Auth:
			m.auth = p
		case *TS:
			if p.Responder {
				m.tsr = p
			} else {
				m.tsi = p
			}
		case *Notify:
			m.notifies = append(m.notifies, p)
		case *Delete:
			m.deletes = append(m.deletes, p)
		}
	}
	return m
}

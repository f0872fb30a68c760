package ike

import (
	"fmt"
	"slices"
	"strings"
)

// Suite is one side's offer for an IKE SA or a CHILD SA: the provider's
// IkeConfig/IpsecConfig in IANA numbers. Integ and PRF are 0 with AES-GCM
// (no separate integrity; the PRF still applies to an IKE SA). DH is 0 when
// PFS is disabled (CHILD SA only).
type Suite struct {
	Encr    uint16
	KeyBits uint16 // AES key length; 0 for DES/3DES
	Integ   uint16
	PRF     uint16 // IKE SA only
	DH      uint16
}

// proposal spells s as a proposal of protocol proto with the given SPI.
// withDH false leaves the DH transform out, as in the CHILD SA of IKE_AUTH
// (RFC 7296 §1.2: that CHILD SA's keys come from the IKE SA's exchange).
func (s Suite) proposal(proto uint8, spi []byte, withDH bool) Proposal {
	p := Proposal{Num: 1, Protocol: proto, SPI: spi}
	p.Transforms = append(p.Transforms, Transform{Type: TransformENCR, ID: s.Encr, KeyLen: s.KeyBits})
	if proto == ProtoIKE {
		p.Transforms = append(p.Transforms, Transform{Type: TransformPRF, ID: s.PRF})
	}
	if s.Integ != 0 {
		p.Transforms = append(p.Transforms, Transform{Type: TransformINTEG, ID: s.Integ})
	}
	if withDH && s.DH != 0 {
		p.Transforms = append(p.Transforms, Transform{Type: TransformDH, ID: s.DH})
	}
	if proto == ProtoESP {
		p.Transforms = append(p.Transforms, Transform{Type: TransformESN, ID: ESNNone})
	}
	return p
}

// Proposal is the suite as this end offers it for protocol proto
// (ProtoIKE or ProtoESP), DH included: what a plan or a log shows.
func (s Suite) Proposal(proto uint8) Proposal { return s.proposal(proto, nil, true) }

// choose picks the first of the peer's proposals that contains our suite
// (RFC 7296 §2.7: the responder selects one proposal and one transform of
// each type). ignoreDH skips the DH type, as a responder does for the CHILD
// SA inside IKE_AUTH. It returns the chosen proposal reduced to our
// transforms, with the peer's proposal number and SPI.
func (s Suite) choose(proto uint8, offers []Proposal, ignoreDH bool) (Proposal, bool) {
	want := s.proposal(proto, nil, !ignoreDH)
	for _, o := range offers {
		if o.Protocol != proto {
			continue
		}
		if matches(want, o, ignoreDH) {
			want.Num, want.SPI = o.Num, o.SPI
			return want, true
		}
	}
	return Proposal{}, false
}

func matches(want, offer Proposal, ignoreDH bool) bool {
	types := map[uint8]bool{}
	for _, t := range offer.Transforms {
		types[t.Type] = true
	}
	for _, w := range want.Transforms {
		if !slices.Contains(offer.Transforms, w) {
			return false
		}
		delete(types, w.Type)
	}
	// A transform type we did not ask for must be optional: a DH offer
	// when PFS is off is acceptable only if it includes NONE.
	for typ := range types {
		if typ == TransformDH && (ignoreDH || slices.Contains(offer.Transforms, Transform{Type: TransformDH, ID: 0})) {
			continue
		}
		return false
	}
	return true
}

// chosen reads back the one proposal a responder accepted, checking it is
// one we offered (RFC 7296 §2.7).
func (s Suite) accepted(proto uint8, sa *SA, withDH bool) (Proposal, error) {
	if sa == nil || len(sa.Proposals) != 1 {
		return Proposal{}, fmt.Errorf("responder did not choose exactly one proposal")
	}
	got := sa.Proposals[0]
	want := s.proposal(proto, got.SPI, withDH)
	if got.Protocol != proto || !matches(want, got, !withDH) {
		return got, fmt.Errorf("responder chose %s, which was not offered (offered %s)", FormatProposal(got), FormatProposal(want))
	}
	return got, nil
}

var transformNames = map[[2]uint16]string{
	{TransformENCR, EncrDES}: "DES_CBC", {TransformENCR, Encr3DES}: "3DES_CBC",
	{TransformENCR, EncrAESCBC}: "AES_CBC", {TransformENCR, EncrAESGCM16}: "AES_GCM_16",
	{TransformPRF, PRFHMACMD5}: "PRF_HMAC_MD5", {TransformPRF, PRFHMACSHA1}: "PRF_HMAC_SHA1",
	{TransformPRF, PRFHMACSHA256}: "PRF_HMAC_SHA2_256", {TransformPRF, PRFHMACSHA384}: "PRF_HMAC_SHA2_384",
	{TransformPRF, PRFHMACSHA512}:    "PRF_HMAC_SHA2_512",
	{TransformINTEG, IntegHMACMD596}: "HMAC_MD5_96", {TransformINTEG, IntegHMACSHA196}: "HMAC_SHA1_96",
	{TransformINTEG, IntegHMACSHA256128}: "HMAC_SHA2_256_128", {TransformINTEG, IntegHMACSHA384192}: "HMAC_SHA2_384_192",
	{TransformINTEG, IntegHMACSHA512256}: "HMAC_SHA2_512_256",
	{TransformDH, 1}:                     "MODP_768", {TransformDH, 2}: "MODP_1024", {TransformDH, 5}: "MODP_1536", {TransformDH, 14}: "MODP_2048",
	{TransformESN, 0}: "NO_EXT_SEQ", {TransformESN, 1}: "EXT_SEQ",
}

// FormatProposal spells a proposal the way strongSwan logs it
// ("IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_1024"), so the two
// sides' logs read alike.
func FormatProposal(p Proposal) string {
	proto := map[uint8]string{ProtoIKE: "IKE", ProtoAH: "AH", ProtoESP: "ESP"}[p.Protocol]
	if proto == "" {
		proto = fmt.Sprintf("PROTO%d", p.Protocol)
	}
	parts := make([]string, 0, len(p.Transforms))
	for _, t := range p.Transforms {
		n, ok := transformNames[[2]uint16{uint16(t.Type), t.ID}]
		if !ok {
			n = fmt.Sprintf("T%d:%d", t.Type, t.ID)
		}
		if t.KeyLen != 0 {
			n += fmt.Sprintf("_%d", t.KeyLen)
		}
		parts = append(parts, n)
	}
	return proto + ":" + strings.Join(parts, "/")
}

// FormatProposals joins several proposals with ", ".
func FormatProposals(ps []Proposal) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = FormatProposal(p)
	}
	return strings.Join(s, ", ")
}

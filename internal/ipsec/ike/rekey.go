package ike

import (
	"encoding/binary"
	"fmt"
	"time"
)

// rekeyChild replaces the CHILD SA with CREATE_CHILD_SA (RFC 7296 §1.3.3):
// the new pair is installed before the old one is deleted, so traffic
// never lacks an SA.
func (sa *ikeSA) rekeyChild() {
	c, old := sa.c, sa.child
	in := randSPI32()
	ni := nonce()
	ps := []Payload{
		&Notify{Protocol: ProtoESP, SPI: binary.BigEndian.AppendUint32(nil, old.sa.InSPI), Kind: RekeySA},
		&SA{Proposals: []Proposal{c.cfg.ESP.proposal(ProtoESP, binary.BigEndian.AppendUint32(nil, in), true)}},
		&Nonce{Data: ni},
	}
	var dh *dhKey
	if c.cfg.ESP.DH != 0 {
		g, _ := modpGroup(c.cfg.ESP.DH)
		var err error
		if dh, err = g.generate(); err != nil {
			return
		}
		ps = append(ps, &KE{Group: c.cfg.ESP.DH, Data: dh.public})
	}
	ps = append(ps, &TS{Selectors: selectors(c.cfg.LocalTS)}, &TS{Responder: true, Selectors: selectors(c.cfg.RemoteTS)})
	sa.sendEncrypted(CreateChildSA, ps, func(_ Header, rs []Payload) {
		m := collect(rs)
		for _, n := range m.notifies {
			if n.Kind.IsError() {
				sa.rekeyErr = fmt.Sprintf("the peer refused our rekey with %s (we offered %s)", n.Kind, FormatProposal(c.cfg.ESP.Proposal(ProtoESP)))
				sa.e.log.Warn("ike: CHILD SA rekey refused", "conn", c.cfg.Name, "reason", sa.rekeyErr)
				if sa.child != nil {
					sa.child.rekeyAt = time.Now().Add(time.Second) // the old SA still works; try again
				}
				return
			}
		}
		prop, err := c.cfg.ESP.accepted(ProtoESP, m.sa, dh != nil)
		if err != nil || m.nonce == nil || m.tsi == nil || m.tsr == nil || len(prop.SPI) != 4 {
			sa.childFailed(NoProposalChosen)
			return
		}
		var gir []byte
		if dh != nil {
			if m.ke == nil {
				sa.childFailed(InvalidKEPayload)
				return
			}
			if gir, err = dh.shared(m.ke.Data); err != nil {
				sa.childFailed(InvalidKEPayload)
				return
			}
		}
		sa.installChild(prop, in, binary.BigEndian.Uint32(prop.SPI), gir, ni, m.nonce.Data, true, m.tsi.Selectors, m.tsr.Selectors)
	})
}

// rekeyIKE replaces the IKE SA (RFC 7296 §1.3.2, §2.18): the CHILD SA
// moves to the new one and the old one is deleted.
func (sa *ikeSA) rekeyIKE() {
	c := sa.c
	g, _ := modpGroup(c.cfg.IKE.DH)
	dh, err := g.generate()
	if err != nil {
		return
	}
	spi := randSPI64()
	ni := nonce()
	ps := []Payload{
		&SA{Proposals: []Proposal{c.cfg.IKE.proposal(ProtoIKE, binary.BigEndian.AppendUint64(nil, spi), true)}},
		&Nonce{Data: ni},
		&KE{Group: c.cfg.IKE.DH, Data: dh.public},
	}
	sa.sendEncrypted(CreateChildSA, ps, func(_ Header, rs []Payload) {
		m := collect(rs)
		prop, err := c.cfg.IKE.accepted(ProtoIKE, m.sa, true)
		if err != nil || m.nonce == nil || m.ke == nil || len(prop.SPI) != 8 {
			sa.rekeyErr = "the peer's answer to our IKE SA rekey was unusable"
			sa.rekeyAt = time.Now().Add(time.Second)
			return
		}
		gir, err := dh.shared(m.ke.Data)
		if err != nil {
			sa.rekeyAt = time.Now().Add(time.Second)
			return
		}
		sa.replaceBy(true, spi, binary.BigEndian.Uint64(prop.SPI), gir, ni, m.nonce.Data)
	})
}

// replaceBy creates the rekeyed IKE SA and moves the CHILD SA to it; we
// initiated the rekey exchange when weInitiated, and then delete the old
// SA ourselves.
func (sa *ikeSA) replaceBy(weInitiated bool, spiI, spiR uint64, gir, ni, nr []byte) {
	c := sa.c
	n := &ikeSA{e: sa.e, c: c, initiator: weInitiated, spiI: spiI, spiR: spiR, natt: sa.natt, ni: ni, nr: nr,
		established: true, firstInitiator: sa.firstInitiator, child: sa.child, retired: sa.retired, lastRecv: time.Now()}
	n.keys = deriveIKEKeys(sa.keys.prf, sa.keys.cs, rekeySKEYSEED(sa.keys.prf, sa.keys.d, gir, ni, nr), ni, nr, spiI, spiR)
	if lt := c.cfg.IKELifetime; lt > 0 {
		n.rekeyAt = time.Now().Add(rekeyMargin(lt, sa.firstInitiator))
		n.expireAt = time.Now().Add(lt)
	}
	sa.child, sa.retired = nil, nil
	sa.e.sas[n.ourSPI()] = n
	c.sa = n
	sa.e.setStatus(c, func(s *Status) { s.IKERekeys++ })
	sa.e.log.Info("ike: IKE SA rekeyed", "conn", c.cfg.Name)
	if weInitiated {
		sa.sendInformational([]Payload{&Delete{Protocol: ProtoIKE}}, func(Header, []Payload) { sa.remove() })
	}
}

// handleCreateChild answers a peer's CREATE_CHILD_SA: a CHILD SA rekey or
// an IKE SA rekey (RFC 7296 §1.3).
func (sa *ikeSA) handleCreateChild(ps []Payload) []Payload {
	c := sa.c
	m := collect(ps)
	offer, ni, ke, tsi, tsr := m.sa, m.nonce, m.ke, m.tsi, m.tsr
	if offer == nil || ni == nil {
		return []Payload{&Notify{Kind: InvalidSyntax}}
	}
	nr := nonce()
	if offer.Proposals[0].Protocol == ProtoIKE {
		prop, ok := c.cfg.IKE.choose(ProtoIKE, offer.Proposals, false)
		if !ok || ke == nil || len(prop.SPI) != 8 {
			return []Payload{&Notify{Kind: NoProposalChosen}}
		}
		g, _ := modpGroup(c.cfg.IKE.DH)
		dh, err := g.generate()
		if err != nil {
			return []Payload{&Notify{Kind: TemporaryFailure}}
		}
		gir, err := dh.shared(ke.Data)
		if err != nil {
			return []Payload{&Notify{Kind: InvalidKEPayload}}
		}
		spiR := randSPI64()
		peerSPI := binary.BigEndian.Uint64(prop.SPI)
		prop.SPI = binary.BigEndian.AppendUint64(nil, spiR)
		sa.replaceBy(false, peerSPI, spiR, gir, ni.Data, nr)
		return []Payload{&SA{Proposals: []Proposal{prop}}, &Nonce{Data: nr}, &KE{Group: c.cfg.IKE.DH, Data: dh.public}}
	}
	if tsi == nil || tsr == nil {
		return []Payload{&Notify{Kind: InvalidSyntax}}
	}
	// The proposal first (RFC 7296 §1.3.1): a PFS group we do not use is
	// NO_PROPOSAL_CHOSEN; INVALID_KE_PAYLOAD is for a KE of another group
	// than the proposal we chose.
	if _, ok := c.cfg.ESP.choose(ProtoESP, offer.Proposals, false); !ok {
		sa.childRefused(false, fmt.Sprintf("NO_PROPOSAL_CHOSEN: peer offered %s; we accept %s",
			FormatProposals(offer.Proposals), FormatProposal(c.cfg.ESP.Proposal(ProtoESP))))
		return []Payload{&Notify{Kind: NoProposalChosen}}
	}
	var gir []byte
	var kePayload []Payload
	if c.cfg.ESP.DH != 0 {
		if ke == nil || ke.Group != c.cfg.ESP.DH {
			return []Payload{&Notify{Kind: InvalidKEPayload, Data: binary.BigEndian.AppendUint16(nil, c.cfg.ESP.DH)}}
		}
		g, _ := modpGroup(c.cfg.ESP.DH)
		dh, err := g.generate()
		if err != nil {
			return []Payload{&Notify{Kind: TemporaryFailure}}
		}
		if gir, err = dh.shared(ke.Data); err != nil {
			return []Payload{&Notify{Kind: InvalidKEPayload}}
		}
		kePayload = []Payload{&KE{Group: c.cfg.ESP.DH, Data: dh.public}}
	}
	out, notify := sa.respondChild(offer, tsi, tsr, gir, ni.Data, nr, false)
	if notify != nil {
		return []Payload{notify}
	}
	// SA, Nr, [KEr], TSi, TSr (RFC 7296 §1.3.1).
	return append(append([]Payload{out[0], &Nonce{Data: nr}}, kePayload...), out[1:]...)
}

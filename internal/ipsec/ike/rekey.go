package ike

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
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
	sa.rekeyingChild = old
	sa.sendEncrypted(CreateChildSA, ps, func(_ Header, rs []Payload) {
		// theirs is the CHILD SA of the peer's rekey we answered meanwhile.
		theirs, deleted := sa.childCollision, sa.deletedUnknown
		sa.rekeyingChild, sa.childCollision, sa.deletedUnknown = nil, nil, nil
		m := collect(rs)
		for _, n := range m.notifies {
			if n.Kind.IsError() {
				if theirs != nil {
					// The peer refused ours (TEMPORARY_FAILURE: its own rekey
					// was done when ours came, RFC 7296 §2.25.1): the rekey
					// we answered stands.
					sa.e.log.Info("ike: simultaneous CHILD SA rekey: the peer's SA stays, ours was refused", "conn", c.cfg.Name, "reason", n.Kind)
					if theirs.peerDeleted {
						sa.childGone(theirs)
					}
					return
				}
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
		out := binary.BigEndian.Uint32(prop.SPI)
		if slices.Contains(deleted, out) {
			sa.oursDeletedFirst(old, theirs, in, out)
			return
		}
		if theirs == nil {
			prev := sa.child
			sa.installChild(prop, in, out, gir, ni, m.nonce.Data, true, m.tsi.Selectors, m.tsr.Selectors)
			if prev != nil {
				sa.countChildRekey()
				sa.retireChild(prev, true) // RFC 7296 §2.8: the rekey initiator deletes the old CHILD SA
			}
			return
		}
		// RFC 7296 §2.8.1: of the two new CHILD SAs, the one whose exchange
		// carried the lowest of the four nonces is redundant and deleted by
		// the end that initiated it; the initiator of the other deletes the
		// old SA. The peer sees the same nonces and decides alike, as
		// strongSwan does (child_rekey.c, lost_collision). A peer that
		// deleted its SA already has decided that ours stays.
		if !theirs.peerDeleted && bytes.Compare(lowerNonce(ni, m.nonce.Data), lowerNonce(theirs.ni, theirs.nr)) < 0 {
			// Ours never reaches the dataplane: the peer does not send on
			// it, and a ChildDown of the newest pair would read as the
			// CHILD SA going down. The old SA is the peer's to delete.
			sa.e.log.Info("ike: simultaneous CHILD SA rekey: the peer's SA stays, deleting ours", "conn", c.cfg.Name,
				"in_spi", fmt.Sprintf("0x%08x", in), "out_spi", fmt.Sprintf("0x%08x", out))
			sa.sendInformational([]Payload{deleteChild(in)}, nil)
			return
		}
		sa.e.log.Info("ike: simultaneous CHILD SA rekey: ours stays", "conn", c.cfg.Name)
		cur := sa.child // theirs, as rekeyable refuses to rekey it meanwhile
		sa.installChild(prop, in, out, gir, ni, m.nonce.Data, true, m.tsi.Selectors, m.tsr.Selectors)
		// Ours is in, so theirs can leave the dataplane: the peer deletes it
		// (or did); we delete the old one, unless the peer did already.
		if theirs.peerDeleted {
			sa.childDown(theirs)
		} else {
			sa.retireChild(theirs, false)
		}
		if cur != nil && cur != theirs {
			sa.retireChild(cur, false) // never left in the dataplane unnamed
		}
		if slices.Contains(sa.retired, old) {
			sa.deleteRetired(old)
		}
	})
}

// oursDeletedFirst ends our rekey of old whose new SA (inbound SPI in,
// outbound out) the peer deleted before its answer reached us: the SA is
// never installed, so nothing is sent on it. Without a collision old
// stays the CHILD SA and is rekeyed again later. After one, the peer's SA
// theirs stays unless it deleted that too (the CHILD SA is then down),
// and we delete old, which the peer left to us as the winner's initiator
// (RFC 7296 §2.8.1).
func (sa *ikeSA) oursDeletedFirst(old, theirs *child, in, out uint32) {
	sa.e.log.Info("ike: CHILD SA rekey: the peer deleted our new SA before answering, not installed", "conn", sa.c.cfg.Name,
		"in_spi", fmt.Sprintf("0x%08x", in), "out_spi", fmt.Sprintf("0x%08x", out))
	if theirs == nil {
		if sa.child != nil {
			sa.child.rekeyAt = time.Now().Add(time.Second)
		}
		return
	}
	if theirs.peerDeleted && sa.child == theirs {
		sa.childGone(theirs)
	}
	if slices.Contains(sa.retired, old) {
		sa.deleteRetired(old)
	}
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
	sa.rekeyingIKE = true
	sa.sendEncrypted(CreateChildSA, ps, func(_ Header, rs []Payload) {
		sa.rekeyingIKE = false
		// theirs is the SA of the peer's rekey we answered meanwhile.
		theirs := sa.collision
		m := collect(rs)
		prop, err := c.cfg.IKE.accepted(ProtoIKE, m.sa, true)
		var gir []byte
		if err == nil && m.nonce != nil && m.ke != nil && len(prop.SPI) == 8 {
			gir, err = dh.shared(m.ke.Data)
		} else {
			err = fmt.Errorf("the peer's answer to our IKE SA rekey was unusable")
		}
		for _, n := range m.notifies {
			if n.Kind.IsError() {
				err = fmt.Errorf("the peer refused our IKE SA rekey with %s", n.Kind)
			}
		}
		if err != nil {
			if theirs != nil {
				// The peer refused ours (TEMPORARY_FAILURE, §2.25.2): the
				// rekey we answered stands.
				sa.e.log.Info("ike: simultaneous IKE SA rekey: the peer's SA stays, ours was refused", "conn", c.cfg.Name, "reason", err)
				return
			}
			sa.rekeyErr = err.Error()
			sa.rekeyAt = time.Now().Add(time.Second)
			return
		}
		ours := sa.rekeyed(true, spi, binary.BigEndian.Uint64(prop.SPI), gir, ni, m.nonce.Data)
		if theirs == nil {
			sa.succeed(ours, sa, true)
			return
		}
		// RFC 7296 §2.8.2: of the two new SAs, the one whose exchange
		// carried the lowest of the four nonces is redundant and deleted by
		// the end that initiated it; the initiator of the other deletes the
		// old SA. The peer sees the same nonces and decides alike.
		if bytes.Compare(lowerNonce(ours.ni, ours.nr), lowerNonce(theirs.ni, theirs.nr)) < 0 {
			sa.e.log.Info("ike: simultaneous IKE SA rekey: the peer's SA stays", "conn", c.cfg.Name)
			ours.rekeyAt = time.Time{}
			ours.sendInformational([]Payload{&Delete{Protocol: ProtoIKE}}, func(Header, []Payload) { ours.remove() })
			return
		}
		sa.e.log.Info("ike: simultaneous IKE SA rekey: ours stays", "conn", c.cfg.Name)
		theirs.rekeyAt = time.Time{} // the peer deletes it
		sa.succeed(ours, theirs, false)
	})
}

// lowerNonce is the lower of an exchange's two nonces, compared octet by
// octet (RFC 7296 §2.8.1).
func lowerNonce(ni, nr []byte) []byte {
	if bytes.Compare(ni, nr) < 0 {
		return ni
	}
	return nr
}

// rekeyed creates and registers the IKE SA that replaces sa (RFC 7296
// §2.18); we initiated the rekey exchange when weInitiated. It carries no
// CHILD SA until succeed moves them.
func (sa *ikeSA) rekeyed(weInitiated bool, spiI, spiR uint64, gir, ni, nr []byte) *ikeSA {
	c := sa.c
	n := &ikeSA{e: sa.e, c: c, initiator: weInitiated, spiI: spiI, spiR: spiR, natt: sa.natt, ni: ni, nr: nr,
		established: true, firstInitiator: sa.firstInitiator, lastRecv: time.Now()}
	n.keys = deriveIKEKeys(sa.keys.prf, sa.keys.cs, rekeySKEYSEED(sa.keys.prf, sa.keys.d, gir, ni, nr), ni, nr, spiI, spiR)
	if lt := c.cfg.IKELifetime; lt > 0 {
		n.rekeyAt = time.Now().Add(rekeyMargin(lt, sa.firstInitiator))
		n.expireAt = time.Now().Add(lt)
	}
	sa.e.sas[n.ourSPI()] = n
	return n
}

// succeed makes n, rekeyed from sa, the connection's IKE SA: the CHILD
// SAs move to it from holder (sa, or after a collision the redundant new
// SA). Whoever initiated n's exchange deletes sa (RFC 7296 §1.3.2).
func (sa *ikeSA) succeed(n, holder *ikeSA, count bool) {
	c := sa.c
	n.child, n.retired = holder.child, holder.retired
	holder.child, holder.retired = nil, nil
	c.sa = n
	if count {
		sa.e.setStatus(c, func(s *Status) { s.IKERekeys++ })
		sa.e.log.Info("ike: IKE SA rekeyed", "conn", c.cfg.Name)
	}
	if n.initiator {
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
		if c.sa != sa {
			// Rekeyed already, so being deleted (RFC 7296 §2.25.2).
			sa.e.log.Info("ike: simultaneous IKE SA rekey: the peer's request came after ours completed, refused with TEMPORARY_FAILURE", "conn", c.cfg.Name)
			return []Payload{&Notify{Kind: TemporaryFailure}}
		}
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
		n := sa.rekeyed(false, peerSPI, spiR, gir, ni.Data, nr)
		if sa.rekeyingIKE {
			// Both ends rekey at once: answered as usual, resolved when
			// our own answer comes (RFC 7296 §2.8.2, §2.25.2).
			sa.collision = n
		}
		sa.succeed(n, sa, true)
		return []Payload{&SA{Proposals: []Proposal{prop}}, &Nonce{Data: nr}, &KE{Group: c.cfg.IKE.DH, Data: dh.public}}
	}
	if tsi == nil || tsr == nil {
		return []Payload{&Notify{Kind: InvalidSyntax}}
	}
	if n := rekeyNotify(m.notifies); n != nil {
		if refused := sa.rekeyable(n); refused != nil {
			return []Payload{refused}
		}
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
	prev := sa.child
	out, notify := sa.respondChild(offer, tsi, tsr, gir, ni.Data, nr, false)
	if notify != nil {
		return []Payload{notify}
	}
	if prev != nil {
		sa.countChildRekey()
		sa.retireChild(prev, false) // the peer deletes it (RFC 7296 §2.8)
		if prev == sa.rekeyingChild {
			// Both ends rekey it at once: answered as usual, resolved
			// when our own answer comes (RFC 7296 §2.8.1).
			sa.childCollision = sa.child
			sa.e.log.Info("ike: simultaneous CHILD SA rekey: answered the peer's, resolved when ours is answered", "conn", c.cfg.Name)
		}
	}
	// SA, Nr, [KEr], TSi, TSr (RFC 7296 §1.3.1).
	return append(append([]Payload{out[0], &Nonce{Data: nr}}, kePayload...), out[1:]...)
}

// rekeyNotify is the REKEY_SA notify of a CREATE_CHILD_SA request, of
// whatever protocol and SPI size (rekeyable checks them), nil when the
// request creates a new CHILD SA (RFC 7296 §1.3.3).
func rekeyNotify(ns []*Notify) *Notify {
	for _, n := range ns {
		if n.Kind == RekeySA {
			return n
		}
	}
	return nil
}

// rekeyable checks the CHILD SA a peer's rekey request n names, by the SPI
// the peer receives on: nil when it is the connection's CHILD SA, else the
// error to answer (RFC 7296 §2.25.1, §3.10). An SPI that is not 4 octets
// is INVALID_SYNTAX; an SA of another protocol than ESP (we have none) or
// one we do not know is CHILD_SA_NOT_FOUND. One a rekey already replaced
// (ours, which the peer's request crossed) is being deleted, and one
// whose collision our outstanding rekey has yet to resolve may be
// deleted: TEMPORARY_FAILURE, the peer tries again later.
func (sa *ikeSA) rekeyable(n *Notify) *Notify {
	if len(n.SPI) != 4 {
		return &Notify{Kind: InvalidSyntax}
	}
	if n.Protocol != ProtoESP {
		return &Notify{Protocol: n.Protocol, SPI: n.SPI, Kind: ChildSANotFound}
	}
	spi := binary.BigEndian.Uint32(n.SPI)
	if sa.child != nil && sa.child.sa.OutSPI == spi {
		if sa.child == sa.childCollision {
			sa.e.log.Info("ike: simultaneous CHILD SA rekey: the peer rekeys its new SA before the collision is resolved, refused with TEMPORARY_FAILURE", "conn", sa.c.cfg.Name)
			return &Notify{Kind: TemporaryFailure}
		}
		return nil
	}
	for _, r := range sa.retired {
		if r.sa.OutSPI == spi {
			sa.e.log.Info("ike: simultaneous CHILD SA rekey: the peer's request came after ours completed, refused with TEMPORARY_FAILURE", "conn", sa.c.cfg.Name)
			return &Notify{Kind: TemporaryFailure}
		}
	}
	return &Notify{Protocol: ProtoESP, SPI: n.SPI, Kind: ChildSANotFound}
}

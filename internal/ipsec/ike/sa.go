package ike

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// ikeSA is one IKE SA and the CHILD SA it carries. Only the loop touches it.
type ikeSA struct {
	e         *Endpoint
	c         *conn
	initiator bool // original initiator of this IKE SA (decides SK_ei vs SK_er)
	// firstInitiator is initiator of the connection's first IKE SA; it
	// survives IKE rekeys, which may swap initiator.
	firstInitiator bool
	spiI, spiR     uint64
	natt           bool // IKE and ESP go over the NAT-T port
	keys           *ikeKeys
	ni, nr         []byte
	initI          []byte // the IKE_SA_INIT messages, signed by AUTH
	initR          []byte
	dh             *dhKey
	established    bool
	msgID          uint32 // next request we send
	peerMsgID      uint32 // next request we expect
	lastResp       []byte
	req            *request
	queue          []func() // requests waiting for the window of one
	child          *child
	lastRecv       time.Time
	rekeyAt        time.Time
	expireAt       time.Time // the IKE SA's lifetime's end
	// rekeyErr is why the last rekey (of either SA) failed, for the
	// reason shown when the lifetime then runs out.
	rekeyErr string
	childSPI uint32    // our inbound SPI offered in IKE_AUTH
	rawIn    []byte    // the IKE_SA_INIT response as received
	created  time.Time // of a responder SA, for the half-open timeout
	// retired are CHILD SAs a rekey replaced, until their Delete exchange
	// (ours or the peer's) ends (RFC 7296 §2.8).
	retired []*child
	dead    bool
	// cookieTries counts the COOKIEs a responder asked of our IKE_SA_INIT.
	cookieTries int
	// rekeyingIKE: our CREATE_CHILD_SA rekeying this IKE SA is
	// outstanding; collision is the SA of the peer's rekey of it that we
	// answered meanwhile (RFC 7296 §2.8.2).
	rekeyingIKE bool
	collision   *ikeSA
	// rekeyingChild: our CREATE_CHILD_SA rekeying this CHILD SA is
	// outstanding; childCollision is the CHILD SA of the peer's rekey of
	// the same one that we answered meanwhile (RFC 7296 §2.8.1).
	rekeyingChild  *child
	childCollision *child
	// deletedUnknown are the SPIs of CHILD SAs we did not know that the
	// peer deleted while our rekey was outstanding: it may delete the SA
	// that rekey makes before its answer reaches us (RFC 7296 §2.8.1).
	deletedUnknown []uint32
}

// maxDeletedUnknown bounds deletedUnknown: the SA our rekey makes is one
// SPI, which a peer names among a few at most.
const maxDeletedUnknown = 16

type child struct {
	sa       ChildSA
	rekeyAt  time.Time
	expireAt time.Time // the lifetime's end: deleted if no rekey replaced it
	// ni, nr are the nonces of the exchange that created it, which decide
	// a rekey collision (RFC 7296 §2.8.1).
	ni, nr []byte
	// peerDeleted: the peer deleted this CHILD SA of a collision before our
	// own rekey was answered; it goes once that answer is handled.
	peerDeleted bool
	down        bool // ChildDown was called
}

type request struct {
	id     uint32
	data   []byte
	sentAt time.Time
	tries  int
	onResp func(Header, []Payload)
}

func (sa *ikeSA) ourSPI() uint64 {
	if sa.initiator {
		return sa.spiI
	}
	return sa.spiR
}

func randSPI64() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1 // never 0 (RFC 7296 §3.1)
}

func randSPI32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])%(1<<31) + 0x1000 // 1-255 reserved (RFC 4303 §2.1)
}

func nonce() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// natHash is NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port)
// (RFC 7296 §2.23).
func natHash(spii, spir uint64, ap netip.AddrPort) []byte {
	h := sha1.New()
	binary.Write(h, binary.BigEndian, spii)
	binary.Write(h, binary.BigEndian, spir)
	h.Write(ap.Addr().AsSlice())
	binary.Write(h, binary.BigEndian, ap.Port())
	return h.Sum(nil)
}

func (e *Endpoint) natNotifies(sa *ikeSA) []Payload {
	if !sa.c.cfg.NATT {
		return nil
	}
	src := natHash(sa.spiI, sa.spiR, netip.AddrPortFrom(sa.c.cfg.Local, e.opt.IKEPort))
	if sa.c.cfg.ForceEncap {
		src = nonce()[:sha1.Size] // a hash nobody matches: the peer sees a NAT (what strongSwan's encap=yes does)
	}
	dst := natHash(sa.spiI, sa.spiR, netip.AddrPortFrom(sa.c.cfg.Remote, e.opt.IKEPort))
	return []Payload{&Notify{Kind: NATDetectionSourceIP, Data: src}, &Notify{Kind: NATDetectionDestinationIP, Data: dst}}
}

// natDetected reads the peer's NAT detection notifies: a NAT is on the
// path when its source hash is not our view of its address or its
// destination hash is not our address.
// The hashes cover the SPIs as in the message's header (RFC 7296 §2.23),
// so a request's use SPIr 0.
func (e *Endpoint) natDetected(sa *ikeSA, spiR uint64, notifies []*Notify, from netip.AddrPort) bool {
	var src, dst []byte
	for _, n := range notifies {
		switch n.Kind {
		case NATDetectionSourceIP:
			src = n.Data
		case NATDetectionDestinationIP:
			dst = n.Data
		}
	}
	if src == nil || dst == nil || !sa.c.cfg.NATT {
		return false
	}
	return string(src) != string(natHash(sa.spiI, spiR, from)) ||
		string(dst) != string(natHash(sa.spiI, spiR, netip.AddrPortFrom(sa.c.cfg.Local, e.opt.IKEPort)))
}

// initiate starts IKE_SA_INIT for c (RFC 7296 §1.2).
func (e *Endpoint) initiate(c *conn) {
	g, _ := modpGroup(c.cfg.IKE.DH)
	dh, err := g.generate()
	if err != nil {
		e.failConn(c, 1, "DH key generation: "+err.Error())
		return
	}
	sa := &ikeSA{e: e, c: c, initiator: true, firstInitiator: true, spiI: randSPI64(), ni: nonce(), dh: dh, lastRecv: time.Now()}
	c.sa, c.retryAt = sa, time.Time{}
	e.sas[sa.spiI] = sa
	e.setStatus(c, func(s *Status) { s.Phase1, s.Phase1Reason = StateConnecting, "" })
	ps := []Payload{
		&SA{Proposals: []Proposal{c.cfg.IKE.proposal(ProtoIKE, nil, true)}},
		&KE{Group: c.cfg.IKE.DH, Data: dh.public},
		&Nonce{Data: sa.ni},
	}
	ps = append(ps, e.natNotifies(sa)...)
	sa.initI = Marshal(Header{SPIi: sa.spiI, Exchange: IKESAInit, Flags: FlagInitiator}, ps)
	sa.sendRequest(sa.initI, sa.onInitResponse)
}

// respondInit answers an IKE_SA_INIT request (RFC 7296 §1.2).
func (e *Endpoint) respondInit(h Header, ps []Payload, raw []byte, from netip.AddrPort, natt bool) {
	for _, sa := range e.sas {
		if !sa.initiator && sa.spiI == h.SPIi && sa.c.cfg.Remote == from.Addr() && sa.lastResp != nil && !sa.established {
			e.send(sa, sa.lastResp) // a retransmitted request (RFC 7296 §2.1)
			return
		}
	}
	c := e.connFor(from.Addr())
	if c == nil {
		e.count(func(c *Counters) { c.UnknownSA++ })
		return
	}
	m := collect(ps)
	offer, ke, ni := m.sa, m.ke, m.nonce
	if ni != nil && !e.admitInit(c, h, ps, ni.Data, from, natt) {
		return
	}
	sa := &ikeSA{e: e, c: c, spiI: h.SPIi, spiR: randSPI64(), initI: raw, natt: natt, lastRecv: time.Now(), peerMsgID: 1, created: time.Now()}
	reply := func(ps ...Payload) {
		sa.lastResp = Marshal(Header{SPIi: h.SPIi, SPIr: 0, Exchange: IKESAInit, Flags: FlagResponse}, ps)
		e.send(sa, sa.lastResp)
	}
	if offer == nil || ke == nil || ni == nil {
		reply(&Notify{Kind: InvalidSyntax})
		e.refuseUnauthenticated(c, "IKE_SA_INIT from the peer lacks SA, KE or Nonce")
		return
	}
	chosen, ok := c.cfg.IKE.choose(ProtoIKE, offer.Proposals, false)
	if !ok {
		reply(&Notify{Kind: NoProposalChosen})
		e.refuseUnauthenticated(c, fmt.Sprintf("NO_PROPOSAL_CHOSEN: peer offered %s; we accept %s",
			FormatProposals(offer.Proposals), FormatProposal(c.cfg.IKE.proposal(ProtoIKE, nil, true))))
		return
	}
	if ke.Group != c.cfg.IKE.DH {
		// RFC 7296 §1.2: tell the initiator which group we want.
		reply(&Notify{Kind: InvalidKEPayload, Data: binary.BigEndian.AppendUint16(nil, c.cfg.IKE.DH)})
		return
	}
	g, _ := modpGroup(c.cfg.IKE.DH)
	dh, err := g.generate()
	if err != nil {
		return
	}
	gir, err := dh.shared(ke.Data)
	if err != nil {
		reply(&Notify{Kind: InvalidSyntax})
		e.refuseUnauthenticated(c, err.Error())
		return
	}
	sa.ni, sa.nr = ni.Data, nonce()
	natDetected := e.natDetected(sa, 0, m.notifies, from)
	if err := sa.deriveKeys(gir); err != nil {
		e.refuseUnauthenticated(c, err.Error())
		return
	}
	chosen.SPI = nil
	out := []Payload{&SA{Proposals: []Proposal{chosen}}, &KE{Group: c.cfg.IKE.DH, Data: dh.public}, &Nonce{Data: sa.nr}}
	out = append(out, e.natNotifies(sa)...)
	sa.initR = Marshal(Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: IKESAInit, Flags: FlagResponse}, out)
	sa.lastResp = sa.initR
	// A new IKE SA from the peer (it restarted) replaces an established one
	// only once it authenticated (handleAuth): an unauthenticated
	// IKE_SA_INIT from a spoofed address must not take the tunnel down.
	e.sas[sa.spiR] = sa
	if c.sa == nil || !c.sa.established {
		if c.sa != nil {
			c.sa.remove()
		}
		c.sa = sa
		e.setStatus(c, func(s *Status) {
			s.Phase1, s.Phase1Reason, s.IKEProposal = StateConnecting, "", FormatProposal(chosen)
		})
	}
	// Reply from where the request came: the peer floats to 4500 only
	// after IKE_SA_INIT.
	e.send(sa, sa.initR)
	sa.natt = sa.natt || natDetected || c.cfg.ForceEncap
}

func (sa *ikeSA) deriveKeys(gir []byte) error {
	cfg := sa.c.cfg
	f, err := newPRF(cfg.IKE.PRF)
	if err != nil {
		return err
	}
	cs, err := newCipherSuite(cfg.IKE.Encr, cfg.IKE.KeyBits, cfg.IKE.Integ)
	if err != nil {
		return err
	}
	sa.keys = deriveIKEKeys(f, cs, newSKEYSEED(f, sa.ni, sa.nr, gir), sa.ni, sa.nr, sa.spiI, sa.spiR)
	return nil
}

func (sa *ikeSA) onInitResponse(h Header, ps []Payload) {
	e, c := sa.e, sa.c
	m := collect(ps)
	for _, n := range m.notifies {
		if n.Kind == Cookie && m.sa == nil {
			if !sa.retryWithCookie(n.Data) {
				sa.fail(1, "the peer keeps asking for a COOKIE (RFC 7296 §2.6): it has too many half-open IKE SAs, or answers wrongly")
			}
			return
		}
		if n.Kind.IsError() {
			reason := n.Kind.String()
			if n.Kind == NoProposalChosen {
				reason += ": peer accepted none of our proposal " + FormatProposal(c.cfg.IKE.proposal(ProtoIKE, nil, true))
			}
			if n.Kind == InvalidKEPayload && len(n.Data) == 2 {
				reason += fmt.Sprintf(": peer wants DH group %d, we are configured with %d", binary.BigEndian.Uint16(n.Data), c.cfg.IKE.DH)
			}
			sa.fail(1, reason)
			return
		}
	}
	chosen, ke, nr := m.sa, m.ke, m.nonce
	if ke == nil || nr == nil {
		sa.fail(1, "IKE_SA_INIT response lacks KE or Nonce")
		return
	}
	prop, err := c.cfg.IKE.accepted(ProtoIKE, chosen, true)
	if err != nil {
		sa.fail(1, err.Error())
		return
	}
	gir, err := sa.dh.shared(ke.Data)
	if err != nil {
		sa.fail(1, err.Error())
		return
	}
	sa.spiR, sa.nr, sa.initR = h.SPIr, nr.Data, sa.rawIn
	if err := sa.deriveKeys(gir); err != nil {
		sa.fail(1, err.Error())
		return
	}
	e.setStatus(c, func(s *Status) { s.IKEProposal = FormatProposal(prop) })
	if c.cfg.ForceEncap || e.natDetected(sa, sa.spiR, m.notifies, netip.AddrPortFrom(c.cfg.Remote, e.opt.IKEPort)) {
		sa.natt = true
	}
	// IKE_AUTH with the first CHILD SA (RFC 7296 §1.2).
	sa.childSPI = randSPI32()
	idi := idFor(c.cfg.LocalID, c.cfg.Local, false)
	// INITIAL_CONTACT: we hold no other IKE SA with this peer, so it may
	// drop any it has (RFC 7296 §2.4), as charon does.
	ps2 := []Payload{idi, &Notify{Kind: InitialContact}}
	if c.cfg.RemoteID != "" {
		ps2 = append(ps2, idFor(c.cfg.RemoteID, c.cfg.Remote, true))
	}
	ps2 = append(ps2,
		&Auth{Method: AuthSharedKey, Data: pskAuth(sa.keys.prf, c.cfg.PSK, sa.initI, sa.nr, sa.keys.pi, idi)},
		&SA{Proposals: []Proposal{c.cfg.ESP.proposal(ProtoESP, binary.BigEndian.AppendUint32(nil, sa.childSPI), false)}},
		&TS{Selectors: selectors(c.cfg.LocalTS)},
		&TS{Responder: true, Selectors: selectors(c.cfg.RemoteTS)},
	)
	sa.sendEncrypted(IKEAuth, ps2, sa.onAuthResponse)
}

// idFor builds the ID payload of an identity: an address when s is one
// (or empty, meaning the endpoint), an FQDN otherwise.
func idFor(s string, addr netip.Addr, responder bool) *ID {
	if s != "" {
		if a, err := netip.ParseAddr(s); err == nil {
			addr = a
		} else {
			return &ID{Responder: responder, IDType: IDFQDN, Data: []byte(s)}
		}
	}
	if addr.Is4() {
		return &ID{Responder: responder, IDType: IDIPv4, Data: addr.AsSlice()}
	}
	return &ID{Responder: responder, IDType: IDIPv6, Data: addr.AsSlice()}
}

func formatID(id *ID) string {
	switch id.IDType {
	case IDIPv4, IDIPv6:
		if a, ok := netip.AddrFromSlice(id.Data); ok {
			return a.String()
		}
	case IDFQDN:
		return string(id.Data)
	}
	return fmt.Sprintf("id-type-%d:%x", id.IDType, id.Data)
}

func (sa *ikeSA) onAuthResponse(h Header, ps []Payload) {
	c := sa.c
	m := collect(ps)
	idr, auth, chosen, tsi, tsr := m.idr, m.auth, m.sa, m.tsi, m.tsr
	// An error without IDr and AUTH is the IKE SA's (RFC 7296 §2.21.2);
	// beside them, the CHILD SA's.
	var childErr *Notify
	for _, n := range m.notifies {
		if n.Kind == AuthenticationFailed || (n.Kind.IsError() && idr == nil && auth == nil) {
			sa.fail(1, n.Kind.String()+sa.authHint(n.Kind))
			return
		}
		if n.Kind.IsError() {
			childErr = n
		}
	}
	if idr == nil || auth == nil {
		sa.fail(1, "IKE_AUTH response lacks IDr or AUTH")
		return
	}
	want := idFor(c.cfg.RemoteID, c.cfg.Remote, true)
	if idr.IDType != want.IDType || string(idr.Data) != string(want.Data) {
		sa.fail(1, fmt.Sprintf("AUTHENTICATION_FAILED: identity mismatch: peer is %q, expected remote id %q", formatID(idr), formatID(want)))
		sa.sendInformational([]Payload{&Notify{Kind: AuthenticationFailed}}, nil)
		return
	}
	expect := pskAuth(sa.keys.prf, c.cfg.PSK, sa.initR, sa.ni, sa.keys.pr, idr)
	if auth.Method != AuthSharedKey || !authEqual(auth.Data, expect) {
		sa.fail(1, "AUTHENTICATION_FAILED: the peer's AUTH does not match our pre-shared key")
		sa.sendInformational([]Payload{&Notify{Kind: AuthenticationFailed}}, nil)
		return
	}
	sa.setEstablished()
	if childErr != nil {
		sa.childFailed(childErr.Kind)
		return
	}
	prop, err := c.cfg.ESP.accepted(ProtoESP, chosen, false)
	if err != nil || len(prop.SPI) != 4 {
		sa.childFailed(NoProposalChosen)
		return
	}
	if tsi == nil || tsr == nil || !within(tsi.Selectors, selectors(c.cfg.LocalTS)) || !within(tsr.Selectors, selectors(c.cfg.RemoteTS)) {
		sa.childFailed(TSUnacceptable)
		return
	}
	sa.installChild(prop, sa.childSPI, binary.BigEndian.Uint32(prop.SPI), nil, sa.ni, sa.nr, true, tsi.Selectors, tsr.Selectors)
}

// authHint explains the usual cause of a failure notification.
func (sa *ikeSA) authHint(n NotifyType) string {
	switch n {
	case AuthenticationFailed:
		return ": the peer rejected our AUTH (wrong pre-shared key or identity)"
	case NoProposalChosen:
		return ": peer accepted none of " + FormatProposal(sa.c.cfg.ESP.proposal(ProtoESP, nil, false))
	}
	return ""
}

func (sa *ikeSA) setEstablished() {
	sa.established = true
	if lt := sa.c.cfg.IKELifetime; lt > 0 {
		sa.rekeyAt = time.Now().Add(rekeyMargin(lt, sa.firstInitiator))
		sa.expireAt = time.Now().Add(lt)
	}
	sa.e.setStatus(sa.c, func(s *Status) {
		s.Phase1, s.Phase1Reason, s.Established = StateEstablished, "", time.Now()
	})
	sa.e.log.Info("ike: IKE SA established", "conn", sa.c.cfg.Name, "initiator", sa.initiator, "natt", sa.natt)
}

// rekeyMargin: the end that initiated the connection rekeys at 90% of the
// lifetime, the other at 95% (a fallback for a peer with a longer
// lifetime). The roles never swap, even after an IKE rekey, so two ends of
// one configuration seldom rekey the same SA at once; when they do, the
// collision is resolved (RFC 7296 §2.8.1 for a CHILD SA, §2.8.2 for the
// IKE SA).
func rekeyMargin(lt time.Duration, initiator bool) time.Duration {
	if initiator {
		return lt * 9 / 10
	}
	return lt * 19 / 20
}

func (sa *ikeSA) childFailed(n NotifyType) {
	reason := n.String()
	switch n {
	case TSUnacceptable:
		reason += fmt.Sprintf(": our selectors %s === %s were refused", joinSelectors(selectors(sa.c.cfg.LocalTS)), joinSelectors(selectors(sa.c.cfg.RemoteTS)))
	case NoProposalChosen:
		reason += ": peer accepted none of our proposal " + FormatProposal(sa.c.cfg.ESP.proposal(ProtoESP, nil, sa.c.cfg.ESP.DH != 0))
	}
	sa.e.setStatus(sa.c, func(s *Status) { s.Phase2, s.Phase2Reason = StateFailed, reason })
}

// handleAuth is the responder's IKE_AUTH (RFC 7296 §1.2, §2.15).
func (sa *ikeSA) handleAuth(ps []Payload) []Payload {
	c := sa.c
	m := collect(ps)
	idi, idrWanted, auth, offer, tsi, tsr := m.idi, m.idr, m.auth, m.sa, m.tsi, m.tsr
	if idi == nil || auth == nil {
		sa.fail(1, "IKE_AUTH request lacks IDi or AUTH")
		return []Payload{&Notify{Kind: AuthenticationFailed}}
	}
	want := idFor(c.cfg.RemoteID, c.cfg.Remote, false)
	if idi.IDType != want.IDType || string(idi.Data) != string(want.Data) {
		sa.fail(1, fmt.Sprintf("AUTHENTICATION_FAILED: identity mismatch: peer is %q, expected remote id %q", formatID(idi), formatID(want)))
		return []Payload{&Notify{Kind: AuthenticationFailed}}
	}
	expect := pskAuth(sa.keys.prf, c.cfg.PSK, sa.initI, sa.nr, sa.keys.pi, idi)
	if auth.Method != AuthSharedKey || !authEqual(auth.Data, expect) {
		sa.fail(1, "AUTHENTICATION_FAILED: the peer's AUTH does not match our pre-shared key")
		return []Payload{&Notify{Kind: AuthenticationFailed}}
	}
	idr := idFor(c.cfg.LocalID, c.cfg.Local, true)
	if idrWanted != nil && (idrWanted.IDType != idr.IDType || string(idrWanted.Data) != string(idr.Data)) {
		sa.fail(1, fmt.Sprintf("AUTHENTICATION_FAILED: identity mismatch: peer expects us as %q, our local id is %q", formatID(idrWanted), formatID(idr)))
		return []Payload{&Notify{Kind: AuthenticationFailed}}
	}
	out := []Payload{idr, &Auth{Method: AuthSharedKey, Data: pskAuth(sa.keys.prf, c.cfg.PSK, sa.initR, sa.ni, sa.keys.pr, idr)}}
	if old := c.sa; old != sa {
		// The peer restarted and authenticated: the new SA takes over, the
		// old one's CHILD SA goes once the new one is installed.
		c.sa = sa
		if old != nil {
			defer func() { old.teardown("replaced by the peer's new IKE SA"); old.remove() }()
		}
	}
	sa.setEstablished()
	if offer == nil || tsi == nil || tsr == nil {
		return out // an IKE SA without CHILD SA (RFC 7296 §1.2 allows it for some uses)
	}
	child, err := sa.respondChild(offer, tsi, tsr, nil, sa.ni, sa.nr, true)
	if err != nil {
		return append(out, err)
	}
	return append(out, child...)
}

// respondChild selects the CHILD SA of a request (IKE_AUTH or
// CREATE_CHILD_SA), installs it and returns the response payloads, or the
// error notification.
func (sa *ikeSA) respondChild(offer *SA, tsi, tsr *TS, gir, ni, nr []byte, inAuth bool) ([]Payload, *Notify) {
	c := sa.c
	prop, ok := c.cfg.ESP.choose(ProtoESP, offer.Proposals, inAuth)
	if !ok || len(prop.SPI) != 4 {
		sa.childRefused(inAuth, fmt.Sprintf("NO_PROPOSAL_CHOSEN: peer offered %s; we accept %s",
			FormatProposals(offer.Proposals), FormatProposal(c.cfg.ESP.proposal(ProtoESP, nil, !inAuth))))
		return nil, &Notify{Kind: NoProposalChosen}
	}
	// Our TSi is the peer's side: the initiator's TSi holds its subnets.
	ni2 := narrow(selectors(c.cfg.RemoteTS), tsi.Selectors)
	nr2 := narrow(selectors(c.cfg.LocalTS), tsr.Selectors)
	if ni2 == nil || nr2 == nil {
		sa.childRefused(inAuth, fmt.Sprintf("TS_UNACCEPTABLE: peer proposed %s === %s; we protect %s === %s",
			joinSelectors(tsi.Selectors), joinSelectors(tsr.Selectors), joinSelectors(selectors(c.cfg.RemoteTS)), joinSelectors(selectors(c.cfg.LocalTS))))
		return nil, &Notify{Kind: TSUnacceptable}
	}
	in := randSPI32()
	out := binary.BigEndian.Uint32(prop.SPI)
	prop.SPI = binary.BigEndian.AppendUint32(nil, in)
	sa.installChild(prop, in, out, gir, ni, nr, false, ni2, nr2)
	return []Payload{&SA{Proposals: []Proposal{prop}}, &TS{Selectors: ni2}, &TS{Responder: true, Selectors: nr2}}, nil
}

// childRefused records why we refused a peer's CHILD SA: phase 2 failed in
// IKE_AUTH; for a rekey the current SA still works until its lifetime ends.
func (sa *ikeSA) childRefused(inAuth bool, reason string) {
	if inAuth {
		sa.e.setStatus(sa.c, func(s *Status) { s.Phase2, s.Phase2Reason = StateFailed, reason })
		return
	}
	sa.rekeyErr = "we refused the peer's rekey: " + reason
	sa.e.log.Warn("ike: CHILD SA rekey refused", "conn", sa.c.cfg.Name, "reason", reason)
}

// installChild derives a CHILD SA's keys (RFC 7296 §2.17), makes it the
// connection's CHILD SA and hands it to the handler. exchInitiator tells
// whether we initiated the exchange that created it: that side's outbound
// SA takes the first keys of KEYMAT. tsi/tsr are the initiator's and
// responder's selectors of that exchange. The CHILD SA it replaces is the
// caller's to retire.
func (sa *ikeSA) installChild(prop Proposal, in, out uint32, gir, ni, nr []byte, exchInitiator bool, tsi, tsr []Selector) {
	c := sa.c
	alg, _ := c.cfg.ESP.ESPAlgorithm()
	k := deriveChildKeys(sa.keys.prf, sa.keys.d, gir, ni, nr, alg.EncKeyLen(), alg.AuthKeyLen())
	outEnc, outInteg, inEnc, inInteg := k.encI, k.integI, k.encR, k.integR
	local, remote := tsi, tsr
	if !exchInitiator {
		outEnc, outInteg, inEnc, inInteg = k.encR, k.integR, k.encI, k.integI
		local, remote = tsr, tsi
	}
	ch := ChildSA{
		Conn: c.cfg.Name, Algorithm: alg, InSPI: in, OutSPI: out,
		Out:   esp.Config{SPI: out, Src: c.cfg.Local, Dst: c.cfg.Remote, Algorithm: alg, EncKey: outEnc, AuthKey: orNil(outInteg)},
		In:    esp.Config{SPI: in, Src: c.cfg.Remote, Dst: c.cfg.Local, Algorithm: alg, EncKey: inEnc, AuthKey: orNil(inInteg)},
		Encap: sa.natt, LocalPort: sa.e.opt.NATTPort, RemotePort: sa.e.opt.NATTPort,
	}
	ch.SendAfterOldDeleted = sa.child != nil && !exchInitiator
	n := &child{sa: ch, ni: ni, nr: nr}
	if lt := c.cfg.ChildLifetime; lt > 0 {
		n.rekeyAt = time.Now().Add(rekeyMargin(lt, sa.firstInitiator))
		n.expireAt = time.Now().Add(lt)
	}
	sa.child = n
	if sa.e.opt.Handler != nil {
		sa.e.opt.Handler.ChildUp(ch)
	}
	sa.e.setStatus(c, func(s *Status) {
		c.child = &ch
		s.Phase2, s.Phase2Reason, s.ESPProposal = StateEstablished, "", FormatProposal(prop)
		s.InSPI, s.OutSPI, s.Encap = in, out, sa.natt
		s.LocalTS, s.RemoteTS = formatSelectors(local), formatSelectors(remote)
	})
	sa.e.log.Info("ike: CHILD SA established", "conn", c.cfg.Name, "in_spi", fmt.Sprintf("0x%08x", in), "out_spi", fmt.Sprintf("0x%08x", out), "encap", sa.natt)
}

// retireChild keeps old, replaced by a rekey, until its Delete exchange
// ends; we send that Delete when we initiated the rekey that survives
// (RFC 7296 §2.8, §2.8.1), else the peer does.
func (sa *ikeSA) retireChild(old *child, weDelete bool) {
	if slices.Contains(sa.retired, old) {
		return // retired already: its Delete is on its way
	}
	sa.retired = append(sa.retired, old)
	if weDelete {
		sa.deleteRetired(old)
	}
}

// deleteRetired sends the Delete of a retired CHILD SA; it leaves the
// dataplane once answered, unless the peer's own Delete of it came first.
func (sa *ikeSA) deleteRetired(old *child) {
	sa.sendInformational([]Payload{deleteChild(old.sa.InSPI)}, func(Header, []Payload) {
		// An IKE rekey meanwhile moved the retired CHILD SAs to its successor.
		for _, s := range []*ikeSA{sa, sa.c.sa} {
			if s != nil {
				s.retired = slices.DeleteFunc(s.retired, func(r *child) bool { return r == old })
			}
		}
		sa.childDown(old)
	})
}

// deleteChild is the Delete payload of the CHILD SA whose inbound SPI is
// spi (RFC 7296 §3.11: a CHILD SA is named by the SPI its deleter receives on).
func deleteChild(spi uint32) *Delete {
	return &Delete{Protocol: ProtoESP, SPISize: 4, SPIs: [][]byte{binary.BigEndian.AppendUint32(nil, spi)}}
}

// countChildRekey counts a rekey of the connection's CHILD SA.
func (sa *ikeSA) countChildRekey() {
	sa.e.setStatus(sa.c, func(s *Status) { s.ChildRekeys++ })
}

// childDown takes ch out of the dataplane, once: both ends may delete a
// retired CHILD SA.
func (sa *ikeSA) childDown(ch *child) {
	if ch.down {
		return
	}
	ch.down = true
	if sa.e.opt.Handler != nil {
		sa.e.opt.Handler.ChildDown(sa.c.cfg.Name, ch.sa.InSPI)
	}
}

package ike

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// handle processes one message of this SA: a response to our outstanding
// request, or a request of the peer (RFC 7296 §2.1-2.3, window size 1).
func (sa *ikeSA) handle(h Header, ps []Payload, raw []byte, from netip.AddrPort, natt bool) {
	e := sa.e
	if h.IsResponse() {
		if sa.req == nil || h.MsgID != sa.req.id {
			return // late duplicate of an answered request
		}
		if h.Exchange == IKESAInit {
			sa.rawIn = raw
		} else if ps = sa.decrypt(raw, ps); ps == nil {
			return
		}
		sa.lastRecv = time.Now()
		req := sa.req
		sa.req = nil
		req.onResp(h, ps)
		sa.next()
		return
	}
	if h.MsgID+1 == sa.peerMsgID && sa.lastResp != nil {
		e.count(func(c *Counters) { c.Retransmitted++ })
		e.send(sa, sa.lastResp) // the peer lost our answer (RFC 7296 §2.1)
		return
	}
	if h.MsgID != sa.peerMsgID || sa.keys == nil {
		return
	}
	if ps = sa.decrypt(raw, ps); ps == nil {
		return
	}
	sa.lastRecv = time.Now()
	if natt && !sa.natt {
		sa.natt = true // the peer floated to port 4500 (RFC 7296 §2.23)
	}
	var out []Payload
	switch h.Exchange {
	case IKEAuth:
		if sa.established {
			return
		}
		out = sa.handleAuth(ps)
	case CreateChildSA:
		if !sa.established {
			return
		}
		out = sa.handleCreateChild(ps)
	case Informational:
		out = sa.handleInformational(ps)
	default:
		return
	}
	resp, err := sa.encrypt(Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: h.Exchange, Flags: sa.flags() | FlagResponse, MsgID: h.MsgID}, out)
	if err != nil {
		return
	}
	sa.peerMsgID++
	sa.lastResp = resp
	e.send(sa, resp)
	if sa.dead {
		sa.remove()
	}
}

// flags is the I flag of messages we send on this SA (RFC 7296 §3.1).
func (sa *ikeSA) flags() uint8 {
	if sa.initiator {
		return FlagInitiator
	}
	return 0
}

// decrypt opens the SK payload of a protected message and returns its
// payloads; nil (counted) when it is missing or fails its integrity check.
func (sa *ikeSA) decrypt(raw []byte, ps []Payload) []Payload {
	if sa.keys == nil || len(ps) == 0 {
		sa.e.count(func(c *Counters) { c.Malformed++ })
		return nil
	}
	sk, ok := ps[len(ps)-1].(*Encrypted)
	if !ok {
		// Only IKE_SA_INIT travels in clear; anything else unprotected
		// is ignored (RFC 7296 §2.21).
		sa.e.count(func(c *Counters) { c.Malformed++ })
		return nil
	}
	ek, ak := sa.keys.er, sa.keys.ar
	if !sa.initiator {
		ek, ak = sa.keys.ei, sa.keys.ai
	}
	plain, err := sa.keys.cs.open(ek, ak, raw, sk.Data)
	if err != nil {
		sa.e.count(func(c *Counters) { c.BadIntegrity++ })
		return nil
	}
	inner, err := ParsePayloads(sk.First, plain)
	if err != nil || len(inner) == 0 && sk.First != PayloadNone {
		sa.e.count(func(c *Counters) { c.Malformed++ })
		return nil
	}
	if inner == nil {
		inner = []Payload{}
	}
	return inner
}

// encrypt builds a protected message: header, SK payload, ICV.
func (sa *ikeSA) encrypt(h Header, ps []Payload) ([]byte, error) {
	inner := appendPayloads(nil, ps)
	skLen := genericHeaderLen + sa.keys.cs.sealedLen(len(inner))
	h.Next = PayloadEncrypted
	h.Length = uint32(HeaderLen + skLen)
	aad := make([]byte, HeaderLen+genericHeaderLen)
	h.put(aad)
	aad[HeaderLen] = byte(firstType(ps))
	binary.BigEndian.PutUint16(aad[HeaderLen+2:], uint16(skLen))
	ek, ak := sa.keys.ei, sa.keys.ai
	if !sa.initiator {
		ek, ak = sa.keys.er, sa.keys.ar
	}
	return sa.keys.cs.seal(ek, ak, aad, inner)
}

// sendRequest sends a request now if the window is free, else queues it.
func (sa *ikeSA) sendRequest(msg []byte, onResp func(Header, []Payload)) {
	sa.req = &request{id: sa.msgID, data: msg, sentAt: time.Now(), tries: 1, onResp: onResp}
	sa.msgID++
	sa.e.send(sa, msg)
}

func (sa *ikeSA) sendEncrypted(x ExchangeType, ps []Payload, onResp func(Header, []Payload)) {
	start := func() {
		msg, err := sa.encrypt(Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: x, Flags: sa.flags(), MsgID: sa.msgID}, ps)
		if err != nil {
			sa.fail(1, "encrypt: "+err.Error())
			return
		}
		sa.sendRequest(msg, onResp)
	}
	if sa.req != nil {
		sa.queue = append(sa.queue, start)
		return
	}
	start()
}

// next starts the oldest queued request once the window is free.
func (sa *ikeSA) next() {
	if sa.req == nil && len(sa.queue) > 0 && !sa.dead {
		f := sa.queue[0]
		sa.queue = sa.queue[1:]
		f()
	}
}

func (sa *ikeSA) sendInformational(ps []Payload, onResp func(Header, []Payload)) {
	if onResp == nil {
		onResp = func(Header, []Payload) {}
	}
	sa.sendEncrypted(Informational, ps, onResp)
}

// sendDelete deletes the IKE SA and with it its CHILD SAs (RFC 7296 §1.4.1).
func (sa *ikeSA) sendDelete() {
	sa.queue = nil
	sa.req = nil
	msg, err := sa.encrypt(Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: Informational, Flags: sa.flags(), MsgID: sa.msgID}, []Payload{&Delete{Protocol: ProtoIKE}})
	if err == nil {
		sa.e.send(sa, msg)
	}
	sa.teardown("deleted by us")
}

func (sa *ikeSA) handleInformational(ps []Payload) []Payload {
	m := collect(ps)
	var out []Payload
	for _, d := range m.deletes {
		switch d.Protocol {
		case ProtoIKE:
			sa.teardown("peer deleted the IKE SA")
			sa.dead = true
			return nil
		case ProtoESP:
			for _, spi := range d.SPIs {
				if len(spi) != 4 {
					continue
				}
				out = append(out, sa.peerDeletedChild(binary.BigEndian.Uint32(spi))...)
			}
		}
	}
	for _, n := range m.notifies {
		if n.Kind == AuthenticationFailed {
			sa.fail(1, "AUTHENTICATION_FAILED: the peer rejected our AUTH (wrong pre-shared key or identity)")
			return nil
		}
	}
	return out
}

// peerDeletedChild handles a Delete for the CHILD SA whose outbound SPI is
// spi: the end of a rekey (the old pair, or the redundant one of a
// collision), or the CHILD SA going down.
func (sa *ikeSA) peerDeletedChild(spi uint32) []Payload {
	for i, old := range sa.retired {
		if old.sa.OutSPI == spi {
			sa.retired = append(sa.retired[:i], sa.retired[i+1:]...)
			sa.childDown(old)
			return []Payload{deleteChild(old.sa.InSPI)}
		}
	}
	ch := sa.child
	if ch == nil || ch.sa.OutSPI != spi {
		if sa.rekeyingChild != nil && len(sa.deletedUnknown) < maxDeletedUnknown {
			// Perhaps the SA our outstanding rekey makes: not installed
			// if it is (rekeyChild).
			sa.deletedUnknown = append(sa.deletedUnknown, spi)
		}
		return nil
	}
	if ch == sa.childCollision {
		// The peer lost the collision (RFC 7296 §2.8.1) and deleted its SA
		// before our rekey was answered: it leaves the dataplane once ours
		// is in, so the connection never lacks an outbound SA.
		ch.peerDeleted = true
		return []Payload{deleteChild(ch.sa.InSPI)}
	}
	sa.childGone(ch)
	return []Payload{deleteChild(ch.sa.InSPI)}
}

// childGone takes down the connection's CHILD SA ch, which the peer deleted.
func (sa *ikeSA) childGone(ch *child) {
	sa.child = nil
	sa.childDown(ch)
	sa.e.setStatus(sa.c, func(s *Status) {
		s.Phase2, s.Phase2Reason = StateDown, "peer deleted the CHILD SA"
		sa.c.child = nil
	})
}

// halfOpenTimeout bounds how long a responder keeps an IKE SA that
// finished IKE_SA_INIT but not IKE_AUTH.
const halfOpenTimeout = 30 * time.Second

// tick drives retransmissions, DPD and rekeying.
func (sa *ikeSA) tick(now time.Time) {
	e := sa.e
	if r := sa.req; r != nil {
		if now.Sub(r.sentAt) < e.opt.RetransmitBase<<(r.tries-1) {
			return
		}
		if r.tries >= e.opt.RetransmitTries {
			reason := fmt.Sprintf("peer unreachable: no answer to %d transmissions", r.tries)
			if sa.established {
				reason = "DPD: " + reason
			}
			sa.fail(1, reason)
			return
		}
		r.tries++
		r.sentAt = now
		e.count(func(c *Counters) { c.Retransmitted++ })
		e.send(sa, r.data)
		return
	}
	if !sa.established && !sa.initiator && now.Sub(sa.created) > halfOpenTimeout {
		// A responder SA whose IKE_AUTH never came (RFC 7296 §2.6: half-open
		// SAs must not pile up).
		sa.remove()
		if sa.c.sa == nil {
			sa.e.refuseUnauthenticated(sa.c, "peer never completed IKE_AUTH")
		}
		return
	}
	if !sa.established {
		return
	}
	// Lifetimes end even when rekeying keeps failing (a PFS group
	// mismatch shows only then): the SA is deleted, with the reason.
	if !sa.expireAt.IsZero() && now.After(sa.expireAt) {
		current := sa.c.sa == sa // not an old SA whose replacement is up
		sa.sendDelete()
		sa.remove()
		if current {
			sa.e.failConn(sa.c, 1, "IKE SA lifetime expired without a rekey: "+sa.rekeyErr)
		}
		return
	}
	if ch := sa.child; ch != nil && !ch.expireAt.IsZero() && now.After(ch.expireAt) {
		sa.child = nil
		sa.childDown(ch)
		sa.sendInformational([]Payload{deleteChild(ch.sa.InSPI)}, nil)
		reason := "CHILD SA lifetime expired without a rekey: " + sa.rekeyErr
		sa.e.setStatus(sa.c, func(s *Status) {
			s.Phase2, s.Phase2Reason, s.InSPI, s.OutSPI = StateFailed, reason, 0, 0
			sa.c.child = nil
		})
		sa.e.log.Warn("ike: negotiation failed", "conn", sa.c.cfg.Name, "phase", 2, "reason", reason)
	}
	if len(sa.queue) > 0 {
		return
	}
	switch {
	case !sa.rekeyAt.IsZero() && now.After(sa.rekeyAt):
		sa.rekeyAt = time.Time{}
		if sa.c.sa == sa { // a superseded SA is on its way out
			sa.rekeyIKE()
		}
	case sa.child != nil && !sa.child.rekeyAt.IsZero() && now.After(sa.child.rekeyAt):
		sa.child.rekeyAt = time.Time{}
		sa.rekeyChild()
	case sa.c.cfg.DPD > 0 && now.Sub(sa.lastRecv) > sa.c.cfg.DPD:
		sa.sendInformational(nil, nil) // liveness check (RFC 7296 §2.4)
	}
}

// fail records a failure of phase 1 or 2 and, for phase 1, tears the IKE
// SA down; an initiator tries again after RetryAfter.
func (sa *ikeSA) fail(phase int, reason string) {
	if phase == 2 {
		sa.e.log.Warn("ike: negotiation failed", "conn", sa.c.cfg.Name, "phase", phase, "reason", reason)
		sa.e.setStatus(sa.c, func(s *Status) { s.Phase2, s.Phase2Reason = StateFailed, reason })
		return
	}
	// Only the connection's current SA speaks for it: a superseded one
	// (rekeyed, or replaced by the peer's new SA) failing, say on its
	// unanswered Delete, leaves its successor's status alone; a half-open
	// SA beside an established one failed before anyone authenticated.
	current := sa.c.sa == sa
	sa.teardown(reason)
	sa.remove()
	switch {
	case current:
		sa.e.failConn(sa.c, 1, reason)
	case !sa.established:
		sa.e.refuseUnauthenticated(sa.c, reason)
	default:
		sa.e.log.Info("ike: superseded IKE SA failed", "conn", sa.c.cfg.Name, "reason", reason)
	}
}

// failConn marks a connection failed and schedules the next attempt.
func (e *Endpoint) failConn(c *conn, phase int, reason string) {
	e.log.Warn("ike: negotiation failed", "conn", c.cfg.Name, "phase", phase, "reason", reason)
	e.markFailed(c, reason)
}

// refuseUnauthenticated handles an exchange of c that failed before the
// peer authenticated: an IKE_SA_INIT we refuse (RFC 7296 §1.2, §2.21.1) or
// a half-open SA's IKE_AUTH. Anyone who can spoof the peer's address can
// cause one, so it is counted (Status.Refused) and never changes what the
// connection does: with an IKE SA established the status stays as it is;
// without one the reason is shown as the connection's failure, as the
// provider's console shows a misconfigured peer, but the initiator's own
// retry schedule is left alone (a refusal that pushed it out let spoofed
// INITs faster than RetryAfter keep a down connection down). Its WARN
// line is rate-limited either way.
func (e *Endpoint) refuseUnauthenticated(c *conn, reason string) {
	e.logRefused(c, reason, time.Now())
	e.setStatus(c, func(s *Status) { s.Refused, s.LastRefused = s.Refused+1, reason })
	if c.sa != nil && c.sa.established {
		return
	}
	e.setFailed(c, reason)
}

// logRefused logs the first refusal of an interval and counts the others.
func (e *Endpoint) logRefused(c *conn, reason string, now time.Time) {
	l := &e.refusedLog
	if l.since.IsZero() {
		l.since = now
		e.log.Warn("ike: unauthenticated request refused", "conn", c.cfg.Name, "reason", reason, "established", c.sa != nil && c.sa.established)
		return
	}
	l.suppressed++
	l.conn, l.last = c.cfg.Name, reason
}

// flushRefusedLog ends the interval of logRefused once it has run its
// course, with one line for the refusals it did not log.
func (e *Endpoint) flushRefusedLog(now time.Time) {
	l := &e.refusedLog
	if l.since.IsZero() || now.Sub(l.since) < refusedLogInterval {
		return
	}
	if l.suppressed > 0 {
		e.log.Warn("ike: more unauthenticated requests refused", "count", l.suppressed, "interval", refusedLogInterval, "last_conn", l.conn, "last_reason", l.last)
	}
	*l = refusedLog{}
}

// markFailed records a phase 1 failure of c and schedules the next attempt.
func (e *Endpoint) markFailed(c *conn, reason string) {
	e.setFailed(c, reason)
	if c.cfg.Initiate {
		c.retryAt = time.Now().Add(e.opt.RetryAfter)
	}
}

// setFailed shows a phase 1 failure of c in its status.
func (e *Endpoint) setFailed(c *conn, reason string) {
	e.setStatus(c, func(s *Status) {
		s.Phase1, s.Phase1Reason = StateFailed, reason
		if s.Phase2 == StateEstablished || s.Phase2 == StateConnecting {
			s.Phase2, s.Phase2Reason = StateDown, "IKE SA failed"
		}
	})
}

// teardown removes the CHILD SAs from the dataplane and marks the
// connection down; remove forgets the SA.
func (sa *ikeSA) teardown(reason string) {
	if sa.child != nil {
		sa.childDown(sa.child)
		sa.child = nil
	}
	for _, old := range sa.retired {
		sa.childDown(old)
	}
	sa.retired = nil
	sa.dead = true
	if sa.c.sa == sa {
		sa.e.setStatus(sa.c, func(s *Status) {
			s.Phase1, s.Phase1Reason = StateDown, reason
			s.Phase2, s.Phase2Reason = StateDown, reason
			s.InSPI, s.OutSPI = 0, 0
			sa.c.child = nil
		})
		if sa.c.cfg.Initiate {
			sa.c.retryAt = time.Now().Add(sa.e.opt.RetryAfter)
		}
	}
}

func (sa *ikeSA) remove() {
	delete(sa.e.sas, sa.ourSPI())
	if sa.c.sa == sa {
		sa.c.sa = nil
	}
}

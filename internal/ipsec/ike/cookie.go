package ike

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
)

// Half-open IKE SAs (a responder's, before IKE_AUTH) cost a DH computation
// and memory each, and anyone who can put the peer's address on a packet
// can make them: 8,450 spoofed IKE_SA_INITs took an agent from 36 MB to
// 59 MB before the 30 s half-open timeout reclaimed them. As charon does
// (cookie_threshold, init_limit_half_open), above CookieThreshold half-open
// SAs an endpoint answers IKE_SA_INIT with a COOKIE and keeps no state
// until the initiator returns it, which a spoofer never sees; and it never
// holds more than MaxHalfOpen, cookie or not.
const (
	CookieThreshold = 16
	MaxHalfOpen     = 512
)

// halfOpen counts the responder SAs still waiting for IKE_AUTH.
func (e *Endpoint) halfOpen() int {
	n := 0
	for _, sa := range e.sas {
		if !sa.initiator && !sa.established && !sa.dead {
			n++
		}
	}
	return n
}

// cookie is the COOKIE for an initiator (RFC 7296 §2.6): a keyed hash of
// its nonce, address and SPI, so it proves the initiator receives at that
// address without the responder keeping anything.
func (e *Endpoint) cookie(ni []byte, from netip.Addr, spiI uint64) []byte {
	m := hmac.New(sha256.New, e.cookieSecret[:])
	m.Write(ni)
	m.Write(from.AsSlice())
	m.Write(binary.BigEndian.AppendUint64(nil, spiI))
	return m.Sum(nil)
}

// admitInit decides whether an IKE_SA_INIT request may create a half-open
// SA. When cookies are required and the request has no valid one, it
// answers with a fresh COOKIE itself; either way false means drop it.
func (e *Endpoint) admitInit(c *conn, h Header, ps []Payload, ni []byte, from netip.AddrPort, natt bool) bool {
	open := e.halfOpen()
	if open >= MaxHalfOpen {
		e.count(func(c *Counters) { c.HalfOpenRefused++ })
		return false
	}
	if open < CookieThreshold {
		return true
	}
	want := e.cookie(ni, from.Addr(), h.SPIi)
	// The COOKIE comes first in the retried request (RFC 7296 §2.6).
	if len(ps) > 0 {
		if n, ok := ps[0].(*Notify); ok && n.Kind == Cookie && hmac.Equal(n.Data, want) {
			return true
		}
	}
	e.count(func(c *Counters) { c.CookiesSent++ })
	e.send(&ikeSA{c: c, natt: natt}, Marshal(Header{SPIi: h.SPIi, Exchange: IKESAInit, Flags: FlagResponse}, []Payload{&Notify{Kind: Cookie, Data: want}}))
	return false
}

// retryWithCookie resends our IKE_SA_INIT with the responder's COOKIE first
// and everything else unchanged (RFC 7296 §2.6); the message signed by
// AUTH is this one. It reports false after a few cookies in a row, which no
// honest responder sends.
func (sa *ikeSA) retryWithCookie(cookie []byte) bool {
	if sa.cookieTries++; sa.cookieTries > 3 {
		return false
	}
	h, ps, err := Parse(sa.initI)
	if err != nil {
		return false
	}
	if n, ok := ps[0].(*Notify); ok && n.Kind == Cookie {
		ps = ps[1:] // the previous cookie
	}
	sa.initI = Marshal(h, append([]Payload{&Notify{Kind: Cookie, Data: cookie}}, ps...))
	sa.msgID = 0
	sa.sendRequest(sa.initI, sa.onInitResponse)
	return true
}

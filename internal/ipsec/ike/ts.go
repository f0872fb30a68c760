package ike

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
)

// selectors spells protected subnets as traffic selectors (RFC 7296
// §3.13.1): all protocols and ports, one address range per prefix; none
// means 0.0.0.0/0, the route-based connection.
func selectors(ps []netip.Prefix) []Selector {
	if len(ps) == 0 {
		ps = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	}
	out := make([]Selector, 0, len(ps))
	for _, p := range ps {
		p = p.Masked()
		start := p.Addr().AsSlice()
		end := bytes.Clone(start)
		for i := p.Bits(); i < len(end)*8; i++ {
			end[i/8] |= 0x80 >> (i % 8)
		}
		typ := uint8(TSIPv4)
		if p.Addr().Is6() {
			typ = TSIPv6
		}
		out = append(out, Selector{Type: typ, EndPort: 0xffff, Start: start, End: end})
	}
	return out
}

// narrow intersects the selectors we accept with the ones the peer
// proposed (RFC 7296 §2.9: the responder may narrow); nil means nothing
// in common, which is TS_UNACCEPTABLE.
func narrow(ours, theirs []Selector) []Selector {
	var out []Selector
	for _, o := range ours {
		for _, t := range theirs {
			if o.Type != t.Type || (o.Proto != 0 && t.Proto != 0 && o.Proto != t.Proto) {
				continue
			}
			s := Selector{Type: o.Type, Proto: max(o.Proto, t.Proto),
				StartPort: max(o.StartPort, t.StartPort), EndPort: min(o.EndPort, t.EndPort),
				Start: maxBytes(o.Start, t.Start), End: minBytes(o.End, t.End)}
			if s.StartPort > s.EndPort || bytes.Compare(s.Start, s.End) > 0 {
				continue
			}
			out = append(out, s)
		}
	}
	return out
}

// within tells whether every selector of got lies inside one of offered,
// which is what an initiator requires of the responder's answer.
func within(got, offered []Selector) bool {
	for _, g := range got {
		ok := false
		for _, o := range offered {
			if g.Type == o.Type && (o.Proto == 0 || o.Proto == g.Proto) && g.StartPort >= o.StartPort && g.EndPort <= o.EndPort &&
				bytes.Compare(g.Start, o.Start) >= 0 && bytes.Compare(g.End, o.End) <= 0 {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return len(got) > 0
}

func maxBytes(a, b []byte) []byte {
	if bytes.Compare(a, b) >= 0 {
		return a
	}
	return b
}

func minBytes(a, b []byte) []byte {
	if bytes.Compare(a, b) <= 0 {
		return a
	}
	return b
}

// String spells a selector as a prefix when it is one, as a range otherwise.
func (s Selector) String() string {
	a, _ := netip.AddrFromSlice(s.Start)
	b, _ := netip.AddrFromSlice(s.End)
	for bits := 0; bits <= a.BitLen(); bits++ {
		p := netip.PrefixFrom(a, bits).Masked()
		if p.Addr() == a && bytes.Equal(selectors([]netip.Prefix{p})[0].End, s.End) {
			return p.String() + portsSuffix(s)
		}
	}
	return fmt.Sprintf("%s-%s%s", a, b, portsSuffix(s))
}

func portsSuffix(s Selector) string {
	if s.Proto == 0 && s.StartPort == 0 && s.EndPort == 0xffff {
		return ""
	}
	return fmt.Sprintf("[%d/%d-%d]", s.Proto, s.StartPort, s.EndPort)
}

func formatSelectors(ss []Selector) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.String()
	}
	return out
}

func joinSelectors(ss []Selector) string { return strings.Join(formatSelectors(ss), " ") }

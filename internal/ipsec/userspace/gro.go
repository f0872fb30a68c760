package userspace

import (
	"bytes"
	"encoding/binary"
)

const (
	tcpACK = 0x10

	maxIPPacket = 65535
)

// coalescer merges consecutive decrypted TCP segments of one flow into one
// super-packet written to the TUN with a GSO header, as the kernel's GRO
// does for a NIC: one write and one trip through the forwarding path of the
// node and the hops after it instead of some 45. Only packets in a row are
// merged, so the order of everything written stays the order received.
//
// The inner checksums are left for the kernel to recompute (NEEDS_CSUM):
// the segments were authenticated by ESP, so they are the bytes the sending
// gateway built.
type coalescer struct {
	buf   []byte // vnet header, then the pending packet
	n     int    // length of the pending packet; 0: none
	write func([]byte) error

	// Of the pending packet, when it can take more segments (mss > 0).
	ipLen, hdrLen int
	mss           int // payload of its first segment: every later one but the last must match
	segs          int
	nextSeq       uint32
	full          bool // it ended with a short or pushed segment
}

func newCoalescer(write func([]byte) error) *coalescer {
	return &coalescer{buf: make([]byte, vnetHdrLen+maxIPPacket), write: write}
}

// add queues pkt, writing out what it cannot be merged with.
func (c *coalescer) add(pkt []byte) error {
	if c.n > 0 && c.appendSegment(pkt) {
		return nil
	}
	if err := c.flush(); err != nil {
		return err
	}
	c.n = copy(c.buf[vnetHdrLen:], pkt)
	c.mss, c.segs, c.full = 0, 1, false
	ipLen, err := tcpIPHeaderLen(pkt)
	if err != nil || (pkt[0]>>4 == 4 && binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0) {
		return nil // not TCP, or a fragment: passed on alone
	}
	hdrLen := ipLen + int(pkt[ipLen+12]>>4)*4
	if hdrLen >= len(pkt) || pkt[ipLen+13]&^tcpPSH != tcpACK {
		return nil // no payload, or a flag that must not be merged away
	}
	c.ipLen, c.hdrLen, c.mss = ipLen, hdrLen, len(pkt)-hdrLen
	c.nextSeq = binary.BigEndian.Uint32(pkt[ipLen+4:]) + uint32(c.mss)
	c.full = pkt[ipLen+13]&tcpPSH != 0
	return nil
}

// appendSegment merges pkt into the pending packet if it is the next
// segment of the same flow with the same headers.
func (c *coalescer) appendSegment(pkt []byte) bool {
	if c.mss == 0 || c.full || len(pkt) <= c.hdrLen {
		return false
	}
	p := c.buf[vnetHdrLen : vnetHdrLen+c.n]
	payload := len(pkt) - c.hdrLen
	if payload > c.mss || c.n+payload > maxIPPacket || pkt[0] != p[0] {
		return false
	}
	ip, tcp := c.ipLen, c.hdrLen
	sameIP := bytes.Equal(pkt[:2], p[:2]) && bytes.Equal(pkt[6:10], p[6:10]) && bytes.Equal(pkt[12:ip], p[12:ip]) // IPv4: all but length, ID, checksum
	if p[0]>>4 == 6 {
		sameIP = bytes.Equal(pkt[:4], p[:4]) && bytes.Equal(pkt[6:ip], p[6:ip]) // all but payload length
	}
	if !sameIP ||
		!bytes.Equal(pkt[ip:ip+4], p[ip:ip+4]) || // ports
		binary.BigEndian.Uint32(pkt[ip+4:]) != c.nextSeq ||
		!bytes.Equal(pkt[ip+8:ip+13], p[ip+8:ip+13]) || // ack, data offset
		pkt[ip+13]&^tcpPSH != tcpACK ||
		!bytes.Equal(pkt[ip+14:ip+16], p[ip+14:ip+16]) || // window
		!bytes.Equal(pkt[ip+18:tcp], p[ip+18:tcp]) { // urgent pointer, options
		return false
	}
	c.n += copy(c.buf[vnetHdrLen+c.n:], pkt[tcp:])
	c.segs++
	c.nextSeq += uint32(payload)
	c.full = payload < c.mss || pkt[ip+13]&tcpPSH != 0
	if pkt[ip+13]&tcpPSH != 0 {
		p[ip+13] |= tcpPSH
	}
	return true
}

// flush writes the pending packet, if any.
func (c *coalescer) flush() error {
	if c.n == 0 {
		return nil
	}
	p := c.buf[vnetHdrLen : vnetHdrLen+c.n]
	h := vnetHdr{gsoType: gsoNone}
	if c.segs > 1 {
		ip := c.ipLen
		gso := uint8(gsoTCPv4)
		if p[0]>>4 == 4 {
			binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
			binary.BigEndian.PutUint16(p[10:], 0)
			binary.BigEndian.PutUint16(p[10:], ^checksumFold(checksumAdd(0, p[:ip])))
		} else {
			gso = gsoTCPv6
			binary.BigEndian.PutUint16(p[4:], uint16(len(p)-ip))
		}
		// With NEEDS_CSUM the checksum field holds the pseudo-header sum
		// and the kernel adds the rest, per segment if it segments.
		src, dst := addrs(p)
		binary.BigEndian.PutUint16(p[ip+16:], checksumFold(pseudoHeaderSum(src, dst, protoTCP, len(p)-ip)))
		h = vnetHdr{flags: vnetNeedsCsum, gsoType: gso, hdrLen: uint16(c.hdrLen), gsoSize: uint16(c.mss), csumStart: uint16(ip), csumOffset: 16}
	}
	h.encode(c.buf)
	c.n = 0
	return c.write(c.buf[:vnetHdrLen+len(p)])
}

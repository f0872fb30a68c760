package userspace

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	protoTCP = 6

	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

var errMalformed = errors.New("malformed packet from TUN")

// segment turns what one TUN read returned into the packets the wire
// carries, as the kernel's own TSO would: a TCP super-packet (h.gsoType
// TCPv4/TCPv6) is cut into h.gsoSize payload chunks, each with its own copy of
// the headers and a complete checksum; any other packet only has its checksum
// completed if the kernel left that to us. Each packet is built in seg
// (which must hold headers plus one chunk) and passed to emit before the
// next overwrites it.
func segment(h vnetHdr, pkt, seg []byte, emit func([]byte) error) error {
	switch h.gsoType &^ gsoECN {
	case gsoNone:
		if h.flags&vnetNeedsCsum != 0 {
			at := int(h.csumStart) + int(h.csumOffset)
			if at+2 > len(pkt) {
				return fmt.Errorf("%w: checksum at %d of %d bytes", errMalformed, at, len(pkt))
			}
			// The field holds the pseudo-header sum already: summing from
			// csumStart over it gives the whole checksum.
			binary.BigEndian.PutUint16(pkt[at:], ^checksumFold(checksumAdd(0, pkt[h.csumStart:])))
		}
		return emit(pkt)
	case gsoTCPv4, gsoTCPv6:
	default:
		return fmt.Errorf("%w: GSO type %d", errMalformed, h.gsoType)
	}

	ipLen, err := tcpIPHeaderLen(pkt)
	if err != nil {
		return err
	}
	hdrLen := ipLen + int(pkt[ipLen+12]>>4)*4
	mss := int(h.gsoSize)
	if hdrLen > len(pkt) || mss == 0 || hdrLen+mss > len(seg) {
		return fmt.Errorf("%w: headers %d, segment size %d, packet %d", errMalformed, hdrLen, mss, len(pkt))
	}
	v4 := pkt[0]>>4 == 4
	id := binary.BigEndian.Uint16(pkt[4:])
	seq := binary.BigEndian.Uint32(pkt[ipLen+4:])
	flags := pkt[ipLen+13]
	payload := pkt[hdrLen:]
	for i := 0; len(payload) > 0; i++ {
		n := min(mss, len(payload))
		s := seg[:hdrLen+n]
		copy(s, pkt[:hdrLen])
		copy(s[hdrLen:], payload[:n])
		payload = payload[n:]

		if v4 {
			binary.BigEndian.PutUint16(s[2:], uint16(len(s)))
			binary.BigEndian.PutUint16(s[4:], id+uint16(i))
			binary.BigEndian.PutUint16(s[10:], 0)
			binary.BigEndian.PutUint16(s[10:], ^checksumFold(checksumAdd(0, s[:ipLen])))
		} else {
			binary.BigEndian.PutUint16(s[4:], uint16(len(s)-ipLen))
		}
		tcp := s[ipLen:]
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(i*mss))
		f := flags
		if len(payload) > 0 {
			f &^= tcpFIN | tcpPSH // only the last segment ends or pushes
		}
		if i > 0 {
			f &^= tcpCWR // only the first segment signals the window cut
		}
		tcp[13] = f
		binary.BigEndian.PutUint16(tcp[16:], 0)
		src, dst := addrs(s)
		sum := checksumAdd(pseudoHeaderSum(src, dst, protoTCP, len(tcp)), tcp)
		binary.BigEndian.PutUint16(tcp[16:], ^checksumFold(sum))
		if err := emit(s); err != nil {
			return err
		}
	}
	return nil
}

// tcpIPHeaderLen returns the IP header length of a TCP packet, refusing
// anything else (IPv6 extension headers included: TSO never makes them here).
func tcpIPHeaderLen(pkt []byte) (int, error) {
	var ipLen int
	switch {
	case len(pkt) >= 20 && pkt[0]>>4 == 4 && pkt[9] == protoTCP:
		ipLen = int(pkt[0]&0xf) * 4
	case len(pkt) >= 40 && pkt[0]>>4 == 6 && pkt[6] == protoTCP:
		ipLen = 40
	default:
		return 0, fmt.Errorf("%w: not TCP over IP", errMalformed)
	}
	if ipLen < 20 || len(pkt) < ipLen+20 {
		return 0, fmt.Errorf("%w: truncated TCP header", errMalformed)
	}
	return ipLen, nil
}

// addrs returns the source and destination addresses of an IP packet.
func addrs(pkt []byte) (src, dst []byte) {
	if pkt[0]>>4 == 4 {
		return pkt[12:16], pkt[16:20]
	}
	return pkt[8:24], pkt[24:40]
}

package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// ErrNotIP is returned by Decode for frames without an IP packet (ARP, for
// example), which encryption checks skip rather than fail on.
var ErrNotIP = errors.New("frame carries no IP packet")

// ErrMalformedIP is returned by Decode for frames whose IP header is cut
// short or broken: the frame is IP, but nothing in it can be trusted.
var ErrMalformedIP = errors.New("frame carries a malformed IP header")

// Headers is what the checks read from a frame's outermost IP header: on the
// private line that header is the tunnel's, so Src and Dst must be the two VPN
// endpoints and Protocol must be ESP.
type Headers struct {
	Src, Dst netip.Addr
	// Protocol is the IPv4 protocol or the IPv6 next header.
	Protocol layers.IPProtocol
	// ESP is true when an ESP header was decoded; SPI and Seq are only
	// meaningful then (a non-first fragment carries no ESP header).
	ESP      bool
	SPI, Seq uint32
	// Encap is true for ESP in UDP (RFC 3948): UDP port 4500 whose payload
	// does not start with the four zero bytes of the non-ESP marker. ESP is
	// true for it too: the payload is just as encrypted.
	Encap bool
	// IKE is true for IKE messages: UDP port 500, or 4500 with the marker.
	IKE bool
}

// NAT-T and IKE ports (RFC 3948 §2.2, RFC 7296 §2).
const (
	portIKE  = 500
	portNATT = 4500
)

// Decode reads the outer IP header of the frame and, for ESP, its SPI and
// sequence number. Errors: ErrNotIP, ErrMalformedIP.
func (p Packet) Decode() (Headers, error) {
	pkt := gopacket.NewPacket(p.Data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	var h Headers
	switch ip := pkt.NetworkLayer().(type) {
	case *layers.IPv4:
		h.Src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		h.Dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		h.Protocol = ip.Protocol
	case *layers.IPv6:
		h.Src, _ = netip.AddrFromSlice(ip.SrcIP.To16())
		h.Dst, _ = netip.AddrFromSlice(ip.DstIP.To16())
		h.Protocol = ip.NextHeader
	default:
		return Headers{}, ErrNotIP
	}
	// gopacket keeps the layer it failed to decode, with what it could read.
	if !h.Src.IsValid() || !h.Dst.IsValid() {
		return Headers{}, ErrMalformedIP
	}
	if esp, ok := pkt.Layer(layers.LayerTypeIPSecESP).(*layers.IPSecESP); ok {
		h.ESP, h.SPI, h.Seq = true, esp.SPI, esp.Seq
	}
	if udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		b := udp.Payload
		switch {
		case udp.SrcPort == portIKE || udp.DstPort == portIKE:
			h.IKE = true
		case udp.SrcPort != portNATT && udp.DstPort != portNATT:
		case len(b) >= 4 && binary.BigEndian.Uint32(b) == 0:
			h.IKE = true
		case len(b) >= 8:
			h.ESP, h.Encap = true, true
			h.SPI, h.Seq = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
		}
	}
	return h, nil
}

// ContainsBytes reports whether marker appears anywhere in the captured
// bytes of the frame: a clear-text leak shows up wherever it sits, in any
// header or payload, which a decoder keyed on known protocols could miss.
func (p Packet) ContainsBytes(marker []byte) bool {
	return bytes.Contains(p.Data, marker)
}

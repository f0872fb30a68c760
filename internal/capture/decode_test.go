package capture

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func frame(t *testing.T, ls ...gopacket.SerializableLayer) Packet {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return Packet{Data: buf.Bytes()}
}

var mac = net.HardwareAddr{2, 0, 0, 0, 0, 1}

func TestDecode_IPv6UDP_OuterAddressesAndProtocol(t *testing.T) {
	src, dst := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	udp := &layers.UDP{SrcPort: 1, DstPort: 2}
	if err := udp.SetNetworkLayerForChecksum(ip6); err != nil {
		t.Fatal(err)
	}
	p := frame(t, &layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv6}, ip6, udp, gopacket.Payload("secret"))
	h, err := p.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Headers{Src: src, Dst: dst, Protocol: layers.IPProtocolUDP}); h != want {
		t.Errorf("decoded %+v, want %+v", h, want)
	}
	if !p.ContainsBytes([]byte("secret")) || p.ContainsBytes([]byte("absent")) {
		t.Error("ContainsBytes does not search the frame's bytes")
	}
}

func TestDecode_VLANTaggedESP_SPIAndSequence(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	esp := make([]byte, 40)
	binary.BigEndian.PutUint32(esp[0:4], 0x1234)
	binary.BigEndian.PutUint32(esp[4:8], 99)
	p := frame(t,
		&layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolESP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
		gopacket.Payload(esp))
	h, err := p.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Headers{Src: src, Dst: dst, Protocol: layers.IPProtocolESP, ESP: true, SPI: 0x1234, Seq: 99}); h != want {
		t.Errorf("decoded %+v, want %+v", h, want)
	}
}

func TestDecode_ARP_IsNotIP(t *testing.T) {
	p := frame(t,
		&layers.Ethernet{SrcMAC: mac, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: mac, SourceProtAddress: []byte{10, 0, 0, 1},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 0, 0, 2}})
	if _, err := p.Decode(); !errors.Is(err, ErrNotIP) {
		t.Errorf("ARP decoded with error %v, want ErrNotIP", err)
	}
}

// TestDecode_UDP4500_ESPInUDPAndIKEAreTold: the non-ESP marker separates
// IKE from ESP on the NAT-T port (RFC 3948 §2.2); port 500 is IKE.
func TestDecode_UDP4500_ESPInUDPAndIKEAreTold(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	udpFrame := func(sport, dport uint16, payload []byte) Packet {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		return frame(t, &layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv4}, ip, udp, gopacket.Payload(payload))
	}
	esp := make([]byte, 40)
	binary.BigEndian.PutUint32(esp[0:4], 0xc0ffee)
	binary.BigEndian.PutUint32(esp[4:8], 7)
	ike := make([]byte, 40) // four zero bytes, then an IKE header
	for _, c := range []struct {
		name string
		p    Packet
		want Headers
	}{
		{"ESP in UDP", udpFrame(4500, 4500, esp), Headers{ESP: true, Encap: true, SPI: 0xc0ffee, Seq: 7}},
		{"IKE on 4500", udpFrame(4500, 4500, ike), Headers{IKE: true}},
		{"IKE on 500", udpFrame(500, 500, esp), Headers{IKE: true}},
		{"other UDP", udpFrame(4501, 53, esp), Headers{}},
	} {
		h, err := c.p.Decode()
		if err != nil {
			t.Fatal(err)
		}
		c.want.Src, c.want.Dst, c.want.Protocol = src, dst, layers.IPProtocolUDP
		if h != c.want {
			t.Errorf("%s: decoded %+v, want %+v", c.name, h, c.want)
		}
	}
}

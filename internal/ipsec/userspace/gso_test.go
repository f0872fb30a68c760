package userspace

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// tcpPacket builds an IPv4 or IPv6 TCP packet with valid checksums and the
// timestamp option (12 bytes), carrying payload.
func tcpPacket(v6 bool, seq uint32, flags byte, payload []byte) []byte {
	ipLen := 20
	if v6 {
		ipLen = 40
	}
	const tcpLen = 32
	p := make([]byte, ipLen+tcpLen+len(payload))
	if v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(tcpLen+len(payload)))
		p[6], p[7] = protoTCP, 64
		copy(p[8:], []byte{0xfd, 0, 0, 1, 15: 1})
		copy(p[24:], []byte{0xfd, 0, 0, 2, 15: 2})
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], 0x1234)
		p[6] = 0x40 // DF
		p[8], p[9] = 64, protoTCP
		copy(p[12:], []byte{10, 1, 0, 10, 172, 16, 2, 10})
		binary.BigEndian.PutUint16(p[10:], ^checksumFold(checksumAdd(0, p[:20])))
	}
	t := p[ipLen:]
	binary.BigEndian.PutUint16(t[0:], 40000)
	binary.BigEndian.PutUint16(t[2:], 5201)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 777)
	t[12] = tcpLen / 4 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], 512)
	copy(t[20:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}) // NOP NOP timestamps
	copy(t[tcpLen:], payload)
	src, dst := addrs(p)
	binary.BigEndian.PutUint16(t[16:], ^checksumFold(checksumAdd(pseudoHeaderSum(src, dst, protoTCP, len(t)), t)))
	return p
}

// checkValid fails unless pkt's IPv4 header and TCP checksums verify.
func checkValid(t *testing.T, pkt []byte) {
	t.Helper()
	ipLen, err := tcpIPHeaderLen(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if pkt[0]>>4 == 4 {
		if got := binary.BigEndian.Uint16(pkt[2:]); int(got) != len(pkt) {
			t.Errorf("IPv4 total length %d, packet is %d bytes", got, len(pkt))
		}
		if ^checksumFold(checksumAdd(0, pkt[:ipLen])) != 0 {
			t.Error("IPv4 header checksum does not verify")
		}
	} else if got := binary.BigEndian.Uint16(pkt[4:]); int(got) != len(pkt)-40 {
		t.Errorf("IPv6 payload length %d, want %d", got, len(pkt)-40)
	}
	src, dst := addrs(pkt)
	if ^checksumFold(checksumAdd(pseudoHeaderSum(src, dst, protoTCP, len(pkt)-ipLen), pkt[ipLen:])) != 0 {
		t.Error("TCP checksum does not verify")
	}
}

func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestSegment_TSOPacket_BecomesValidMSSSizedPacketsInOrder(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		const mss, total = 1348, 20000
		data := payloadOf(total)
		super := tcpPacket(v6, 1000, tcpACK|tcpPSH|tcpFIN, data)
		ipLen, _ := tcpIPHeaderLen(super)
		gso := uint8(gsoTCPv4)
		if v6 {
			gso = gsoTCPv6
		}
		// What TUN hands over: pseudo-header sum only, as with NEEDS_CSUM.
		src, dst := addrs(super)
		binary.BigEndian.PutUint16(super[ipLen+16:], checksumFold(pseudoHeaderSum(src, dst, protoTCP, len(super)-ipLen)))
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: gso, hdrLen: uint16(ipLen + 32), gsoSize: mss, csumStart: uint16(ipLen), csumOffset: 16}

		var got [][]byte
		err := segment(h, super, make([]byte, maxIPPacket), func(p []byte) error {
			got = append(got, bytes.Clone(p))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := (total + mss - 1) / mss; len(got) != want {
			t.Fatalf("v6=%v: %d segments, want %d", v6, len(got), want)
		}
		var joined []byte
		for i, p := range got {
			checkValid(t, p)
			body := p[ipLen+32:]
			if i < len(got)-1 && len(body) != mss {
				t.Errorf("segment %d carries %d bytes, want %d", i, len(body), mss)
			}
			if seq := binary.BigEndian.Uint32(p[ipLen+4:]); seq != 1000+uint32(i*mss) {
				t.Errorf("segment %d: seq %d, want %d", i, seq, 1000+i*mss)
			}
			flags, last := p[ipLen+13], i == len(got)-1
			if (flags&(tcpFIN|tcpPSH) != 0) != last {
				t.Errorf("segment %d: flags %#x: FIN/PSH belong on the last one only", i, flags)
			}
			if !v6 && binary.BigEndian.Uint16(p[4:]) != 0x1234+uint16(i) {
				t.Errorf("segment %d: IPv4 ID %#x", i, binary.BigEndian.Uint16(p[4:]))
			}
			joined = append(joined, body...)
		}
		if !bytes.Equal(joined, data) {
			t.Errorf("v6=%v: segments do not carry the payload in order", v6)
		}
	}
}

func TestSegment_PlainPacketWithPartialChecksum_IsCompleted(t *testing.T) {
	pkt := tcpPacket(false, 5, tcpACK, payloadOf(100))
	src, dst := addrs(pkt)
	binary.BigEndian.PutUint16(pkt[36:], checksumFold(pseudoHeaderSum(src, dst, protoTCP, len(pkt)-20)))
	n := 0
	err := segment(vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 16}, pkt, nil, func(p []byte) error {
		n++
		checkValid(t, p)
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("%d packets, err %v; want 1 packet", n, err)
	}
}

func TestSegment_MalformedGSO_IsRefused(t *testing.T) {
	pkt := tcpPacket(false, 5, tcpACK, payloadOf(3000))
	for name, h := range map[string]vnetHdr{
		"zero segment size": {gsoType: gsoTCPv4},
		"unknown GSO type":  {gsoType: 3, gsoSize: 1000},
	} {
		if err := segment(h, pkt, make([]byte, maxIPPacket), func([]byte) error { return nil }); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

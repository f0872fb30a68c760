package userspace

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

func TestESPSocket_BatchesOf64_DeliverEveryPacketInOrder(t *testing.T) {
	newTestNS(t).do(func() {
		local := netip.MustParseAddr("127.0.0.1")
		s, err := listenESP(local)
		if err != nil {
			t.Error(err)
			return
		}
		defer s.Close()

		const total = 3*batchSize + 7 // batches of every fill
		dst := &net.IPAddr{IP: local.AsSlice()}
		msgs := make([]ipv4.Message, total)
		for i := range msgs {
			p := make([]byte, 8+100+i) // SPI, sequence number, a body
			binary.BigEndian.PutUint32(p, 0x1000)
			binary.BigEndian.PutUint32(p[4:], uint32(i))
			msgs[i] = ipv4.Message{Buffers: [][]byte{p}, Addr: dst}
		}
		for i := 0; i < total; i += batchSize {
			if err := s.writeAll(msgs[i:min(i+batchSize, total)], true); err != nil {
				t.Error(err)
				return
			}
		}

		recv := make([]ipv4.Message, batchSize)
		for i := range recv {
			recv[i].Buffers = [][]byte{make([]byte, maxIPPacket)}
		}
		// Loopback loses nothing, but a lost packet must fail the test,
		// not hang the suite.
		if err := s.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Error(err)
			return
		}
		next := 0
		for next < total {
			n, err := s.batch.ReadBatch(recv, 0)
			if err != nil {
				t.Errorf("after %d of %d packets: %v", next, total, err)
				return
			}
			for i := range n {
				from, esp, ok := s.packet(&recv[i])
				if !ok || from != local {
					t.Errorf("packet %d: from %v, ok %v", next, from, ok)
				}
				if seq := binary.BigEndian.Uint32(esp[4:]); seq != uint32(next) || len(esp) != 108+next {
					t.Errorf("got sequence %d (%d bytes), want %d (%d bytes)", seq, len(esp), next, 108+next)
				}
				next++
			}
		}
	})
}

func TestESPSocket_OuterDF_CopiedFromInner_EachPacketOnce(t *testing.T) {
	newTestNS(t).do(func() {
		local := netip.MustParseAddr("127.0.0.1")
		s, err := listenESP(local)
		if err != nil {
			t.Error(err)
			return
		}
		defer s.Close()
		dst := &net.IPAddr{IP: local.AsSlice()}
		for i, df := range []bool{false, true, false} {
			p := make([]byte, 64)
			binary.BigEndian.PutUint32(p, 0x1000)
			binary.BigEndian.PutUint32(p[4:], uint32(i))
			if err := s.writeAll([]ipv4.Message{{Buffers: [][]byte{p}, Addr: dst}}, df); err != nil {
				t.Error(err)
				return
			}
		}
		// Only the receiving socket hands packets over, each once: the
		// send-only socket's filter keeps its copies out.
		recv := make([]ipv4.Message, batchSize)
		for i := range recv {
			recv[i].Buffers = [][]byte{make([]byte, maxIPPacket)}
		}
		s.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var got []bool
		for {
			n, err := s.batch.ReadBatch(recv, 0)
			if err != nil {
				break
			}
			for _, m := range recv[:n] {
				got = append(got, m.Buffers[0][6]&0x40 != 0)
			}
		}
		if want := []bool{false, true, false}; !slices.Equal(got, want) {
			t.Errorf("outer DF of the packets received: %v, want %v", got, want)
		}
	})
}

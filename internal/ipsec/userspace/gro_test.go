package userspace

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// written collects what a coalescer writes, split into vnet header and
// packet, copied.
type written struct {
	hdrs []vnetHdr
	pkts [][]byte
}

func (w *written) write(b []byte) error {
	w.hdrs = append(w.hdrs, decodeVnetHdr(b))
	w.pkts = append(w.pkts, bytes.Clone(b[vnetHdrLen:]))
	return nil
}

// TestCoalescer_RoundTrip_SegmentsOfOneFlowMergeAndSegmentBackIdentically
// feeds the segments of one TSO packet to the coalescer and cuts what it
// writes with segment: the same packets, bytes and order must come out.
func TestCoalescer_RoundTrip_SegmentsOfOneFlowMergeAndSegmentBackIdentically(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		const mss = 1348
		var in [][]byte
		for i := range 10 {
			n, flags := mss, byte(tcpACK)
			if i == 9 {
				n, flags = 500, tcpACK|tcpPSH
			}
			p := tcpPacket(v6, uint32(1+i*mss), flags, payloadOf(n))
			if !v6 {
				binary.BigEndian.PutUint16(p[4:], 0x1234+uint16(i))
				binary.BigEndian.PutUint16(p[10:], 0)
				binary.BigEndian.PutUint16(p[10:], ^checksumFold(checksumAdd(0, p[:20])))
			}
			in = append(in, p)
		}
		var w written
		c := newCoalescer(w.write)
		for _, p := range in {
			if err := c.add(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.flush(); err != nil {
			t.Fatal(err)
		}
		if len(w.pkts) != 1 {
			t.Fatalf("v6=%v: %d writes, want 1 merged packet", v6, len(w.pkts))
		}
		h := w.hdrs[0]
		if h.gsoSize != mss || h.flags != vnetNeedsCsum {
			t.Fatalf("v6=%v: header %+v", v6, h)
		}
		var out [][]byte
		err := segment(h, w.pkts[0], make([]byte, maxIPPacket), func(p []byte) error {
			out = append(out, bytes.Clone(p))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != len(in) {
			t.Fatalf("v6=%v: %d segments back, want %d", v6, len(out), len(in))
		}
		for i := range in {
			if !bytes.Equal(out[i], in[i]) {
				t.Errorf("v6=%v: segment %d differs after merge and split", v6, i)
			}
		}
	}
}

func TestCoalescer_WhatMustNotMerge_IsWrittenAloneInOrder(t *testing.T) {
	const mss = 1000
	first := tcpPacket(false, 1, tcpACK, payloadOf(mss))
	gap := tcpPacket(false, 1+2*mss, tcpACK, payloadOf(mss)) // a segment is missing
	fin := tcpPacket(false, 1+3*mss, tcpACK|tcpFIN, payloadOf(mss))
	pureACK := tcpPacket(false, 1+4*mss, tcpACK, nil)
	afterPush := tcpPacket(false, 1+4*mss, tcpACK|tcpPSH, payloadOf(mss))
	next := tcpPacket(false, 1+5*mss, tcpACK, payloadOf(mss))
	udp := append([]byte(nil), first...)
	udp[9] = 17
	in := [][]byte{first, gap, fin, pureACK, afterPush, next, udp}

	var w written
	c := newCoalescer(w.write)
	for _, p := range in {
		if err := c.add(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	if len(w.pkts) != len(in) {
		t.Fatalf("%d writes, want %d (nothing mergeable)", len(w.pkts), len(in))
	}
	for i := range in {
		if w.hdrs[i] != (vnetHdr{}) || !bytes.Equal(w.pkts[i], in[i]) {
			t.Errorf("write %d: header %+v, packet changed: %v", i, w.hdrs[i], !bytes.Equal(w.pkts[i], in[i]))
		}
	}
}

func TestCoalescer_MergedPacket_StaysWithin64KiB(t *testing.T) {
	const mss = 1348
	var w written
	c := newCoalescer(w.write)
	total := 0
	for i := range 100 {
		if err := c.add(tcpPacket(false, uint32(1+i*mss), tcpACK, payloadOf(mss))); err != nil {
			t.Fatal(err)
		}
		total += mss
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, p := range w.pkts {
		if len(p) > maxIPPacket {
			t.Errorf("wrote %d bytes", len(p))
		}
		got += len(p) - 52
	}
	if got != total || len(w.pkts) < 2 {
		t.Errorf("%d writes carrying %d payload bytes, want ≥ 2 writes carrying %d", len(w.pkts), got, total)
	}
}

package capture

import (
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// PcapWriter writes frames to a pcap file as they come, for `emu capture -w`.
// It keeps nanosecond timestamps, so frames from several namespaces merged
// into one file keep the order the kernel saw. It is not safe for concurrent
// use; StartMany already serialises OnPacket.
type PcapWriter struct {
	w *pcapgo.Writer
}

// NewPcapWriter writes the pcap file header (Ethernet link type, nanosecond
// resolution) and returns a writer for the frames.
func NewPcapWriter(w io.Writer, snaplen int) (*PcapWriter, error) {
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(uint32(snaplen), layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	return &PcapWriter{w: pw}, nil
}

// Write appends one frame; it fits Options.OnPacket directly.
func (pw *PcapWriter) Write(p Packet) error {
	return pw.w.WritePacket(gopacket.CaptureInfo{
		Timestamp:     p.Time,
		CaptureLength: len(p.Data),
		Length:        p.Length,
	}, p.Data)
}

// WritePcap writes frames already captured (Capture.Packets, Group.Packets)
// as one pcap file.
func WritePcap(w io.Writer, pkts []Packet) error {
	pw, err := NewPcapWriter(w, DefaultSnaplen)
	if err != nil {
		return err
	}
	for _, p := range pkts {
		if err := pw.Write(p); err != nil {
			return err
		}
	}
	return nil
}

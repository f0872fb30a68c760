package userspace

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTUN creates a layer-3 TUN interface in the caller's namespace. The fd
// is non-blocking so the Go runtime's poller serves reads and writes, and
// Close wakes a blocked reader.
//
// Every read and write starts with a virtio-net header (IFF_VNET_HDR), and
// the offloads tell the kernel it may hand over TCP packets of up to 64 KiB
// (TSO) with the checksum left to us: one read then carries what would
// otherwise take some 45 reads of MTU-sized packets, and we segment it
// (gso.go). Writes may carry such packets too (gro.go).
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w (is the tun module available?)", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("offloads of TUN %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// vnetHdr is struct virtio_net_hdr (linux/virtio_net.h), which TUN
// exchanges in host byte order (little-endian here) before every packet.
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16 // headers up to the TCP payload
	gsoSize    uint16 // payload bytes per segment
	csumStart  uint16 // where the checksummed part starts
	csumOffset uint16 // where, from csumStart, the checksum goes
}

const (
	vnetHdrLen = 10

	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	gsoNone  = 0 // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4 = 1
	gsoTCPv6 = 4
	gsoECN   = 0x80 // flag: the packet carries CWR
)

func decodeVnetHdr(b []byte) vnetHdr {
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.LittleEndian.Uint16(b[2:]),
		gsoSize:    binary.LittleEndian.Uint16(b[4:]),
		csumStart:  binary.LittleEndian.Uint16(b[6:]),
		csumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

func (h vnetHdr) encode(b []byte) {
	b[0] = h.flags
	b[1] = h.gsoType
	binary.LittleEndian.PutUint16(b[2:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[6:], h.csumStart)
	binary.LittleEndian.PutUint16(b[8:], h.csumOffset)
}

// Package capture records the frames that cross one interface inside a lab
// namespace, so checks can prove what is on the wire (only ESP between the VPN
// endpoints, the marker never in clear) and trace a packet's walk across
// nodes by kernel timestamp.
//
// It reads an AF_PACKET socket rather than running tcpdump: the lab must work
// on machines without it, and the socket is opened inside the node's
// namespace, so the capture sees exactly what that node's interface sees.
//
// The socket delivers frames through a TPACKET_V3 ring rather than recvmsg
// because the ring stamps every frame with the time the kernel handed it to
// the tap. On the recvmsg path a frame carries a timestamp only once the
// kernel's global "timestamps wanted" switch is on, and the first socket that
// asks for timestamps turns it on later, from a work queue: frames in that
// window get the time they were read, which put a frame's arrival in the next
// namespace before its departure from the previous one.
package capture

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/netnsx"
)

// DefaultSnaplen keeps whole frames, even GSO super-frames seen on veth, so a
// marker search over the capture cannot miss bytes that were cut off.
const DefaultSnaplen = 262144

// Options bound a capture. The zero value captures whole frames until Stop or
// until ctx ends.
type Options struct {
	// Snaplen is how many bytes of each frame are kept; 0 means
	// DefaultSnaplen. A check that proves a byte string is absent must keep
	// whole frames: Packet.Length tells whether a frame was cut.
	Snaplen int
	// MaxPackets ends the capture after this many frames; 0 means no limit.
	MaxPackets int
	// Duration ends the capture this long after Start; 0 means no limit.
	Duration time.Duration
	// OnPacket, when set, receives every frame (in kernel order for one
	// interface, at most about retireTimeout after the kernel saw it)
	// instead of the frame being kept for Packets, so a long capture
	// streams to a file in constant memory. It runs on the capture's
	// reader; an error ends the capture and is returned by Stop and Wait.
	OnPacket func(Packet) error
}

// Packet is one frame as the kernel saw it on an interface.
type Packet struct {
	// Time is the kernel's receive (or transmit) timestamp. It comes from
	// CLOCK_REALTIME, which every namespace shares, so times taken in
	// different namespaces order a packet's walk through the lab.
	Time      time.Time
	NS        string
	Interface string
	// Outgoing is true for frames the namespace sent out of the interface,
	// false for frames it received on it.
	Outgoing bool
	// Length is the frame's length on the wire; it exceeds len(Data) when
	// the snaplen cut the frame.
	Length int
	// Data is the layer-2 frame (Ethernet on veth and loopback).
	Data []byte
}

// Capture is a running capture on one interface of one namespace.
type Capture struct {
	ns, ifname string
	opt        Options
	file       *os.File
	raw        syscall.RawConn
	ring       []byte
	blockSize  int
	next       int // the block to read next: the kernel fills blocks in ring order
	ringFrames int // frames read from the ring, delivered or not (the reader's alone)
	stopCtx    func() bool
	done       chan struct{}

	mu      sync.Mutex
	pkts    []Packet
	count   int
	err     error
	dropped uint32
}

// Ring geometry. Blocks are handed over whole: when full, or when the retire
// timeout passes with frames in them, so retireTimeout bounds how late a
// frame reaches OnPacket and how long Stop waits for the last frames.
const (
	ringBlocks    = 4
	minBlockSize  = 1 << 20
	retireTimeout = 8 * time.Millisecond
	// drainLimit bounds how long Stop waits for the kernel to hand over the
	// frames it already took in.
	drainLimit = 2 * time.Second
)

// Offsets into struct tpacket_block_desc (linux/if_packet.h): version,
// offset_to_priv, then tpacket_hdr_v1 with block_status, num_pkts,
// offset_to_first_pkt.
const (
	blockStatusOff = 8
	blockNumOff    = 12
	blockFirstOff  = 16
)

// Start opens a packet socket inside namespace ns, bound to ifname, and reads
// it on a goroutine until Stop, the limits in opt, or the end of ctx.
func Start(ctx context.Context, ns, ifname string, opt Options) (*Capture, error) {
	if opt.Snaplen < 0 || opt.MaxPackets < 0 || opt.Duration < 0 {
		return nil, fmt.Errorf("capture %s:%s: negative snaplen, packet count or duration", ns, ifname)
	}
	if opt.Snaplen == 0 {
		opt.Snaplen = DefaultSnaplen
	}
	// A block must hold the longest frame kept, with its headers; a power
	// of two wastes none of the pages the kernel allocates per block.
	blockSize := max(minBlockSize, 1<<bits.Len(uint(opt.Snaplen+4096)))
	var fd int
	err := netnsx.Do(ns, func() error {
		var err error
		fd, err = openPacketSocket(ns, ifname, blockSize)
		return err
	})
	if err != nil {
		return nil, err
	}
	c := &Capture{ns: ns, ifname: ifname, opt: opt, blockSize: blockSize, done: make(chan struct{})}
	if err := c.attach(fd); err != nil {
		return nil, fmt.Errorf("capture %s:%s: %w", ns, ifname, err)
	}
	c.stopCtx = context.AfterFunc(ctx, c.interrupt)
	go c.run()
	return c, nil
}

// openPacketSocket runs inside the namespace: the interface index and the
// socket both belong to it.
func openPacketSocket(ns, ifname string, blockSize int) (int, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return -1, fmt.Errorf("capture %s:%s: namespace %q has no interface %q (it has: %s)",
			ns, ifname, ns, ifname, interfaceNames())
	}
	// Protocol 0 at creation: the socket receives nothing until the bind
	// below names both the protocol and the interface, so no frame from
	// another interface can reach the ring in between.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("capture %s:%s: open packet socket: %w", ns, ifname, err)
	}
	req := unix.TpacketReq3{
		Block_size: uint32(blockSize), Block_nr: ringBlocks,
		// V3 packs frames of any size into a block; the kernel only
		// checks that frame_size divides the ring.
		Frame_size: uint32(blockSize), Frame_nr: ringBlocks,
		Retire_blk_tov: uint32(retireTimeout / time.Millisecond),
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}
	for _, step := range []struct {
		what string
		do   func() error
	}{
		{"select TPACKET_V3", func() error { return unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3) }},
		{"set up the receive ring", func() error { return unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req) }},
		{"bind packet socket", func() error { return unix.Bind(fd, sa) }},
	} {
		if err := step.do(); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("capture %s:%s: %s: %w", ns, ifname, step.what, err)
		}
	}
	return fd, nil
}

func interfaceNames() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "unknown: " + err.Error()
	}
	names := make([]string, len(ifs))
	for i, ifi := range ifs {
		names[i] = ifi.Name
	}
	return strings.Join(names, ", ")
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// attach maps the ring and hands the descriptor to the runtime poller, so a
// read deadline can wake the reader without a thread blocked in poll(2).
func (c *Capture) attach(fd int) error {
	ring, err := unix.Mmap(fd, 0, c.blockSize*ringBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("map the receive ring: %w", err)
	}
	c.ring = ring
	c.file = os.NewFile(uintptr(fd), "packet:"+c.ns+":"+c.ifname)
	if c.raw, err = c.file.SyscallConn(); err == nil && c.opt.Duration > 0 {
		err = c.file.SetReadDeadline(time.Now().Add(c.opt.Duration))
	}
	if err != nil {
		unix.Munmap(ring)
		c.file.Close()
	}
	return err
}

// interrupt wakes the reader through an expired deadline rather than by
// closing the file, so the reader can still drain what is queued and read
// the drop counter before it closes the socket itself.
func (c *Capture) interrupt() { _ = c.file.SetReadDeadline(time.Now()) }

// Stop ends the capture, keeping the frames the kernel had already taken in,
// and returns the first error the capture met. It is safe to call more than
// once and after the capture ended by itself.
func (c *Capture) Stop() error {
	c.interrupt()
	return c.Wait()
}

// Wait blocks until the capture ends by itself (MaxPackets, Duration, ctx, or
// an error) and returns the first error it met.
func (c *Capture) Wait() error {
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Packets returns the frames kept so far, in the order the kernel delivered
// them; none are kept when Options.OnPacket is set.
func (c *Capture) Packets() []Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Packet(nil), c.pkts...)
}

// Dropped is how many frames the kernel discarded because the ring was full;
// a nonzero count makes any "never seen" verdict unsound. It is known once
// the capture has ended.
func (c *Capture) Dropped() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

func (c *Capture) run() {
	defer close(c.done)
	defer c.finish()
	for {
		var block []byte
		var sockErr error
		err := c.raw.Read(func(fd uintptr) bool {
			if block = c.readyBlock(); block != nil {
				return true
			}
			sockErr = pendingError(int(fd))
			return sockErr != nil
		})
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.drain()
			return
		case err != nil:
			c.fail(err)
			return
		case sockErr != nil:
			c.fail(sockErr)
			return
		}
		if !c.deliverBlock(block) {
			return
		}
	}
}

// pendingError reads the error the kernel posts on the socket when its
// interface changes. A link going down is not one: the kernel hooks the
// socket again when it comes back up, and a failover check captures across
// exactly that.
func pendingError(fd int) error {
	e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		return err
	case e == 0 || syscall.Errno(e) == unix.ENETDOWN:
		return nil
	case syscall.Errno(e) == unix.ENODEV:
		return errors.New("the interface was removed")
	default:
		return syscall.Errno(e)
	}
}

// drain keeps the frames that arrived before Stop or the deadline: a check
// that sends, then stops, must see everything it sent. The kernel hands a
// block over only when it is full or its retire timer fires, and a busy
// machine runs that timer late: a fixed wait lost the last frames of a
// trace (the reply's last hops) with nothing in the drop counter. So drain
// reads until it has every frame the kernel put in the ring up to now (its
// PACKET_STATISTICS count), and counts those still missing after
// drainLimit as dropped: the capture then says it is incomplete instead of
// missing them silently.
func (c *Capture) drain() {
	var stats *unix.TpacketStatsV3
	_ = c.raw.Control(func(fd uintptr) {
		stats, _ = unix.GetsockoptTpacketStatsV3(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	if stats == nil {
		stats = &unix.TpacketStatsV3{}
	}
	// The read resets the kernel's counters: finish adds what follows.
	// Packets counts the dropped frames too (af_packet.c, PACKET_STATISTICS).
	c.mu.Lock()
	c.dropped += stats.Drops
	c.mu.Unlock()
	want := int(stats.Packets - stats.Drops)
	deadline := time.Now().Add(drainLimit)
	for {
		for block := c.readyBlock(); block != nil; block = c.readyBlock() {
			if !c.deliverBlock(block) {
				return
			}
		}
		if c.ringFrames >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(retireTimeout)
	}
	if missing := want - c.ringFrames; missing > 0 {
		c.mu.Lock()
		c.dropped += uint32(missing)
		c.mu.Unlock()
	}
}

// readyBlock returns the next block in ring order once the kernel has handed
// it over, or nil.
func (c *Capture) readyBlock() []byte {
	block := c.ring[c.next*c.blockSize : (c.next+1)*c.blockSize]
	if atomic.LoadUint32(word(block, blockStatusOff))&unix.TP_STATUS_USER == 0 {
		return nil
	}
	return block
}

func word(b []byte, off int) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

// deliverBlock passes on the frames of one block, gives the block back to
// the kernel, and reports whether the capture goes on.
func (c *Capture) deliverBlock(block []byte) bool {
	defer func() {
		atomic.StoreUint32(word(block, blockStatusOff), unix.TP_STATUS_KERNEL)
		c.next = (c.next + 1) % ringBlocks
	}()
	n := *word(block, blockNumOff)
	c.ringFrames += int(n)
	off := int(*word(block, blockFirstOff))
	for range n {
		h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&block[off]))
		// struct sockaddr_ll follows the header, aligned as the kernel
		// places it.
		ll := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&block[off+tpacketAlign(unix.SizeofTpacket3Hdr)]))
		data := block[off+int(h.Mac):][:min(int(h.Snaplen), c.opt.Snaplen)]
		p := Packet{
			Time:      time.Unix(int64(h.Sec), int64(h.Nsec)),
			NS:        c.ns,
			Interface: c.ifname,
			Outgoing:  ll.Pkttype == unix.PACKET_OUTGOING,
			Length:    int(h.Len),
			Data:      append([]byte(nil), data...),
		}
		if !c.deliver(p) {
			return false
		}
		off += int(h.Next_offset)
	}
	return true
}

func tpacketAlign(n int) int { return (n + unix.TPACKET_ALIGNMENT - 1) &^ (unix.TPACKET_ALIGNMENT - 1) }

func (c *Capture) deliver(p Packet) bool {
	if c.opt.OnPacket != nil {
		if err := c.opt.OnPacket(p); err != nil {
			c.fail(err)
			return false
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opt.OnPacket == nil {
		c.pkts = append(c.pkts, p)
	}
	c.count++
	return c.opt.MaxPackets == 0 || c.count < c.opt.MaxPackets
}

func (c *Capture) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = fmt.Errorf("capture %s:%s: %w", c.ns, c.ifname, err)
	}
}

func (c *Capture) finish() {
	c.stopCtx()
	var stats *unix.TpacketStatsV3
	_ = c.raw.Control(func(fd uintptr) {
		stats, _ = unix.GetsockoptTpacketStatsV3(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
	})
	unix.Munmap(c.ring)
	c.file.Close()
	if stats != nil {
		c.mu.Lock()
		c.dropped += stats.Drops
		c.mu.Unlock()
	}
}

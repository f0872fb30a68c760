package userspace

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// The two ends of every tunnel test: outer addresses on a veth pair, tunnel
// addresses on the TUN interfaces.
var (
	outerA, outerB   = netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("10.99.0.2")
	tunnelA, tunnelB = netip.MustParsePrefix("169.254.10.1/30"), netip.MustParsePrefix("169.254.10.2/30")
)

// tunnelEnds are two namespaces joined by a veth pair, each running a
// Dataplane with one connection to the other.
type tunnelEnds struct {
	a, b   *testNS
	dpA    *Dataplane
	dpB    *Dataplane
	logBuf *bytes.Buffer
}

// startTunnel builds the two ends with cipher; both dataplanes stop when
// the test ends.
func startTunnel(t *testing.T, cipher string) *tunnelEnds {
	t.Helper()
	alg, err := esp.ParseAlgorithm(cipher)
	if err != nil {
		t.Fatal(err)
	}
	aToB, bToA := randomSA(alg, 0x1001), randomSA(alg, 0x1002)
	connA := ipsec.Conn{Name: "to-b", Interface: "ipsec0", Address: tunnelA, Local: outerA, Remote: outerB, Cipher: cipher, MTU: ipsec.TunnelMTU, Out: aToB, In: bToA}
	connB := ipsec.Conn{Name: "to-a", Interface: "ipsec0", Address: tunnelB, Local: outerB, Remote: outerA, Cipher: cipher, MTU: ipsec.TunnelMTU, Out: bToA, In: aToB}
	return startEnds(t, connA, connB)
}

// randomSA is an SA of alg with fresh random keys.
func randomSA(alg esp.Algorithm, spi uint32) ipsec.SA {
	s := ipsec.SA{SPI: spi, EncKey: make([]byte, alg.EncKeyLen())}
	rand.Read(s.EncKey)
	if alg.AuthKeyLen() > 0 {
		s.AuthKey = make([]byte, alg.AuthKeyLen())
		rand.Read(s.AuthKey)
	}
	return s
}

// startEnds starts connA's dataplane in A and connB's in B.
func startEnds(t *testing.T, connA, connB ipsec.Conn) *tunnelEnds {
	t.Helper()
	e := &tunnelEnds{logBuf: &bytes.Buffer{}}
	e.a, e.b = connectedPair(t, outerA.String(), outerB.String())
	logger := log.New(e.logBuf, "", 0)
	var err error
	e.a.do(func() { e.dpA, err = Start([]ipsec.Conn{connA}, logger) })
	if err != nil {
		t.Fatalf("start end A: %v", err)
	}
	t.Cleanup(func() { e.dpA.Close() })
	e.b.do(func() { e.dpB, err = Start([]ipsec.Conn{connB}, logger) })
	if err != nil {
		t.Fatalf("start end B: %v", err)
	}
	t.Cleanup(func() { e.dpB.Close() })
	return e
}

// udpThrough sends datagrams from A's tunnel address to B's, one a second
// for up to five seconds (a loaded machine may lose one), and reports
// whether B received one: proof that both dataplanes still move packets.
func (e *tunnelEnds) udpThrough(t *testing.T, payload string) bool {
	t.Helper()
	var srv, c *net.UDPConn
	var err error
	e.b.do(func() { srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: tunnelB.Addr().AsSlice()}) })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	e.a.do(func() { c, err = net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr)) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1500)
	for range 5 {
		if _, err := c.Write([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		srv.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := srv.Read(buf); err == nil && string(buf[:n]) == payload {
			return true
		}
	}
	return false
}

// rawTCP builds an IPv4 TCP packet from A's tunnel address to B's whose
// TCP header claims dataOffset 32-bit words, carrying n bytes after the
// first 20 bytes of TCP header.
func rawTCP(seq uint32, dataOffset byte, n int) []byte {
	p := make([]byte, 20+20+n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8], p[9] = 64, unix.IPPROTO_TCP
	copy(p[12:], tunnelA.Addr().AsSlice())
	copy(p[16:], tunnelB.Addr().AsSlice())
	tcp := p[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 1)
	tcp[12] = dataOffset << 4
	tcp[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(tcp[14:], 512)
	return p
}

// Issue 9 B: two in-sequence TCP segments whose data offset is below 5,
// sent from one end through the tunnel, panicked the receiving end in its
// receive-side merge, taking the node's tunnels, BGP and DPD with it.
func TestDataplane_TCPSegmentsWithDataOffsetBelow5_DoNotCrashTheReceiver(t *testing.T) {
	e := startTunnel(t, "aes-gcm-128")
	if !e.udpThrough(t, "before") {
		t.Fatal("the tunnel does not carry a datagram even before the malformed segments")
	}
	var err error
	const burst = 200 // in a row, so that recvmmsg hands the receiver several at once
	e.a.do(func() {
		var fd int
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return
		}
		defer unix.Close(fd)
		to := &unix.SockaddrInet4{Addr: tunnelB.Addr().As4()}
		for _, doff := range []byte{0, 1, 4} {
			seq := uint32(1000)
			for range burst {
				p := rawTCP(seq, doff, 100)
				if err = unix.Sendto(fd, p, 0, to); err != nil {
					return
				}
				// The next segment in sequence as a merge computes it:
				// everything after the (claimed) header is payload.
				seq += uint32(len(p) - 20 - int(doff)*4)
			}
		}
	})
	if err != nil {
		t.Fatalf("send malformed segments into A's tunnel: %v", err)
	}
	if !e.udpThrough(t, "after") {
		t.Fatalf("the tunnel no longer carries a datagram after the malformed segments; log:\n%s", e.logBuf)
	}
	// The TUN queue (500 packets) may drop some of the 600 sent at once.
	if in := e.dpB.Stats()[0].In; in.Packets < burst {
		t.Errorf("B decrypted %d packets, want ≥ %d: the malformed segments never reached its receive path", in.Packets, burst)
	}
}

// The offloads are checked against an independent oracle, the kernel: a
// TCP stream crosses the tunnel, TSO super-packets are cut into segments on
// the sending end and merged into GRO super-packets on the receiving one,
// and the receiving kernel's TCP accepts every byte with no checksum error.
func TestDataplane_TCPStream_OffloadedSegmentsCarryValidChecksums(t *testing.T) {
	for _, cipher := range []string{"aes-gcm-128", "aes-cbc-sha1", "aes-cbc-sha256", "aes256-cbc-sha384", "3des-cbc-sha512", "des-cbc-md5"} {
		t.Run(cipher, func(t *testing.T) {
			e := startTunnel(t, cipher)
			e.streamIntact(t, 8<<20)

			var csumErrors uint64
			var tunA, tunB *netlink.LinkStatistics
			var err, errA, errB error
			e.b.do(func() {
				if csumErrors, err = snmpCounter("Tcp:", "InCsumErrors"); err == nil {
					tunB, errB = tunStats()
				}
			})
			e.a.do(func() { tunA, errA = tunStats() })
			if err != nil || errA != nil || errB != nil {
				t.Fatalf("counters: %v %v %v", err, errA, errB)
			}
			if csumErrors != 0 {
				t.Errorf("B's kernel counted %d TCP checksum errors", csumErrors)
			}
			// The offloads were exercised: A's kernel handed its TUN fewer
			// (super-)packets than A sealed, and B wrote fewer into its TUN
			// than it decrypted.
			if sealed := e.dpA.Stats()[0].Out.Packets; tunA.TxPackets*3/2 > sealed {
				t.Errorf("A's TUN took %d packets and A sealed %d: no TSO super-packets were cut", tunA.TxPackets, sealed)
			}
			if opened := e.dpB.Stats()[0].In.Packets; tunB.RxPackets*3/2 > opened {
				t.Errorf("B decrypted %d packets and wrote %d into its TUN: nothing was merged", opened, tunB.RxPackets)
			}
		})
	}
}

// streamIntact sends size random bytes over TCP from A's tunnel address to
// B's and fails the test unless B received them intact (SHA-256).
func (e *tunnelEnds) streamIntact(t *testing.T, size int) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)

	var ln net.Listener
	var err error
	e.b.do(func() { ln, err = net.Listen("tcp4", netip.AddrPortFrom(tunnelB.Addr(), 0).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan [32]byte, 1)
	go func() {
		defer close(got)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		h := sha256.New()
		if n, _ := io.Copy(h, c); n == int64(size) {
			got <- [32]byte(h.Sum(nil))
		}
	}()
	var c net.Conn
	e.a.do(func() {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp4", ln.Addr().String())
	})
	if err != nil {
		t.Fatalf("connect through the tunnel: %v", err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = c.Write(data)
	c.Close()
	if err != nil {
		t.Fatalf("send %d bytes: %v", size, err)
	}
	if sum, ok := <-got; !ok || sum != sha256.Sum256(data) {
		t.Fatalf("B did not receive the %d bytes intact (received: %v); log:\n%s", size, ok, e.logBuf)
	}
}

// A TSO super-packet of small segments (an MSS of 200: 320 of them in 64
// KiB) must not hold more than one read splits into: the tun package drops
// it whole, and the sender retransmits it whole.
func TestDataplane_TCPStreamWithSmallMSS_ArrivesWithoutDrops(t *testing.T) {
	e := startTunnel(t, "aes-gcm-128")
	const size = 4 << 20
	var ln net.Listener
	var err error
	e.b.do(func() { ln, err = net.Listen("tcp4", netip.AddrPortFrom(tunnelB.Addr(), 0).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- 0
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	var c net.Conn
	e.a.do(func() {
		d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, 200) })
			return errors.Join(err, serr)
		}}
		c, err = d.Dial("tcp4", ln.Addr().String())
	})
	if err != nil {
		t.Fatalf("connect through the tunnel: %v", err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = c.Write(make([]byte, size))
	c.Close()
	if n := <-got; err != nil || n != size {
		t.Fatalf("sent with MSS 200: write error %v, %d of %d bytes arrived; log:\n%s", err, n, size, e.logBuf)
	}
	if strings.Contains(e.logBuf.String(), "read from ipsec0") {
		t.Errorf("A dropped super-packets it could not split:\n%s", e.logBuf)
	}
}

// tunStats are the counters of ipsec0 in the calling thread's namespace.
func tunStats() (*netlink.LinkStatistics, error) {
	link, err := netlink.LinkByName("ipsec0")
	if err != nil {
		return nil, err
	}
	if link.Attrs().Statistics == nil {
		return nil, errors.New("ipsec0 has no counters")
	}
	return link.Attrs().Statistics, nil
}

// snmpCounter reads one counter of /proc/net/snmp in the calling thread's
// namespace, e.g. ("Tcp:", "InCsumErrors").
func snmpCounter(group, name string) (uint64, error) {
	f, err := os.Open("/proc/thread-self/net/snmp")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != group {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == name && i < len(fields) {
				return strconv.ParseUint(fields[i], 10, 64)
			}
		}
	}
	return 0, os.ErrNotExist
}

// BenchmarkClose_256Tunnels is how long an agent with 256 tunnels takes to
// remove them as it stops (it gets 2 s): 4.5 s closed one after another,
// 0.4–0.9 s all at once, here.
func BenchmarkClose_256Tunnels(b *testing.B) {
	ns := newTestNS(b)
	key := make([]byte, 20)
	var conns []ipsec.Conn
	for i := range 256 {
		remote := netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(1 + i%250)})
		conns = append(conns, ipsec.Conn{Name: fmt.Sprint("c", i), Interface: fmt.Sprint("ipsec", i), Local: netip.MustParseAddr("127.0.0.1"), Remote: remote,
			Cipher: "aes-gcm-128", MTU: ipsec.TunnelMTU, Out: ipsec.SA{SPI: uint32(0x1000 + 2*i), EncKey: key}, In: ipsec.SA{SPI: uint32(0x1001 + 2*i), EncKey: key}})
	}
	for b.Loop() {
		b.StopTimer()
		var d *Dataplane
		var err error
		ns.do(func() { d, err = Start(conns, log.New(io.Discard, "", 0)) })
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		d.Close()
	}
}

package kernelprobe

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/netnsx"
)

// The tests below need a kernel with ESP and XFRM interfaces, which the
// development machines lack: vmtest/run.sh boots one and sets EMU_VMTEST=1.
func requireVM(t *testing.T) {
	t.Helper()
	if os.Getenv("EMU_VMTEST") != "1" {
		t.Skip("kernel ESP proof: runs inside the QEMU VM (vmtest/README.md); EMU_VMTEST=1 runs it on any kernel with ESP")
	}
	requireRoot(t)
}

func TestKernelESP_ProbeFindsESPAndXFRMInterface(t *testing.T) {
	requireVM(t)
	r := Probe()
	if !r.ESP || !r.XFRMInterface {
		t.Fatalf("Probe() = %+v, want ESP and XFRMInterface", r)
	}
}

// gateway is one end of a route-based ESP tunnel: an outer address on the
// veth that stands for the Express Connect line, an XFRM interface carrying
// the inner /30.
type gateway struct {
	ns    netns.NsHandle
	outer net.IP
	inner *net.IPNet
}

// sa is one direction of the tunnel.
type sa struct {
	spi int
	key []byte
}

const (
	tunnelIfID = 42
	reqID      = 1
)

func TestKernelESP_PingCrossesTunnelEncrypted(t *testing.T) {
	requireVM(t)
	a := gateway{ns: testNamespace(t), outer: net.IPv4(192, 0, 2, 1),
		inner: &net.IPNet{IP: net.IPv4(169, 254, 10, 1), Mask: net.CIDRMask(30, 32)}}
	b := gateway{ns: testNamespace(t), outer: net.IPv4(192, 0, 2, 2),
		inner: &net.IPNet{IP: net.IPv4(169, 254, 10, 2), Mask: net.CIDRMask(30, 32)}}
	ab, ba := newSA(t, 0x1001), newSA(t, 0x2002)

	// The veth peer is born in b's namespace: no name ever appears in
	// another namespace, so nothing can collide.
	mustIn(t, a.ns, "create veth ec0 a<->b", func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ec0"},
			PeerName: "ec0", PeerNamespace: netlink.NsFd(int(b.ns))})
	})
	mustIn(t, a.ns, "configure gateway a", func() error { return a.configure(b, ab, ba) })
	mustIn(t, b.ns, "configure gateway b", func() error { return b.configure(a, ba, ab) })

	capture := startCapture(t, a.ns, "ec0")
	marker := make([]byte, 16)
	rand.Read(marker)
	marker = []byte(hex.EncodeToString(marker))
	rtt := pingFrom(t, a.ns, b.inner.IP, marker)
	frames := capture.stop()
	t.Logf("echo reply from %v through the tunnel in %v; %d frames captured on a:ec0", b.inner.IP, rtt, len(frames))

	seenSPI := map[uint32]int{}
	for _, f := range frames {
		if bytes.Contains(f, marker) {
			t.Errorf("the ICMP payload marker appears in clear on ec0: % x", f)
		}
		proto, payload, ok := ipv4(f)
		if !ok {
			continue
		}
		switch proto {
		case unix.IPPROTO_ESP:
			if len(payload) >= 4 {
				seenSPI[binary.BigEndian.Uint32(payload)]++
			}
		case unix.IPPROTO_ICMP:
			t.Errorf("inner ICMP crossed ec0 in clear: % x", f)
		}
	}
	for _, s := range []sa{ab, ba} {
		t.Logf("ESP frames on ec0 with SPI %#x: %d", s.spi, seenSPI[uint32(s.spi)])
		if seenSPI[uint32(s.spi)] == 0 {
			t.Errorf("no ESP frame with SPI %#x on ec0 (SPIs seen: %v)", s.spi, seenSPI)
		}
	}
}

func newSA(t *testing.T, spi int) sa {
	key := make([]byte, 20) // AES-128 key + 4-byte salt (RFC 4106)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return sa{spi: spi, key: key}
}

// testNamespace returns a new unnamed namespace, freed when the test ends.
func testNamespace(t *testing.T) netns.NsHandle {
	t.Helper()
	ns, err := newScratchNamespace()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func mustIn(t *testing.T, ns netns.NsHandle, what string, fn func() error) {
	t.Helper()
	if err := netnsx.DoHandle(ns, fn); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// configure runs inside g's namespace: outer address, SAs and any/any
// policies bound to the XFRM interface by if_id, the interface itself.
func (g gateway) configure(peer gateway, out, in sa) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	ec, err := netlink.LinkByName("ec0")
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(ec, &netlink.Addr{IPNet: &net.IPNet{IP: g.outer, Mask: net.CIDRMask(24, 32)}}); err != nil {
		return fmt.Errorf("address %v on ec0: %w", g.outer, err)
	}
	for _, l := range []netlink.Link{lo, ec} {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
		}
	}
	for _, d := range []struct {
		dir      netlink.Dir
		src, dst net.IP
		sa       sa
	}{
		{netlink.XFRM_DIR_OUT, g.outer, peer.outer, out},
		{netlink.XFRM_DIR_IN, peer.outer, g.outer, in},
	} {
		if err := netlink.XfrmStateAdd(&netlink.XfrmState{
			Src: d.src, Dst: d.dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
			Spi: d.sa.spi, Reqid: reqID, Ifid: tunnelIfID, ReplayWindow: 32,
			Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: d.sa.key, ICVLen: 128},
		}); err != nil {
			return fmt.Errorf("ESP state %v->%v spi %#x: %w", d.src, d.dst, d.sa.spi, err)
		}
		anyNet := &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		if err := netlink.XfrmPolicyAdd(&netlink.XfrmPolicy{
			Src: anyNet, Dst: anyNet, Dir: d.dir, Ifid: tunnelIfID,
			Tmpls: []netlink.XfrmPolicyTmpl{{Src: d.src, Dst: d.dst,
				Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Reqid: reqID}},
		}); err != nil {
			return fmt.Errorf("policy %v any/any: %w", d.dir, err)
		}
	}
	xi := &netlink.Xfrmi{LinkAttrs: netlink.LinkAttrs{Name: "ipsec0", ParentIndex: ec.Attrs().Index}, Ifid: tunnelIfID}
	if err := netlink.LinkAdd(xi); err != nil {
		return fmt.Errorf("xfrm interface ipsec0: %w", err)
	}
	if err := netlink.AddrAdd(xi, &netlink.Addr{IPNet: g.inner}); err != nil {
		return fmt.Errorf("address %v on ipsec0: %w", g.inner, err)
	}
	return netlink.LinkSetUp(xi)
}

// capture records every frame an AF_PACKET socket sees on one interface,
// both directions, until stop.
type capture struct {
	fd     int
	mu     sync.Mutex
	frames [][]byte
	done   chan struct{}
	ended  chan struct{}
}

func startCapture(t *testing.T, ns netns.NsHandle, ifname string) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{}), ended: make(chan struct{})}
	proto := int(htons(unix.ETH_P_ALL))
	mustIn(t, ns, "open AF_PACKET socket on "+ifname, func() error {
		l, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		if c.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		return unix.Bind(c.fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: l.Attrs().Index})
	})
	t.Cleanup(func() { unix.Close(c.fd) })
	setTimeout(t, c.fd, 100*time.Millisecond)
	go func() {
		defer close(c.ended)
		buf := make([]byte, 65536)
		for {
			select {
			case <-c.done:
				return
			default:
			}
			n, _, err := unix.Recvfrom(c.fd, buf, 0)
			if err != nil {
				continue // timeout: look at done again
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *capture) stop() [][]byte {
	// Let the last frames of the exchange arrive.
	time.Sleep(200 * time.Millisecond)
	close(c.done)
	<-c.ended
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// ipv4 returns the protocol and payload of an Ethernet frame carrying IPv4.
func ipv4(frame []byte) (proto int, payload []byte, ok bool) {
	const eth = 14
	if len(frame) < eth+20 || binary.BigEndian.Uint16(frame[12:]) != unix.ETH_P_IP {
		return 0, nil, false
	}
	ip := frame[eth:]
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl {
		return 0, nil, false
	}
	return int(ip[9]), ip[ihl:], true
}

// pingFrom sends ICMP echo requests carrying marker from a raw socket in ns
// to dst until one reply with the same id and marker comes back.
func pingFrom(t *testing.T, ns netns.NsHandle, dst net.IP, marker []byte) time.Duration {
	t.Helper()
	var fd int
	mustIn(t, ns, "open raw ICMP socket", func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	defer unix.Close(fd)
	setTimeout(t, fd, 200*time.Millisecond)

	id := uint16(os.Getpid())
	to := &unix.SockaddrInet4{}
	copy(to.Addr[:], dst.To4())
	buf := make([]byte, 1500)
	for seq := uint16(1); seq <= 5; seq++ {
		start := time.Now()
		if err := unix.Sendto(fd, echoRequest(id, seq, marker), 0, to); err != nil {
			t.Fatalf("send echo request to %v: %v", dst, err)
		}
		for time.Since(start) < time.Second {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			src, _ := from.(*unix.SockaddrInet4)
			if src == nil || !net.IP(src.Addr[:]).Equal(dst) || n < 20 {
				continue
			}
			ihl := int(buf[0]&0x0f) * 4
			icmp := buf[ihl:n]
			if len(icmp) >= 8 && icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id &&
				bytes.Equal(icmp[8:], marker) {
				return time.Since(start)
			}
		}
		t.Logf("no echo reply from %v to seq %d within 1s", dst, seq)
	}
	t.Fatalf("no echo reply from %v through the tunnel", dst)
	return 0
}

func echoRequest(id, seq uint16, payload []byte) []byte {
	m := make([]byte, 8+len(payload))
	m[0] = 8 // echo request
	binary.BigEndian.PutUint16(m[4:], id)
	binary.BigEndian.PutUint16(m[6:], seq)
	copy(m[8:], payload)
	binary.BigEndian.PutUint16(m[2:], checksum(m))
	return m
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func setTimeout(t *testing.T, fd int, d time.Duration) {
	t.Helper()
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

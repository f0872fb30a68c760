package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/netnsx"
)

// The comparison: wireguard-go (golang.zx2c4.com/wireguard, the version in
// go.mod, from the Go module proxy) between the same two gateways, with its
// TUN offloads (TSO/GRO through the same tun package emu uses) and UDP
// GSO/GRO batching. This program runs it as a child, like the agents,
// inside each gateway's namespace.
const (
	asWireGuardEnv = "EMU_BENCH_AS_WIREGUARD"
	wgInterface    = "wg0"
	wgPort         = 51820
)

// runWireGuard is the child: a wireguard-go device on a TUN named
// wgInterface with the tunnel MTU emu uses, configured from stdin (the
// UAPI text, which holds the private key: never on a command line), up
// until SIGTERM. It says "ready" on stdout once packets can flow.
func runWireGuard() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "wireguard:", err)
		return 1
	}
	uapi, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fail(err)
	}
	dev, err := tun.CreateTUN(wgInterface, ipsec.TunnelMTU)
	if err != nil {
		return fail(fmt.Errorf("create %s: %w", wgInterface, err))
	}
	wg := device.NewDevice(dev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wireguard: "))
	defer wg.Close()
	if err := wg.IpcSet(string(uapi)); err != nil {
		return fail(err)
	}
	if err := wg.Up(); err != nil {
		return fail(err)
	}
	link, err := netlink.LinkByName(wgInterface)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		return fail(fmt.Errorf("bring %s up: %w", wgInterface, err))
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	<-stop
	wg.Close()
	printCPU(os.Stderr)
	return 0
}

// wgKeys is a Curve25519 key pair (RFC 7748), as `wg genkey | wg pubkey`.
type wgKeys struct{ private, public []byte }

func newWGKeys() (wgKeys, error) {
	k := wgKeys{private: make([]byte, curve25519.ScalarSize)}
	rand.Read(k.private)
	k.private[0] &= 248
	k.private[31] = k.private[31]&127 | 64
	var err error
	k.public, err = curve25519.X25519(k.private, curve25519.Basepoint)
	return k, err
}

// wgPeer is one running child.
type wgPeer struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

// startWireGuard runs the child in namespace ns with keys, talking to the
// peer publicKey at endpoint, and waits until it is ready.
func startWireGuard(ns string, keys wgKeys, peerPublic []byte, endpoint netip.AddrPort) (*wgPeer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &wgPeer{cmd: exec.Command(exe), stderr: &bytes.Buffer{}}
	p.cmd.Env = append(os.Environ(), asWireGuardEnv+"=1")
	p.cmd.Stdin = strings.NewReader(fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nendpoint=%s\nallowed_ip=0.0.0.0/0\n",
		hex.EncodeToString(keys.private), wgPort, hex.EncodeToString(peerPublic), endpoint))
	p.cmd.Stderr = p.stderr
	// Dies with this program, even on kill -9, so no namespace is held.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// The child inherits the namespace of the thread that forks it.
	if err := netnsx.Do(ns, p.cmd.Start); err != nil {
		return nil, fmt.Errorf("start wireguard-go in %s: %w", ns, err)
	}
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ready:
		if line == "ready" {
			return p, nil
		}
	case <-time.After(10 * time.Second):
	}
	p.stop()
	return nil, fmt.Errorf("wireguard-go in %s did not start: %s", ns, strings.TrimSpace(p.stderr.String()))
}

// stop ends the child (SIGTERM, SIGKILL after 5 s) and returns the CPU
// time it reported.
func (p *wgPeer) stop() cpuTime {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
	cpu, _ := parseCPU(p.stderr.String())
	return cpu
}

// cpuTime is what a process used, from getrusage.
type cpuTime struct{ user, system time.Duration }

// printCPU writes the CPU time of this process and of its children that
// ended (an agent's supervisor counts its worker that way) as a line
// parseCPU reads.
func printCPU(w io.Writer) {
	var self, children syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) == nil && syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children) == nil {
		fmt.Fprintf(w, "%suser %d system %d\n", cpuMarker, self.Utime.Nano()+children.Utime.Nano(), self.Stime.Nano()+children.Stime.Nano())
	}
}

// parseCPU finds the last line printCPU wrote in a log: an agent's
// supervisor writes it after its worker, and counts the worker's time in.
func parseCPU(log string) (cpuTime, error) {
	var last string
	for line := range strings.Lines(log) {
		if _, rest, ok := strings.Cut(line, cpuMarker); ok {
			last = rest
		}
	}
	f := strings.Fields(last)
	if len(f) != 4 {
		return cpuTime{}, errors.New("no CPU time line")
	}
	u, err1 := strconv.ParseInt(f[1], 10, 64)
	s, err2 := strconv.ParseInt(f[3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return cpuTime{}, err
	}
	return cpuTime{time.Duration(u), time.Duration(s)}, nil
}

// wgPair is wireguard-go on both gateways of a lab.
type wgPair map[string]*wgPeer

// startWireGuardPair runs wireguard-go on onprem and vpngw of l, each with
// the other's outer address (the tunnel endpoints of emu's connection) as
// its endpoint.
func startWireGuardPair(l *benchLab) (wgPair, error) {
	var ends [2]struct {
		node string
		addr netip.Addr
		keys wgKeys
	}
	addrs, err := l.endpoints()
	if err != nil {
		return nil, err
	}
	for i, node := range gateways {
		ends[i].node, ends[i].addr = node, addrs[i]
		if ends[i].keys, err = newWGKeys(); err != nil {
			return nil, err
		}
	}
	p := wgPair{}
	for i, e := range ends {
		peer := ends[1-i]
		w, err := startWireGuard(l.ns(e.node), e.keys, peer.keys.public, netip.AddrPortFrom(peer.addr, wgPort))
		if err != nil {
			p.stop()
			return nil, err
		}
		p[e.node] = w
	}
	return p, nil
}

// stop ends both peers and returns their CPU time by node.
func (p wgPair) stop() map[string]cpuTime {
	out := map[string]cpuTime{}
	for node, w := range p {
		out[node] = w.stop()
	}
	return out
}

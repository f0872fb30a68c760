package userspace

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/ipsec/ike/swtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/wiring"
)

// ecsAddr stands for an ECS behind emu's VPN gateway.
var ecsAddr = netip.MustParseAddr("172.16.2.10")

// keyedGateway runs emu's VPN gateway in the lab: the userspace dataplane
// with an IKE-keyed tunnel and the IKE endpoint feeding it.
func keyedGateway(t *testing.T, l *swtest.Lab, cfg ike.Config) *ike.Endpoint {
	t.Helper()
	w := wiring.New()
	t.Cleanup(w.Close)
	if err := w.AddAddress(l.NSEmu, "lo", wiring.IPNet(netip.PrefixFrom(ecsAddr, 32))); err != nil {
		t.Fatal(err)
	}
	conn := ipsec.Conn{Name: cfg.Name, Interface: "ipsec0", Address: netip.MustParsePrefix("169.254.10.2/30"),
		Local: cfg.Local, Remote: cfg.Remote, MTU: ipsec.TunnelMTU, IKE: &cfg}
	var dp *Dataplane
	var e *ike.Endpoint
	err := netnsx.Do(l.NSEmu, func() error {
		var err error
		if dp, err = Start([]ipsec.Conn{conn}, log.New(os.Stderr, "dataplane: ", 0)); err != nil {
			return err
		}
		e, err = dp.ListenIKE(ike.Options{Addr: cfg.Local, Log: slog.Default(), RetransmitBase: 300 * time.Millisecond, RetransmitTries: 3})
		return err
	})
	if err != nil {
		if dp != nil {
			dp.Close()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("emu's IKE status: %+v\ndataplane: %+v, drops before an SA: %+v", e.Status(), dp.Stats(), dp.Drops())
		}
		e.Close()
		dp.Close()
	})
	if err := w.AddRoute(l.NSEmu, wiring.IPNet(swtest.OnpremNet), nil, "ipsec0", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

func emuConfig() ike.Config {
	return ike.Config{
		Name: "vpn1", Local: swtest.EmuAddr, Remote: swtest.CharonAddr, PSK: []byte(swtest.DefaultConf().PSK),
		IKE:      ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196, PRF: ike.PRFHMACSHA1, DH: 2},
		ESP:      ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196, DH: 2},
		LocalTS:  []netip.Prefix{swtest.VPCNet},
		RemoteTS: []netip.Prefix{swtest.OnpremNet},
		NATT:     true,
	}
}

func waitEstablished(t *testing.T, e *ike.Endpoint) ike.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st := e.Status(); len(st) > 0 && st[0].Phase1 == ike.StateEstablished && st[0].Phase2 == ike.StateEstablished {
			return st[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("not established: %+v", e.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stream sends n random bytes over TCP from the on-prem LAN address to the
// ECS through the tunnel, returning what the ECS received.
func stream(t *testing.T, l *swtest.Lab, payload []byte, during func()) []byte {
	t.Helper()
	var ln net.Listener
	if err := netnsx.Do(l.NSEmu, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(ecsAddr, 40123).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var c net.Conn
	// charon routes into its libipsec TUN once it processed the IKE_AUTH
	// response, a moment after emu, the responder, counts the CHILD SA up:
	// until then the ECS is unreachable from the on-prem side.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := netnsx.Do(l.NSCharon, func() (err error) {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(swtest.OnpremGW, 0)), Timeout: 5 * time.Second}
			c, err = d.Dial("tcp", netip.AddrPortFrom(ecsAddr, 40123).String())
			return err
		})
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENETUNREACH) || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		// Paced so the stream spans the rekeys of the lifetimes below.
		chunk := len(payload) / 100
		for i := 0; i < len(payload); i += chunk {
			// A tunnel that stopped carrying the stream fails the test
			// here rather than at go test's timeout.
			c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.Write(payload[i:min(i+chunk, len(payload))]); err != nil {
				done <- err
				return
			}
			time.Sleep(40 * time.Millisecond)
		}
		done <- c.(*net.TCPConn).CloseWrite()
	}()
	if during != nil {
		during()
	}
	if err := <-done; err != nil {
		t.Fatalf("send: %v", err)
	}
	c.Close()
	select {
	case b := <-got:
		return b
	case <-time.After(20 * time.Second):
		t.Fatal("the ECS never saw the end of the stream")
		return nil
	}
}

func TestStrongSwan_TCPThroughESPInUDP_BothWaysEncrypted(t *testing.T) {
	l := swtest.New(t)
	e := keyedGateway(t, l, emuConfig())
	cc := swtest.DefaultConf()
	cc.Start = true
	l.StartCharon(cc)
	st := waitEstablished(t, e)
	if !st.Encap {
		t.Fatalf("charon with kernel-libipsec should force ESP in UDP: %+v", st)
	}
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	if got := stream(t, l, payload, nil); !bytes.Equal(got, payload) {
		t.Fatalf("ECS received %d bytes, sent %d", len(got), len(payload))
	}
	// charon's own counters: what it decrypted from emu's outbound SA.
	sas := l.SAs()
	if !strings.Contains(sas, "TUNNEL-in-UDP") || !strings.Contains(sas, fmt.Sprintf("in  %08x", st.OutSPI)) {
		t.Fatalf("charon lacks emu's outbound SA 0x%08x in UDP:\n%s", st.OutSPI, sas)
	}
}

func TestStrongSwan_RekeyUnderTCPStream_LosesNothing(t *testing.T) {
	l := swtest.New(t)
	cfg := emuConfig()
	cfg.ChildLifetime, cfg.IKELifetime = 1500*time.Millisecond, 2500*time.Millisecond
	e := keyedGateway(t, l, cfg)
	cc := swtest.DefaultConf()
	cc.Start = true
	l.StartCharon(cc)
	waitEstablished(t, e)
	payload := make([]byte, 2<<20)
	rand.Read(payload)
	got := stream(t, l, payload, nil)
	st := e.Status()[0]
	if st.ChildRekeys < 2 || st.IKERekeys < 1 {
		t.Fatalf("the stream did not span the rekeys: %d CHILD, %d IKE rekeys", st.ChildRekeys, st.IKERekeys)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("ECS received %d bytes, sent %d, or they differ", len(got), len(payload))
	}
	t.Logf("%d bytes across %d CHILD and %d IKE rekeys", len(got), st.ChildRekeys, st.IKERekeys)
}

package ike

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/wiring"
)

// The interop lab: charon on the on-prem side, emu's endpoint on the VPN
// gateway side, a veth between two namespaces this test creates.
var (
	charonAddr = netip.MustParseAddr("192.0.2.1")
	emuAddr    = netip.MustParseAddr("192.0.2.2")
	onpremNet  = netip.MustParsePrefix("10.1.0.0/24")
	onpremGW   = netip.MustParseAddr("10.1.0.1")
	vpcNet     = netip.MustParsePrefix("172.16.0.0/16")
)

const charonBin = "/usr/lib/ipsec/charon"

type swLab struct {
	t         *testing.T
	dir       string
	nsCharon  string
	nsEmu     string
	charon    *exec.Cmd
	charonErr chan error
}

// requireCharon skips without root or strongSwan. (labtest.RequireRoot
// would import this package back through labtest → ipsec, like in the
// kernel package's tests.)
func requireCharon(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the interop tests create network namespaces")
	}
	for _, bin := range []string{charonBin, "swanctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("strongSwan is not installed (%s): run scripts/setup.sh", bin)
		}
	}
}

func newSWLab(t *testing.T) *swLab {
	t.Helper()
	requireCharon(t)
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	l := &swLab{t: t, dir: t.TempDir(), nsCharon: "emui-" + id + "-onprem", nsEmu: "emui-" + id + "-vpngw"}
	w := wiring.New()
	t.Cleanup(w.Close)
	for _, ns := range []string{l.nsCharon, l.nsEmu} {
		err := w.CreateNamespace(ns, false, false)
		if !errors.Is(err, wiring.ErrExists) {
			t.Cleanup(func() {
				if err := wiring.DeleteNamespace(ns); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AddVeth(l.nsCharon, "eth1", l.nsEmu, "eth1", 1500); err != nil {
		t.Fatal(err)
	}
	for ns, a := range map[string]netip.Addr{l.nsCharon: charonAddr, l.nsEmu: emuAddr} {
		if err := w.AddAddress(ns, "eth1", wiring.IPNet(netip.PrefixFrom(a, 24))); err != nil {
			t.Fatal(err)
		}
	}
	// The on-prem gateway's LAN address: charon's kernel-libipsec routes
	// into its TUN from an address inside the local selector.
	if err := w.AddAddress(l.nsCharon, "lo", wiring.IPNet(netip.PrefixFrom(onpremGW, 24))); err != nil {
		t.Fatal(err)
	}
	return l
}

// charonConf is what the test hands charon: the provider's strongSwan
// example in its IKEv2 variant.
type charonConf struct {
	ikeProposal, espProposal string
	psk                      string
	localID, remoteID        string
	start                    bool // charon initiates
	dpd                      string
	rekeyTime, lifeTime      string // CHILD SA
	localTS, remoteTS        string
}

func defaultCharonConf() charonConf {
	return charonConf{ikeProposal: "aes128-sha1-modp1024", espProposal: "aes128-sha1-modp1024", psk: "s3cret-psk-16chr",
		localID: charonAddr.String(), remoteID: emuAddr.String(), dpd: "0s",
		rekeyTime: "1h", lifeTime: "2h", localTS: onpremNet.String(), remoteTS: vpcNet.String()}
}

// startCharon runs charon in the on-prem namespace with its own
// strongswan.conf (STRONGSWAN_CONF), its own VICI socket in the test's
// directory and a private /run (its pid file is fixed), then loads the
// connection with swanctl.
func (l *swLab) startCharon(c charonConf) {
	t := l.t
	t.Helper()
	vici := "unix://" + filepath.Join(l.dir, "charon.vici")
	conf := fmt.Sprintf(`charon {
	load_modular = yes
	install_routes = no
	retransmit_tries = 3
	retransmit_timeout = 1
	retransmit_base = 1.4
	plugins {
		include /etc/strongswan.d/charon/*.conf
		kernel-libipsec { load = yes }
		vici { socket = %s }
	}
	filelog {
		log { path = %s
			default = 1
			ike = 2
			cfg = 2
			time_format = %%T
			flush_line = yes
		}
	}
}
`, vici, filepath.Join(l.dir, "charon.log"))
	write(t, filepath.Join(l.dir, "strongswan.conf"), conf)
	start := "none"
	if c.start {
		start = "start"
	}
	swanctl := fmt.Sprintf(`connections {
	emu {
		version = 2
		local_addrs = %s
		remote_addrs = %s
		proposals = %s
		dpd_delay = %s
		rekey_time = 0
		local { auth = psk
			id = %s }
		remote { auth = psk
			id = %s }
		children {
			net {
				local_ts = %s
				remote_ts = %s
				esp_proposals = %s
				start_action = %s
				dpd_action = clear
				rekey_time = %s
				life_time = %s
			}
		}
	}
}
secrets {
	ike-emu {
		id-1 = %s
		id-2 = %s
		secret = "%s"
	}
}
`, charonAddr, emuAddr, c.ikeProposal, c.dpd, c.localID, c.remoteID, c.localTS, c.remoteTS, c.espProposal, start,
		c.rekeyTime, c.lifeTime, c.localID, c.remoteID, c.psk)
	write(t, filepath.Join(l.dir, "swanctl.conf"), swanctl)

	cmd := exec.Command("/bin/sh", "-c", "mount --make-rprivate / && mount -t tmpfs emu-charon-run /run && exec "+charonBin)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(l.dir, "strongswan.conf"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	out, _ := os.Create(filepath.Join(l.dir, "charon.out"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := netnsx.Do(l.nsCharon, cmd.Start); err != nil {
		t.Fatalf("start charon: %v", err)
	}
	l.charon = cmd
	l.charonErr = make(chan error, 1)
	go func() { l.charonErr <- cmd.Wait(); out.Close() }()
	t.Cleanup(func() {
		l.killCharon()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(l.dir, "charon.log"))
			t.Logf("charon log:\n%s", log)
		}
	})
	// charon answers on VICI once its plugins are loaded.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := exec.Command("swanctl", "--load-all", "--noprompt", "--file", filepath.Join(l.dir, "swanctl.conf"), "--uri", vici).Run()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(l.dir, "charon.out"))
			t.Fatalf("swanctl --load-all: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// killCharon ends the charon this test started, by its own process.
func (l *swLab) killCharon() {
	if l.charon == nil || l.charon.Process == nil {
		return
	}
	l.charon.Process.Kill()
	select {
	case <-l.charonErr:
	case <-time.After(5 * time.Second):
		l.t.Errorf("charon pid %d did not exit after SIGKILL", l.charon.Process.Pid)
	}
	l.charon = nil
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// emu starts emu's endpoint in the VPN gateway namespace.
func (l *swLab) emu(cfg Config) *side {
	t := l.t
	t.Helper()
	s := &side{rec: &recorder{}, cfg: cfg}
	err := netnsx.Do(l.nsEmu, func() error {
		var err error
		s.e, err = Listen(Options{Addr: emuAddr, Handler: s.rec, RetransmitBase: 300 * time.Millisecond, RetransmitTries: 3, RetryAfter: time.Hour})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("EMU_IKE_CAPTURE"); dir != "" {
		s.e.trace = func(b []byte) {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d.bin", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().UnixNano())), b, 0o644)
		}
	}
	t.Cleanup(func() { s.e.Close() })
	if err := s.e.Add(cfg); err != nil {
		t.Fatal(err)
	}
	return s
}

func emuConfig() Config {
	c := baseConfig(emuAddr, charonAddr)
	c.LocalTS, c.RemoteTS = []netip.Prefix{vpcNet}, []netip.Prefix{onpremNet}
	return c
}

// charonSAs is what swanctl --list-sas says, for assertions from charon's
// side of the story.
func (l *swLab) charonSAs() string {
	out, _ := exec.Command("swanctl", "--list-sas", "--uri", "unix://"+filepath.Join(l.dir, "charon.vici")).CombinedOutput()
	return string(out)
}

func TestStrongSwan_Initiator_EstablishesWithEmu(t *testing.T) {
	for _, esp := range []struct {
		charon string
		suite  Suite
	}{
		{"aes128-sha1-modp1024", Suite{Encr: EncrAESCBC, KeyBits: 128, Integ: IntegHMACSHA196, DH: 2}},
		{"aes128gcm16", Suite{Encr: EncrAESGCM16, KeyBits: 128}},
	} {
		t.Run(esp.charon, func(t *testing.T) {
			l := newSWLab(t)
			cfg := emuConfig()
			cfg.ESP = esp.suite
			emu := l.emu(cfg)
			cc := defaultCharonConf()
			cc.espProposal, cc.start = esp.charon, true
			l.startCharon(cc)
			st := waitStatus(t, emu, "established with charon", established)
			// kernel-libipsec makes charon fake a NAT: ESP goes in UDP.
			if !st.Encap {
				t.Errorf("expected UDP encapsulation with kernel-libipsec: %+v", st)
			}
			sas := l.charonSAs()
			if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, "INSTALLED") || !strings.Contains(sas, fmt.Sprintf("%08x", st.InSPI)) {
				t.Fatalf("charon does not show the CHILD SA emu installed (in 0x%08x):\n%s", st.InSPI, sas)
			}
		})
	}
}

func TestStrongSwan_Responder_EmuInitiates(t *testing.T) {
	l := newSWLab(t)
	l.startCharon(defaultCharonConf())
	cfg := emuConfig()
	cfg.Initiate = true
	emu := l.emu(cfg)
	st := waitStatus(t, emu, "established with charon", established)
	if sas := l.charonSAs(); !strings.Contains(sas, fmt.Sprintf("%08x", st.OutSPI)) {
		t.Fatalf("charon lacks the CHILD SA emu sends on (0x%08x):\n%s", st.OutSPI, sas)
	}
}

func TestStrongSwan_WrongPSK_EmuReportsAuthenticationFailed(t *testing.T) {
	l := newSWLab(t)
	emu := l.emu(emuConfig())
	cc := defaultCharonConf()
	cc.psk, cc.start = "not-the-providers-key", true
	l.startCharon(cc)
	st := waitStatus(t, emu, "fails", func(s Status) bool { return s.Phase1 == StateFailed })
	if !strings.HasPrefix(st.Phase1Reason, "AUTHENTICATION_FAILED") {
		t.Fatalf("reason %q", st.Phase1Reason)
	}
}

func TestStrongSwan_ProposalMismatch_EmuReportsBothProposals(t *testing.T) {
	l := newSWLab(t)
	emu := l.emu(emuConfig())
	cc := defaultCharonConf()
	cc.ikeProposal, cc.start = "aes256-sha256-modp2048", true
	l.startCharon(cc)
	st := waitStatus(t, emu, "fails", func(s Status) bool { return s.Phase1 == StateFailed })
	for _, want := range []string{"NO_PROPOSAL_CHOSEN", "peer offered IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048", "we accept IKE:AES_CBC_128/PRF_HMAC_SHA1/HMAC_SHA1_96/MODP_1024"} {
		if !strings.Contains(st.Phase1Reason, want) {
			t.Errorf("reason %q lacks %q", st.Phase1Reason, want)
		}
	}
}

func TestStrongSwan_IdentityMismatch_EmuReportsAuthenticationFailed(t *testing.T) {
	l := newSWLab(t)
	emu := l.emu(emuConfig())
	cc := defaultCharonConf()
	cc.localID, cc.start = "onprem.example.com", true
	l.startCharon(cc)
	st := waitStatus(t, emu, "fails", func(s Status) bool { return s.Phase1 == StateFailed })
	if want := `identity mismatch: peer is "onprem.example.com", expected remote id "192.0.2.1"`; !strings.Contains(st.Phase1Reason, want) {
		t.Fatalf("reason %q lacks %q", st.Phase1Reason, want)
	}
}

func TestStrongSwan_KillCharon_DPDTakesTunnelDown(t *testing.T) {
	l := newSWLab(t)
	cfg := emuConfig()
	cfg.DPD = 300 * time.Millisecond
	emu := l.emu(cfg)
	cc := defaultCharonConf()
	cc.start = true
	l.startCharon(cc)
	waitStatus(t, emu, "established", established)
	l.killCharon()
	st := waitStatus(t, emu, "DPD", func(s Status) bool { return s.Phase1 != StateEstablished })
	if !strings.Contains(st.Phase1Reason, "DPD: peer unreachable") {
		t.Fatalf("reason %q", st.Phase1Reason)
	}
	if up, _ := emu.rec.snapshot(); len(up) != 0 {
		t.Fatalf("%d CHILD SAs left after DPD", len(up))
	}
}

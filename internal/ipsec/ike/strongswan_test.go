package ike

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/ipsec/ike/swtest"
	"github.com/emu-lab/emu/internal/netnsx"
)

// startEmu starts emu's endpoint in the VPN gateway namespace.
func startEmu(t *testing.T, l *swtest.Lab, cfg Config) *side {
	t.Helper()
	s := &side{rec: &recorder{}, cfg: cfg}
	err := netnsx.Do(l.NSEmu, func() error {
		var err error
		s.e, err = Listen(Options{Addr: swtest.EmuAddr, Handler: s.rec, RetransmitBase: 300 * time.Millisecond, RetransmitTries: 3, RetryAfter: time.Hour})
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
	c := baseConfig(swtest.EmuAddr, swtest.CharonAddr)
	c.LocalTS, c.RemoteTS = []netip.Prefix{swtest.VPCNet}, []netip.Prefix{swtest.OnpremNet}
	return c
}

func TestStrongSwan_Initiator_EstablishesWithEmu(t *testing.T) {
	for _, esp := range []struct {
		charon string
		suite  Suite
	}{
		{"aes128-sha1-modp1024", Suite{Encr: EncrAESCBC, KeyBits: 128, Integ: IntegHMACSHA196, DH: 2}},
		{"aes128gcm16", Suite{Encr: EncrAESGCM16, KeyBits: 128}},
		// Two proposals, emu takes the one it is configured with.
		{"aes128gcm16,aes128-sha1-modp1024", Suite{Encr: EncrAESCBC, KeyBits: 128, Integ: IntegHMACSHA196, DH: 2}},
		// The other ciphers and HMACs the provider allows.
		{"aes192-sha384-modp1024", Suite{Encr: EncrAESCBC, KeyBits: 192, Integ: IntegHMACSHA384192, DH: 2}},
		{"aes256-md5-modp1024", Suite{Encr: EncrAESCBC, KeyBits: 256, Integ: IntegHMACMD596, DH: 2}},
		{"3des-sha512-modp1024", Suite{Encr: Encr3DES, Integ: IntegHMACSHA512256, DH: 2}},
		{"des-sha256-modp1024", Suite{Encr: EncrDES, Integ: IntegHMACSHA256128, DH: 2}},
	} {
		t.Run(esp.charon, func(t *testing.T) {
			l := swtest.New(t)
			cfg := emuConfig()
			cfg.ESP = esp.suite
			emu := startEmu(t, l, cfg)
			cc := swtest.DefaultConf()
			cc.ESPProposal, cc.Start = esp.charon, true
			l.StartCharon(cc)
			st := waitStatus(t, emu, "established with charon", established)
			// kernel-libipsec makes charon fake a NAT: ESP goes in UDP.
			if !st.Encap {
				t.Errorf("expected UDP encapsulation with kernel-libipsec: %+v", st)
			}
			sas := l.SAs()
			if !strings.Contains(sas, "ESTABLISHED") || !strings.Contains(sas, "INSTALLED") || !strings.Contains(sas, fmt.Sprintf("%08x", st.InSPI)) {
				t.Fatalf("charon does not show the CHILD SA emu installed (in 0x%08x):\n%s", st.InSPI, sas)
			}
		})
	}
}

func TestStrongSwan_Responder_EmuInitiates(t *testing.T) {
	l := swtest.New(t)
	l.StartCharon(swtest.DefaultConf())
	cfg := emuConfig()
	cfg.Initiate = true
	emu := startEmu(t, l, cfg)
	st := waitStatus(t, emu, "established with charon", established)
	if sas := l.SAs(); !strings.Contains(sas, fmt.Sprintf("%08x", st.OutSPI)) {
		t.Fatalf("charon lacks the CHILD SA emu sends on (0x%08x):\n%s", st.OutSPI, sas)
	}
}

func TestStrongSwan_WrongPSK_EmuReportsAuthenticationFailed(t *testing.T) {
	l := swtest.New(t)
	emu := startEmu(t, l, emuConfig())
	cc := swtest.DefaultConf()
	cc.PSK, cc.Start = "not-the-providers-key", true
	l.StartCharon(cc)
	st := waitStatus(t, emu, "fails", func(s Status) bool { return s.Phase1 == StateFailed })
	if !strings.HasPrefix(st.Phase1Reason, "AUTHENTICATION_FAILED") {
		t.Fatalf("reason %q", st.Phase1Reason)
	}
}

func TestStrongSwan_ProposalMismatch_EmuReportsBothProposals(t *testing.T) {
	l := swtest.New(t)
	emu := startEmu(t, l, emuConfig())
	cc := swtest.DefaultConf()
	cc.IKEProposal, cc.Start = "aes256-sha256-modp2048", true
	l.StartCharon(cc)
	st := waitStatus(t, emu, "fails", func(s Status) bool { return s.Phase1 == StateFailed })
	for _, want := range []string{"NO_PROPOSAL_CHOSEN", "peer offered IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048", "we accept IKE:AES_CBC_128/PRF_HMAC_SHA1/HMAC_SHA1_96/MODP_1024"} {
		if !strings.Contains(st.Phase1Reason, want) {
			t.Errorf("reason %q lacks %q", st.Phase1Reason, want)
		}
	}
}

func TestStrongSwan_IdentityMismatch_EmuReportsAuthenticationFailed(t *testing.T) {
	l := swtest.New(t)
	emu := startEmu(t, l, emuConfig())
	cc := swtest.DefaultConf()
	cc.LocalID, cc.Start = "onprem.example.com", true
	l.StartCharon(cc)
	st := waitStatus(t, emu, "fails", func(s Status) bool { return s.Phase1 == StateFailed })
	if want := `identity mismatch: peer is "onprem.example.com", expected remote id "192.0.2.1"`; !strings.Contains(st.Phase1Reason, want) {
		t.Fatalf("reason %q lacks %q", st.Phase1Reason, want)
	}
}

func TestStrongSwan_KillCharon_DPDTakesTunnelDown(t *testing.T) {
	l := swtest.New(t)
	cfg := emuConfig()
	cfg.DPD = 300 * time.Millisecond
	emu := startEmu(t, l, cfg)
	cc := swtest.DefaultConf()
	cc.Start = true
	l.StartCharon(cc)
	waitStatus(t, emu, "established", established)
	l.KillCharon()
	st := waitStatus(t, emu, "DPD", func(s Status) bool { return s.Phase1 != StateEstablished })
	if !strings.Contains(st.Phase1Reason, "DPD: peer unreachable") {
		t.Fatalf("reason %q", st.Phase1Reason)
	}
	if up, _ := emu.rec.snapshot(); len(up) != 0 {
		t.Fatalf("%d CHILD SAs left after DPD", len(up))
	}
}

func TestStrongSwan_Responder_WrongPSK_EmuReportsAuthenticationFailed(t *testing.T) {
	l := swtest.New(t)
	cc := swtest.DefaultConf()
	cc.PSK = "not-the-providers-key"
	l.StartCharon(cc)
	cfg := emuConfig()
	cfg.Initiate = true
	emu := startEmu(t, l, cfg)
	st := waitStatus(t, emu, "fails", func(s Status) bool { return s.Phase1 == StateFailed })
	if !strings.HasPrefix(st.Phase1Reason, "AUTHENTICATION_FAILED") {
		t.Fatalf("reason %q", st.Phase1Reason)
	}
}

func TestStrongSwan_Responder_NarrowerSubnets_TSUnacceptable(t *testing.T) {
	l := swtest.New(t)
	l.StartCharon(swtest.DefaultConf())
	cfg := emuConfig()
	cfg.Initiate = true
	cfg.RemoteTS = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")} // charon protects 10.1.0.0/24
	emu := startEmu(t, l, cfg)
	st := waitStatus(t, emu, "phase 2 fails", func(s Status) bool { return s.Phase2 == StateFailed })
	if st.Phase1 != StateEstablished || !strings.HasPrefix(st.Phase2Reason, "TS_UNACCEPTABLE") {
		t.Fatalf("status %+v", st)
	}
}

// RFC 7296 §2.8.1 against charon: emu and charon rekey the CHILD SA at
// once. emu's loop waits until charon's rekey request is in its queue,
// then sends its own before reading it, so each end answers the other's
// request while its own is outstanding. Both must keep the same one of
// the two new CHILD SAs, and nothing else: charon decides by the nonces
// as emu does (child_rekey.c, lost_collision). The charon lines about the
// collision are logged.
func TestStrongSwan_SimultaneousChildRekey_BothKeepTheSameSA(t *testing.T) {
	for try := range 3 { // either end's SA may survive: run a few
		t.Run(fmt.Sprint(try), func(t *testing.T) {
			l := swtest.New(t)
			emu := startEmu(t, l, emuConfig())
			cc := swtest.DefaultConf()
			cc.Start = true
			l.StartCharon(cc)
			orig := waitStatus(t, emu, "established", established)
			waited := make(chan bool, 1)
			emu.e.do(func() {
				for deadline := time.Now().Add(10 * time.Second); len(emu.e.events) == 0 && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				waited <- len(emu.e.events) > 0
				emu.e.conns[0].sa.rekeyChild()
			})
			if err := l.RekeyChild(); err != nil {
				t.Fatal(err)
			}
			if !<-waited {
				t.Fatal("charon's rekey request never reached emu")
			}
			var v childView
			var sas string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				v, sas = lookChild(emu), l.SAs()
				if v.in != 0 && v.in != orig.InSPI && v.retired == 0 && !v.busy && v.up == 1 &&
					strings.Count(sas, "INSTALLED") == 1 && strings.Contains(sas, fmt.Sprintf("in  %08x", v.out)) && strings.Contains(sas, fmt.Sprintf("out %08x", v.in)) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("emu keeps %+v; charon:\n%s", v, sas)
				}
			}
			// charon is multi-threaded: it may also take emu's answer before
			// emu's request, finish its rekey and refuse emu's with
			// TEMPORARY_FAILURE (RFC 7296 §2.25.1), the other order.
			for _, line := range strings.Split(l.Log(), "\n") {
				if strings.Contains(line, "rekey collision") || strings.Contains(line, "unable to rekey") || strings.Contains(line, "TEMPORARY_FAILURE") {
					t.Log("charon:", line)
				}
			}
			if newest, downs := emu.rec.sending(); newest != v.in || downs != 0 {
				t.Errorf("emu's dataplane sends on 0x%08x and was told %d times to delete the pair it sent on; want 0x%08x, never", newest, downs, v.in)
			}
			if st := emu.e.Status()[0]; !established(st) || st.ChildRekeys != 1 {
				t.Errorf("emu: %+v, want established after one rekey", st)
			}
		})
	}
}

// Package swtest runs Debian's strongSwan (charon with kernel-libipsec)
// against emu in two network namespaces the test creates, for the IKE and
// ESP-in-UDP interop tests. Everything it starts or creates ends with the
// test, also when it fails.
//
// charon's pid file is fixed (/var/run/charon.pid), so each charon runs in
// a private mount namespace with a tmpfs on /run; it reads its own
// strongswan.conf through STRONGSWAN_CONF and serves VICI on a socket in
// the test's directory (SPEC §10).
package swtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/wiring"
)

// The interop lab's addresses: charon is the on-prem gateway, emu the VPN
// gateway, a veth between them stands for the private line.
var (
	CharonAddr = netip.MustParseAddr("192.0.2.1")
	EmuAddr    = netip.MustParseAddr("192.0.2.2")
	OnpremNet  = netip.MustParsePrefix("10.1.0.0/24")
	OnpremGW   = netip.MustParseAddr("10.1.0.1") // on charon's lo: libipsec routes from it
	VPCNet     = netip.MustParsePrefix("172.16.0.0/16")
)

// CharonBin is Debian's charon.
const CharonBin = "/usr/lib/ipsec/charon"

// Lab is the two namespaces and the charon of one test.
type Lab struct {
	t         testing.TB
	Dir       string
	NSCharon  string
	NSEmu     string
	charon    *exec.Cmd
	charonErr chan error
}

// Require skips without root or strongSwan, or fails under make test
// (testenv). (labtest.RequireRoot would import the ike package back
// through labtest → ipsec.)
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "the strongSwan interop tests create network namespaces")
	for _, bin := range []string{CharonBin, "swanctl"} {
		_, err := exec.LookPath(bin)
		testenv.Require(t, err, "strongSwan's "+bin+" (scripts/setup.sh installs it)")
	}
}

// New creates the namespaces (named emui-<random>-onprem/-vpngw) and the
// veth between them.
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	l := &Lab{t: t, Dir: t.TempDir(), NSCharon: "emui-" + id + "-onprem", NSEmu: "emui-" + id + "-vpngw"}
	w := wiring.New()
	t.Cleanup(w.Close)
	for _, ns := range []string{l.NSCharon, l.NSEmu} {
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
	if err := w.AddVeth(l.NSCharon, "eth1", l.NSEmu, "eth1", 1500); err != nil {
		t.Fatal(err)
	}
	for ns, a := range map[string]netip.Addr{l.NSCharon: CharonAddr, l.NSEmu: EmuAddr} {
		if err := w.AddAddress(ns, "eth1", wiring.IPNet(netip.PrefixFrom(a, 24))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AddAddress(l.NSCharon, "lo", wiring.IPNet(netip.PrefixFrom(OnpremGW, 24))); err != nil {
		t.Fatal(err)
	}
	return l
}

// Conf is charon's side of the connection, in swanctl.conf terms: the
// provider's strongSwan example in its IKEv2 variant.
type Conf struct {
	IKEProposal, ESPProposal string
	PSK                      string
	LocalID, RemoteID        string
	Start                    bool   // charon initiates
	DPD                      string // dpd_delay
	RekeyTime, LifeTime      string // CHILD SA
	LocalTS, RemoteTS        string
}

// DefaultConf is aes128-sha1-modp1024 both phases, PSK, charon responding.
func DefaultConf() Conf {
	return Conf{IKEProposal: "aes128-sha1-modp1024", ESPProposal: "aes128-sha1-modp1024", PSK: "s3cret-psk-16chr",
		LocalID: CharonAddr.String(), RemoteID: EmuAddr.String(), DPD: "0s",
		RekeyTime: "1h", LifeTime: "2h", LocalTS: OnpremNet.String(), RemoteTS: VPCNet.String()}
}

func (l *Lab) vici() string { return "unix://" + filepath.Join(l.Dir, "charon.vici") }

// StartCharon runs charon in the on-prem namespace and loads c.
func (l *Lab) StartCharon(c Conf) {
	t := l.t
	t.Helper()
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
`, l.vici(), filepath.Join(l.Dir, "charon.log"))
	l.write("strongswan.conf", conf)
	start := "none"
	if c.Start {
		start = "start"
	}
	l.write("swanctl.conf", fmt.Sprintf(`connections {
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
`, CharonAddr, EmuAddr, c.IKEProposal, c.DPD, c.LocalID, c.RemoteID, c.LocalTS, c.RemoteTS, c.ESPProposal, start,
		c.RekeyTime, c.LifeTime, c.LocalID, c.RemoteID, c.PSK))

	// A private mount namespace whose mounts do not propagate back, and a
	// tmpfs /run in it for charon's fixed pid file.
	cmd := exec.Command("/bin/sh", "-c", "mount --make-rprivate / && mount -t tmpfs emu-charon-run /run && exec "+CharonBin)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(l.Dir, "strongswan.conf"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	out, err := os.Create(filepath.Join(l.Dir, "charon.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// The child inherits the network namespace of the thread that forks it.
	if err := netnsx.Do(l.NSCharon, cmd.Start); err != nil {
		t.Fatalf("start charon: %v", err)
	}
	l.charon = cmd
	l.charonErr = make(chan error, 1)
	go func() { l.charonErr <- cmd.Wait(); out.Close() }()
	t.Cleanup(func() {
		l.KillCharon()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(l.Dir, "charon.log"))
			t.Logf("charon log:\n%s", log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := exec.Command("swanctl", "--load-all", "--noprompt", "--file", filepath.Join(l.Dir, "swanctl.conf"), "--uri", l.vici()).Run()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(l.Dir, "charon.out"))
			t.Fatalf("swanctl --load-all: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond) // charon serves VICI once its plugins are loaded
	}
}

// KillCharon ends the charon this lab started with SIGKILL, by its pid.
func (l *Lab) KillCharon() {
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

// SAs is what `swanctl --list-sas` says: charon's side of the story.
func (l *Lab) SAs() string {
	out, _ := exec.Command("swanctl", "--list-sas", "--uri", l.vici()).CombinedOutput()
	return string(out)
}

// RekeyChild asks charon to rekey its CHILD SA now (`swanctl --rekey`).
func (l *Lab) RekeyChild() error {
	out, err := exec.Command("swanctl", "--rekey", "--child", "net", "--uri", l.vici()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("swanctl --rekey --child net: %v: %s", err, out)
	}
	return nil
}

// Log is charon's log so far.
func (l *Lab) Log() string {
	b, _ := os.ReadFile(filepath.Join(l.Dir, "charon.log"))
	return string(b)
}

func (l *Lab) write(name, text string) {
	if err := os.WriteFile(filepath.Join(l.Dir, name), []byte(text), 0o600); err != nil {
		l.t.Fatal(err)
	}
}

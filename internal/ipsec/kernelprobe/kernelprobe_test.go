package kernelprobe

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/testenv"
)

func TestMain(m *testing.M) {
	// Show the kernel's own words in Reason (netlink extended ack).
	nl.EnableErrorMessageReporting = true
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "creates a network namespace")
}

// What each capability needs, in the order the kernel trips over them: the
// first option the config leaves unset is the one Reason must name.
var (
	espNeeds   = []string{"CONFIG_XFRM_USER", "CONFIG_INET_ESP", "CONFIG_CRYPTO_GCM", "CONFIG_CRYPTO_SEQIV"}
	xfrmiNeeds = []string{"CONFIG_XFRM_INTERFACE"}
)

func TestProbe_AgreesWithKernelConfig(t *testing.T) {
	requireRoot(t)
	r := Probe()
	t.Logf("Probe() = %+v", r)
	if r.OK() != (r.Reason == "") {
		t.Errorf("Reason %q does not match OK()=%v", r.Reason, r.OK())
	}

	cfg, src := kernelConfig(t)
	if cfg == nil {
		t.Logf("no kernel config (/proc/config.gz, /boot/config-*): checking Reason against the kernel's error only")
		for _, c := range []struct {
			name string
			ok   bool
		}{{"ESP", r.ESP}, {"XFRMInterface", r.XFRMInterface}} {
			if !c.ok && !regexp.MustCompile(`CONFIG_[A-Z0-9_]+.*failed: .+`).MatchString(r.Reason) {
				t.Errorf("%s=false but Reason %q names no kernel option and no kernel error", c.name, r.Reason)
			}
		}
		return
	}
	t.Logf("kernel config from %s", src)
	checkAgainstConfig(t, "ESP", r.ESP, r.Reason, cfg, espNeeds)
	checkAgainstConfig(t, "XFRMInterface", r.XFRMInterface, r.Reason, cfg, xfrmiNeeds)
}

// checkAgainstConfig predicts a capability from the config: all needed
// options built in ⇒ true; one not set ⇒ false, and Reason names it. With
// modules (=m) only the running system knows, so the result is just logged.
func checkAgainstConfig(t *testing.T, name string, got bool, reason string, cfg map[string]string, needs []string) {
	t.Helper()
	for _, opt := range needs {
		switch cfg[opt] {
		case "y":
			continue
		case "m":
			t.Logf("%s=%v: %s=m, the result depends on the module being loadable", name, got, opt)
			return
		default:
			if got {
				t.Errorf("%s=true but the kernel config has %s not set", name, opt)
			}
			if !strings.Contains(reason, opt) {
				t.Errorf("%s=false: Reason %q should name %s (not set in the kernel config)", name, reason, opt)
			}
			return
		}
	}
	if !got {
		t.Errorf("%s=false but the kernel config builds in %s: %s", name, strings.Join(needs, ", "), reason)
	}
}

// kernelConfig reads the running kernel's config, or returns nil if neither
// place has it.
func kernelConfig(t *testing.T) (map[string]string, string) {
	t.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	boot := "/boot/config-" + unix.ByteSliceToString(uts.Release[:])
	for _, path := range []string{"/proc/config.gz", boot} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		defer f.Close()
		var r io.Reader = f
		if strings.HasSuffix(path, ".gz") {
			zr, err := gzip.NewReader(f)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			r = zr
		}
		cfg := map[string]string{}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
				cfg[k] = v
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return cfg, path
	}
	return nil, ""
}

func TestProbe_IsQuick(t *testing.T) {
	requireRoot(t)
	// Best of three: the bound is on the probe, not on a busy CI machine.
	best := time.Hour
	for range 3 {
		start := time.Now()
		Probe()
		best = min(best, time.Since(start))
	}
	t.Logf("Probe() took %v", best)
	if best > 100*time.Millisecond {
		t.Errorf("Probe() took %v, want < 100ms", best)
	}
}

func TestProbe_LeavesNothingBehind(t *testing.T) {
	requireRoot(t)
	before := snapshot(t)
	Probe()
	after := snapshot(t)
	for _, k := range []string{"named namespaces", "thread namespaces", "namespace fds", "host links", "host xfrm states"} {
		if !slices.Equal(before[k], after[k]) {
			t.Errorf("%s changed across Probe():\nbefore %q\nafter  %q", k, before[k], after[k])
		}
	}
}

// snapshot lists what Probe could leak: a path under /run/netns, a thread or
// file descriptor still in another namespace, a link or SA in the host's.
func snapshot(t *testing.T) map[string][]string {
	t.Helper()
	s := map[string][]string{}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			s["named namespaces"] = append(s["named namespaces"], e.Name())
		}
	}
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, p := range tasks {
		if ns, err := os.Readlink(p); err == nil {
			s["thread namespaces"] = append(s["thread namespaces"], ns)
		}
	}
	s["thread namespaces"] = slices.Compact(slices.Sorted(slices.Values(s["thread namespaces"])))
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, p := range fds {
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, "net:[") {
			s["namespace fds"] = append(s["namespace fds"], target)
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		s["host links"] = append(s["host links"], l.Attrs().Name)
	}
	states, err := netlink.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		// Not st.String(): it dereferences fields the kernel may not send.
		s["host xfrm states"] = append(s["host xfrm states"], fmt.Sprintf("%v>%v spi=%#x", st.Src, st.Dst, st.Spi))
	}
	return s
}

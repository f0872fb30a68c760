// Package kernelprobe tells whether the running kernel can carry emu's kernel
// IPsec backend (SPEC §5): ESP in tunnel mode with AES-GCM, and XFRM
// interfaces. It asks the kernel by trying, in a throwaway network namespace,
// because the kernel config may be absent and a module may be missing even
// when the config says =m.
package kernelprobe

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Result is what the kernel could do.
type Result struct {
	// ESP: an ESP tunnel-mode state with rfc4106(gcm(aes)) was accepted.
	ESP bool
	// XFRMInterface: an XFRM interface with an if_id was created.
	XFRMInterface bool
	// Reason says, for each missing capability, which kernel option is
	// missing and what the kernel answered; empty when both work.
	Reason string
}

// OK reports whether the kernel backend can run here.
func (r Result) OK() bool { return r.ESP && r.XFRMInterface }

func (r Result) String() string {
	if r.OK() {
		return "kernel ESP and XFRM interfaces available"
	}
	return r.Reason
}

// Throwaway values: nothing is ever sent, the namespace has no link.
var (
	probeSrc  = net.IPv4(192, 0, 2, 1)
	probeDst  = net.IPv4(192, 0, 2, 2)
	probeIfID = uint32(0x70726f) // "pro"
)

// Probe installs an ESP state and creates an XFRM interface in a fresh,
// unnamed network namespace. The namespace lives only as long as Probe holds
// it, so nothing is left behind, even if the process is killed meanwhile.
//
// Reason carries the errno text, and the kernel's own message (e.g.
// "Requested AEAD algorithm not found") when the program has set
// nl.EnableErrorMessageReporting.
func Probe() Result {
	scratch, err := newScratchNamespace()
	if err != nil {
		return Result{Reason: "cannot probe kernel IPsec support: " + err.Error()}
	}
	defer scratch.Close()

	var r Result
	var missing []string
	// Package-level netlink calls open a socket per request in the calling
	// thread's namespace, and that socket honours the extended-ack setting.
	err = netnsx.DoHandle(scratch, func() error {
		if err := probeESP(); err != nil {
			missing = append(missing, err.Error())
		} else {
			r.ESP = true
		}
		if err := probeXFRMInterface(); err != nil {
			missing = append(missing, err.Error())
		} else {
			r.XFRMInterface = true
		}
		return nil
	})
	if err != nil {
		return Result{Reason: "cannot probe kernel IPsec support: " + err.Error()}
	}
	r.Reason = strings.Join(missing, "; ")
	return r
}

// newScratchNamespace returns a handle to a new network namespace that no
// path names: closing the handle is what frees it.
func newScratchNamespace() (netns.NsHandle, error) {
	runtime.LockOSThread()
	origin, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), fmt.Errorf("read current network namespace: %w", err)
	}
	defer origin.Close()
	scratch, err := netns.New() // unshare(CLONE_NEWNET) on this thread
	if err != nil {
		runtime.UnlockOSThread()
		return netns.None(), fmt.Errorf("create scratch network namespace (needs CAP_SYS_ADMIN): %w", err)
	}
	if err := netns.Set(origin); err != nil {
		scratch.Close()
		// The thread is stuck in the scratch namespace: leave it locked so
		// the runtime discards it when this goroutine ends.
		return netns.None(), fmt.Errorf("return to original network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return scratch, nil
}

var (
	// SPEC §5 default: AES-GCM-128, 128-bit key + 32-bit salt, ICV 16 bytes.
	gcmAES = netlink.XfrmState{
		Aead: &netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: make([]byte, 20), ICVLen: 128},
	}
	// The provider's default pair, which kernels commonly build in.
	cbcAESSHA1 = netlink.XfrmState{
		Crypt: &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: make([]byte, 16)},
		Auth:  &netlink.XfrmStateAlgo{Name: "hmac(sha1)", Key: make([]byte, 20), TruncateLen: 96},
	}
)

// probeESP says why ESP tunnel mode with AES-GCM is unusable, or nil.
func probeESP() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_XFRM)
	if err != nil {
		return fmt.Errorf("kernel lacks the XFRM netlink interface (CONFIG_XFRM_USER): opening a NETLINK_XFRM socket failed: %w", err)
	}
	unix.Close(fd)

	err = addESPState(gcmAES)
	if err == nil {
		return nil
	}
	reason := espReason(err)
	if errors.Is(err, unix.ENOSYS) {
		// The kernel checks the algorithms before it looks for an ESP
		// handler, so a missing GCM hides a missing ESP: ask again with
		// algorithms that are likely there to learn about ESP itself.
		if err2 := addESPState(cbcAESSHA1); errors.Is(err2, unix.EPROTONOSUPPORT) {
			reason = espReason(err2) + "; " + reason
		}
	}
	return errors.New(reason)
}

// addESPState adds a tunnel-mode ESP state with the algorithms of algs.
func addESPState(algs netlink.XfrmState) error {
	st := algs
	st.Src, st.Dst = probeSrc, probeDst
	st.Proto = netlink.XFRM_PROTO_ESP
	st.Mode = netlink.XFRM_MODE_TUNNEL
	st.Spi = 0x100
	st.Reqid = 1
	st.Ifid = int(probeIfID)
	return netlink.XfrmStateAdd(&st)
}

// probeXFRMInterface says why XFRM interfaces are unusable, or nil.
func probeXFRMInterface() error {
	// lo as the underlying link: older kernels require one.
	err := netlink.LinkAdd(&netlink.Xfrmi{
		LinkAttrs: netlink.LinkAttrs{Name: "xfrmprobe", ParentIndex: 1},
		Ifid:      probeIfID,
	})
	if err == nil {
		return nil
	}
	what := "kernel XFRM interfaces unavailable"
	if errors.Is(err, unix.EOPNOTSUPP) {
		// rtnetlink knows no link kind "xfrm".
		what = "kernel lacks XFRM interfaces (CONFIG_XFRM_INTERFACE)"
	}
	return fmt.Errorf("%s: creating an XFRM interface failed: %w", what, err)
}

// espReason names the kernel option behind the error an ESP state add got:
// the errno tells which step of the kernel's state setup failed.
func espReason(err error) string {
	var what string
	switch {
	case errors.Is(err, unix.EPROTONOSUPPORT):
		// xfrm_get_type found no handler for IPPROTO_ESP.
		what = "kernel lacks ESP (CONFIG_INET_ESP)"
	case errors.Is(err, unix.ENOSYS):
		// The algorithm lookup found no rfc4106(gcm(aes)).
		what = "kernel lacks AES-GCM (CONFIG_CRYPTO_GCM, with CONFIG_CRYPTO_GHASH and CONFIG_CRYPTO_CTR)"
	case errors.Is(err, unix.ENOENT):
		// esp4 could not build seqiv(rfc4106(gcm(aes))): the IV generator
		// or the default RNG it takes its salt from is missing.
		what = "kernel ESP cannot build its IV generator (CONFIG_CRYPTO_SEQIV, and a default RNG: CONFIG_CRYPTO_DRBG loaded before esp4)"
	default:
		what = "kernel ESP tunnel mode with rfc4106(gcm(aes)) unavailable"
	}
	return fmt.Sprintf("%s: adding an ESP tunnel-mode state failed: %v", what, err)
}

package kernel

import (
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/ipsec/kernelprobe"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// On the development machines (XFRM without ESP) Up must say which kernel
// option is missing and undo the policies it had already added.
func TestUp_KernelWithoutESP_NamesConfigAndLeavesNothing(t *testing.T) {
	requireRoot(t)
	if r := kernelprobe.Probe(); r.ESP {
		t.Skip("this kernel has ESP: the VM tests cover Up")
	}
	w := wiring.New()
	defer w.Close()
	d := open(t, namespace(t, w, "a"))
	for _, cipher := range topology.Ciphers {
		t.Run(cipher, func(t *testing.T) {
			c, _ := connPair(t, cipher)
			err := d.Up(c, testIfID)
			if err == nil {
				t.Fatal("Up succeeded on a kernel without ESP")
			}
			t.Logf("Up: %v", err)
			for _, want := range []string{"CONFIG_INET_ESP", c.Name, "ESP state out"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %s", want)
				}
			}
			if left := leftovers(t, d); len(left) > 0 {
				t.Errorf("a failed Up left: %v", left)
			}
			if err := d.Down(c, testIfID); err != nil {
				t.Errorf("Down after a failed Up: %v", err)
			}
		})
	}
}

func TestUp_InvalidConnection_NamesIt(t *testing.T) {
	c, _ := connPair(t, "aes-gcm-128")
	for _, tc := range []struct {
		name string
		ifID uint32
		edit func()
		want string
	}{
		{"if_id 0", 0, func() {}, "if_id 0"},
		{"no interface", testIfID, func() { c.Interface = "" }, "interface name"},
		{"reserved SPI", testIfID, func() { c.Out.SPI = 7 }, "reserved"},
		{"unknown cipher", testIfID, func() { c.Cipher = "des" }, "unknown ESP algorithm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := c
			defer func() { c = saved }()
			tc.edit()
			// A zero Dataplane: validation must fail before any netlink call.
			err := (&Dataplane{}).Up(c, tc.ifID)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), c.Name) {
				t.Errorf("Up = %v, want an error naming %q and the connection", err, tc.want)
			}
		})
	}
}

package userspace

import (
	"fmt"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// tunOffset is the headroom every buffer handed to tun.Device.Write keeps
// before its packet: wireguard's TUN writes the virtio-net header there.
const tunOffset = 16

// openTUN creates a layer-3 TUN interface in the caller's namespace with
// TCP (and, on kernels ≥ 6.2, UDP) segmentation offloads, and hands it to
// wireguard-go's tun package, which owns the offload code: the virtio-net
// header, cutting the kernel's TSO super-packets into segments with their
// checksums on Read, and GRO-coalescing TCP and UDP flows on Write. One
// read then carries what would otherwise take some 45 reads of MTU-sized
// packets, and one write delivers a whole batch of decrypted segments.
//
// The unmonitored variant starts no netlink listener: the agent configures
// the link itself and needs no events.
func openTUN(name string) (tun.Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w (is the tun module available?)", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUN %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN %s: %w", name, err)
	}
	dev, _, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		// Not closed here: the *os.File it already wraps fd in closes it
		// when collected, and a second close could hit a reused number.
		return nil, fmt.Errorf("offloads of TUN %s: %w", name, err)
	}
	return dev, nil
}

// Package kernel is the kernel dataplane of a route-based IPsec connection
// (SPEC §5): ESP tunnel-mode XFRM states, any/any policies and an XFRM
// interface, all bound together by one if_id, so that whatever routing sends
// into the interface leaves encrypted and only what arrives under the
// connection's SAs comes out of it.
package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/kernelprobe"
)

// Dataplane programs connections into one network namespace.
//
// It keeps an XFRM socket of its own next to the netlink handle because the
// handle's state API can only ask for a replay window above 32 together with
// extended sequence numbers, and ESN changes what the ICV covers: the
// userspace engine, and a provider's gateway configured without ESN, would
// reject every packet.
type Dataplane struct {
	nl   *netlink.Handle
	xfrm *nl.SocketHandle
}

// Open returns a Dataplane for the namespace ns; ns may be closed afterwards.
func Open(ns netns.NsHandle) (*Dataplane, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE, unix.NETLINK_XFRM)
	if err != nil {
		return nil, fmt.Errorf("netlink in namespace: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_XFRM)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("XFRM netlink socket in namespace: %w", err)
	}
	return &Dataplane{nl: h, xfrm: &nl.SocketHandle{Socket: s}}, nil
}

// Close releases the sockets; what was programmed stays.
func (d *Dataplane) Close() {
	d.xfrm.Close()
	d.nl.Close()
}

// reqid ties each policy template to the states of its connection.
func reqid(ifID uint32) int { return int(ifID) }

// objects are the kernel objects of one connection, described once so that
// Up creates and Down removes exactly the same set.
type objects struct {
	link     *netlink.Xfrmi
	addr     *netlink.Addr // nil when the connection has no tunnel address
	states   []sa
	policies []netlink.XfrmPolicy
}

// sa is one XFRM state with the name errors use for it.
type sa struct {
	dir      string
	state    netlink.XfrmState
	alg      esp.XFRM
	enc, aut []byte
}

func describe(c *ipsec.Conn, ifID uint32) (objects, error) {
	switch {
	case ifID == 0:
		return objects{}, errors.New("if_id 0 is not allowed: it means \"no interface\" to XFRM")
	case c.Interface == "" || len(c.Interface) >= unix.IFNAMSIZ:
		return objects{}, fmt.Errorf("interface name %q must be 1 to %d bytes", c.Interface, unix.IFNAMSIZ-1)
	case !c.Local.IsValid() || !c.Remote.IsValid() || c.Local.Is4() != c.Remote.Is4():
		return objects{}, fmt.Errorf("endpoints %v and %v must be two addresses of one family", c.Local, c.Remote)
	case c.IKE == nil && (c.Out.SPI < 0x100 || c.In.SPI < 0x100):
		return objects{}, fmt.Errorf("SPIs %#x/%#x: 1-255 are reserved and 0 means none (RFC 4303 §2.1)", c.Out.SPI, c.In.SPI)
	}
	local, remote := net.IP(c.Local.AsSlice()), net.IP(c.Remote.AsSlice())
	o := objects{link: &netlink.Xfrmi{
		LinkAttrs: netlink.LinkAttrs{Name: c.Interface, MTU: c.MTU},
		Ifid:      ifID,
	}}
	if c.Address.IsValid() {
		o.addr = &netlink.Addr{IPNet: prefixNet(c.Address)}
	}
	// An IKE-keyed connection gets its states from the node's agent, one
	// pair per negotiated CHILD SA (IKE.ChildUp).
	if c.IKE == nil {
		alg, err := c.Algorithm()
		if err != nil {
			return objects{}, err
		}
		o.states = statePair(local, remote, ifID, alg.XFRM(), c.Out, c.In, nil)
	}
	// Inner IPv4 and IPv6 alike (a dual-stack lab routes both into the
	// tunnel): one set of any/any policies per inner family, all with the
	// outer family's template. The states take either inner family
	// (XFRM_STATE_AF_UNSPEC in addState).
	any4 := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	any6 := &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	for _, anyAddr := range []*net.IPNet{any4, any6} {
		for _, p := range []struct {
			dir      netlink.Dir
			src, dst net.IP
		}{
			{netlink.XFRM_DIR_OUT, local, remote},
			{netlink.XFRM_DIR_IN, remote, local},
			// Decrypted packets a gateway routes on to its LAN.
			{netlink.XFRM_DIR_FWD, remote, local},
		} {
			o.policies = append(o.policies, netlink.XfrmPolicy{Src: anyAddr, Dst: anyAddr, Dir: p.dir, Ifid: int(ifID),
				Tmpls: []netlink.XfrmPolicyTmpl{{Src: p.src, Dst: p.dst, Proto: netlink.XFRM_PROTO_ESP,
					Mode: netlink.XFRM_MODE_TUNNEL, Reqid: reqid(ifID)}}})
		}
	}
	return o, nil
}

// statePair describes the outbound (local → remote) and inbound states of
// one pair of SAs; encap, when set, is the ESP-in-UDP ports (RFC 3948) as
// seen from this end.
func statePair(local, remote net.IP, ifID uint32, alg esp.XFRM, out, in ipsec.SA, encap *ports) []sa {
	var states []sa
	for _, d := range []struct {
		dir      string
		src, dst net.IP
		keys     ipsec.SA
	}{{"out", local, remote, out}, {"in", remote, local, in}} {
		s := sa{dir: d.dir, alg: alg, enc: d.keys.EncKey, aut: d.keys.AuthKey,
			state: netlink.XfrmState{Src: d.src, Dst: d.dst, Proto: netlink.XFRM_PROTO_ESP,
				Mode: netlink.XFRM_MODE_TUNNEL, Spi: int(d.keys.SPI), Reqid: reqid(ifID), Ifid: int(ifID)}}
		if encap != nil {
			s.state.Encap = &netlink.XfrmStateEncap{Type: netlink.XFRM_ENCAP_ESPINUDP, SrcPort: int(encap.local), DstPort: int(encap.remote)}
			if d.dir == "in" {
				s.state.Encap.SrcPort, s.state.Encap.DstPort = int(encap.remote), int(encap.local)
			}
		}
		states = append(states, s)
	}
	return states
}

// ports are the UDP ports of ESP in UDP at this end and at the peer.
type ports struct{ local, remote uint16 }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Up programs connection c with XFRM interface id ifID. Policies go first:
// they match only traffic carrying their if_id, so they are inert until the
// interface exists; the interface comes last, so nothing can be routed into
// a half-built tunnel. On error everything Up created is removed again.
func (d *Dataplane) Up(c ipsec.Conn, ifID uint32) (err error) {
	o, err := describe(&c, ifID)
	if err != nil {
		return fmt.Errorf("ipsec connection %s: %w", c.Name, err)
	}
	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		err = fmt.Errorf("ipsec connection %s: %w", c.Name, err)
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				err = errors.Join(err, fmt.Errorf("ipsec connection %s: roll back: %w", c.Name, uerr))
			}
		}
	}()
	for _, p := range o.policies {
		if err := d.nl.XfrmPolicyAdd(&p); err != nil {
			return fmt.Errorf("%s: %w", policyName(&p), err)
		}
		undo = append(undo, func() error { return d.nl.XfrmPolicyDel(&p) })
	}
	for _, s := range o.states {
		if err := d.addState(s); err != nil {
			return fmt.Errorf("%s: %w", stateName(s), withKernelReason(err))
		}
		undo = append(undo, func() error { return d.nl.XfrmStateDel(&s.state) })
	}
	return d.addLink(o, &undo)
}

func (d *Dataplane) addLink(o objects, undo *[]func() error) error {
	// The underlying link only matters to kernels that insist on one; lo
	// never goes away, unlike the outer interface, which failover swaps.
	lo, err := d.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo for interface %s: %w", o.link.Name, err)
	}
	o.link.ParentIndex = lo.Attrs().Index
	if err := d.nl.LinkAdd(o.link); err != nil {
		return fmt.Errorf("XFRM interface %s (if_id %d): %w", o.link.Name, o.link.Ifid, withKernelReason(err))
	}
	*undo = append(*undo, func() error { return d.nl.LinkDel(o.link) })
	if o.addr != nil {
		if err := d.nl.AddrAdd(o.link, o.addr); err != nil {
			return fmt.Errorf("address %v on %s: %w", o.addr.IPNet, o.link.Name, err)
		}
	}
	if err := d.nl.LinkSetUp(o.link); err != nil {
		return fmt.Errorf("set %s up: %w", o.link.Name, err)
	}
	return nil
}

// addState sends XFRM_MSG_NEWSA itself to give the state an anti-replay
// window of esp.DefaultReplayWindow: the classic replay_window field caps at
// 32, a larger one needs XFRMA_REPLAY_ESN_VAL, which without the ESN flag
// keeps plain 32-bit sequence numbers (as `ip xfrm state ... replay-window
// 64` does).
func (d *Dataplane) addState(s sa) error {
	req := nl.NewNetlinkRequest(nl.XFRM_MSG_NEWSA, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_XFRM: d.xfrm}
	st := &s.state
	// AF_UNSPEC leaves the state's selector family open, so one tunnel-mode
	// state carries inner IPv4 and IPv6 (the kernel otherwise pins it to
	// the outer family); strongSwan sets it on every tunnel-mode SA.
	msg := &nl.XfrmUsersaInfo{Family: uint16(nl.GetIPFamily(st.Dst)), Mode: uint8(st.Mode), Reqid: uint32(st.Reqid), Flags: nl.XFRM_STATE_AF_UNSPEC}
	msg.Id.Daddr.FromIP(st.Dst)
	msg.Id.Spi = nl.Swap32(uint32(st.Spi))
	msg.Id.Proto = uint8(st.Proto)
	msg.Saddr.FromIP(st.Src)
	msg.Lft = unlimited()
	req.AddData(msg)
	if s.alg.AEAD != "" {
		a := nl.XfrmAlgoAEAD{AlgKeyLen: bits(s.enc), AlgICVLen: uint32(s.alg.AEADICVBits), AlgKey: s.enc}
		copy(a.AlgName[:len(a.AlgName)-1], s.alg.AEAD)
		req.AddData(nl.NewRtAttr(nl.XFRMA_ALG_AEAD, a.Serialize()))
	} else {
		cr := nl.XfrmAlgo{AlgKeyLen: bits(s.enc), AlgKey: s.enc}
		copy(cr.AlgName[:len(cr.AlgName)-1], s.alg.Crypt)
		au := nl.XfrmAlgoAuth{AlgKeyLen: bits(s.aut), AlgTruncLen: uint32(s.alg.AuthTruncBits), AlgKey: s.aut}
		copy(au.AlgName[:len(au.AlgName)-1], s.alg.Auth)
		req.AddData(nl.NewRtAttr(nl.XFRMA_ALG_CRYPT, cr.Serialize()))
		req.AddData(nl.NewRtAttr(nl.XFRMA_ALG_AUTH_TRUNC, au.Serialize()))
	}
	replay := nl.XfrmReplayStateEsn{ReplayWindow: esp.DefaultReplayWindow, BmpLen: (esp.DefaultReplayWindow + 31) / 32}
	req.AddData(nl.NewRtAttr(nl.XFRMA_REPLAY_ESN_VAL, replay.Serialize()))
	req.AddData(nl.NewRtAttr(nl.XFRMA_IF_ID, nl.Uint32Attr(uint32(st.Ifid))))
	if e := st.Encap; e != nil {
		// The kernel adds and strips the UDP header itself (RFC 3948 §2.1);
		// the peer's address stays the state's (no NAT original address).
		tmpl := nl.XfrmEncapTmpl{EncapType: uint16(e.Type), EncapSport: nl.Swap16(uint16(e.SrcPort)), EncapDport: nl.Swap16(uint16(e.DstPort))}
		req.AddData(nl.NewRtAttr(nl.XFRMA_ENCAP, tmpl.Serialize()))
	}
	_, err := req.Execute(unix.NETLINK_XFRM, 0)
	return err
}

func bits(key []byte) uint32 { return uint32(len(key) * 8) }

// unlimited is what `ip xfrm state add` sends: no byte, packet or time
// limit. Zero limits would expire the state at once.
func unlimited() nl.XfrmLifetimeCfg {
	return nl.XfrmLifetimeCfg{SoftByteLimit: nl.XFRM_INF, HardByteLimit: nl.XFRM_INF,
		SoftPacketLimit: nl.XFRM_INF, HardPacketLimit: nl.XFRM_INF}
}

// withKernelReason adds, to an error that means a missing kernel feature,
// which kernel option is missing. The errno alone can mislead: the kernel
// checks the algorithms before it looks for ESP, so a kernel without both
// says "algorithm not found". kernelprobe asks the kernel properly.
func withKernelReason(err error) error {
	if !errors.Is(err, unix.EPROTONOSUPPORT) && !errors.Is(err, unix.ENOSYS) &&
		!errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	if r := kernelprobe.Probe(); !r.OK() {
		return fmt.Errorf("%w (%s; the userspace dataplane works without these)", err, r.Reason)
	}
	return err
}

// Down removes what Up(c, ifID) creates: the interface first, so traffic
// stops entering the tunnel, then the states and policies. Objects already
// gone are skipped, so Down can run any number of times.
func (d *Dataplane) Down(c ipsec.Conn, ifID uint32) error {
	o, err := describe(&c, ifID)
	if err != nil {
		return fmt.Errorf("ipsec connection %s: %w", c.Name, err)
	}
	var errs []error
	if err := d.delLink(o.link); err != nil {
		errs = append(errs, err)
	}
	for _, s := range o.states {
		if err := d.nl.XfrmStateDel(&s.state); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("%s: %w", stateName(s), err))
		}
	}
	if c.IKE != nil {
		if err := d.flushStates(ifID); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range o.policies {
		if err := d.nl.XfrmPolicyDel(&p); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("%s: %w", policyName(&p), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ipsec connection %s: remove: %w", c.Name, err)
	}
	return nil
}

// flushStates deletes every ESP state bound to ifID: the SAs an agent
// installed for an IKE-keyed connection, which Up never knew.
func (d *Dataplane) flushStates(ifID uint32) error {
	states, err := d.nl.XfrmStateList(unix.AF_UNSPEC)
	if err != nil {
		return fmt.Errorf("list XFRM states: %w", err)
	}
	var errs []error
	for _, st := range states {
		if st.Ifid != int(ifID) || st.Proto != netlink.XFRM_PROTO_ESP {
			continue
		}
		if err := d.nl.XfrmStateDel(&st); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("ESP state %v→%v spi %#x: %w", st.Src, st.Dst, uint32(st.Spi), err))
		}
	}
	return errors.Join(errs...)
}

// delLink removes the interface only if it is the XFRM interface of this
// if_id: a link of that name made by anything else is not ours to delete.
func (d *Dataplane) delLink(want *netlink.Xfrmi) error {
	l, err := d.nl.LinkByName(want.Name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find interface %s: %w", want.Name, err)
	}
	if x, ok := l.(*netlink.Xfrmi); !ok || x.Ifid != want.Ifid {
		return fmt.Errorf("interface %s is a %s link, not the XFRM interface with if_id %d: left in place", want.Name, l.Type(), want.Ifid)
	}
	if err := d.nl.LinkDel(l); err != nil && !gone(err) {
		return fmt.Errorf("delete interface %s: %w", want.Name, err)
	}
	return nil
}

func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}

func stateName(s sa) string {
	return fmt.Sprintf("ESP state %s %v→%v spi %#x", s.dir, s.state.Src, s.state.Dst, uint32(s.state.Spi))
}

func policyName(p *netlink.XfrmPolicy) string {
	return fmt.Sprintf("policy %s %v→%v if_id %d", p.Dir, p.Src, p.Dst, p.Ifid)
}

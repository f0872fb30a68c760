package kernel

import (
	"errors"
	"fmt"
	"log"
	"net"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/ike"
)

// Tunnel is an IKE-keyed connection Up programmed (policies and XFRM
// interface, no states) with XFRM interface id IfID.
type Tunnel struct {
	Conn ipsec.Conn `json:"conn"`
	IfID uint32     `json:"if_id"`
}

// IKE puts the CHILD SAs that IKE endpoints negotiate into XFRM as states
// of the connections' if_ids: the ike.Handler of the kernel dataplane, as
// userspace.Dataplane's is for the userspace one. Each pair goes in
// inbound state first, so the peer's first packets on it are accepted. On
// a rekey the new outbound state replaces the old one at once, or, on the
// rekey's responder, when the old pair is deleted
// (ChildSA.SendAfterOldDeleted); the old inbound state stays until the
// endpoint says the old pair is deleted (RFC 7296 §2.8).
type IKE struct {
	d       *Dataplane
	log     *log.Logger
	tunnels map[string]Tunnel // by connection name

	// Endpoints of several local addresses call in from their own loops.
	mu    sync.Mutex
	pairs map[uint32]*pair // every pair whose inbound state is in, by inbound SPI
	// sending and pending hold, per connection, the inbound SPI of the pair
	// whose outbound state is in, and of the one whose outbound state waits
	// for the sending pair's ChildDown.
	sending, pending map[string]uint32
}

type pair struct{ out, in sa }

// NewIKE returns the handler for tunnels in d's namespace. States a
// previous agent left on their if_ids are deleted first: that agent's IKE
// SAs are gone, and its outbound state could otherwise outlive the rekeys
// of the new ones.
func NewIKE(d *Dataplane, tunnels []Tunnel, logger *log.Logger) (*IKE, error) {
	k := &IKE{d: d, log: logger, tunnels: map[string]Tunnel{}, pairs: map[uint32]*pair{}, sending: map[string]uint32{}, pending: map[string]uint32{}}
	for _, t := range tunnels {
		if t.Conn.IKE == nil {
			return nil, fmt.Errorf("connection %s is not keyed by IKE", t.Conn.Name)
		}
		if err := d.flushStates(t.IfID); err != nil {
			return nil, fmt.Errorf("connection %s: %w", t.Conn.Name, err)
		}
		k.tunnels[t.Conn.Name] = t
	}
	return k, nil
}

// ListenIKE starts an IKE endpoint whose CHILD SAs go into XFRM. Its NAT-T
// socket is made an ESP-in-UDP socket (UDP_ENCAP_ESPINUDP): the kernel then
// decapsulates the ESP arriving on port 4500 itself and hands the socket
// only IKE messages (non-ESP marker, RFC 3948 §2.2). Without it ESP in
// UDP would reach the socket and be dropped.
func (k *IKE) ListenIKE(opt ike.Options) (*ike.Endpoint, error) {
	opt.Handler, opt.ESP = k, nil
	e, err := ike.Listen(opt)
	if err != nil {
		return nil, err
	}
	if err := setEncap(e.NATTConn()); err != nil {
		e.Close()
		return nil, fmt.Errorf("NAT-T socket on %s: %w", opt.Addr, err)
	}
	return e, nil
}

func setEncap(c *net.UDPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_ENCAP, unix.UDP_ENCAP_ESPINUDP)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set UDP_ENCAP ESPINUDP: %w", serr)
	}
	return nil
}

// ChildUp installs the pair of states of c.
func (k *IKE) ChildUp(c ike.ChildSA) {
	if err := k.install(c); err != nil {
		k.log.Printf("%s: install CHILD SA in 0x%08x out 0x%08x into XFRM: %v", c.Conn, c.InSPI, c.OutSPI, err)
	}
}

func (k *IKE) install(c ike.ChildSA) error {
	t, ok := k.tunnels[c.Conn]
	if !ok {
		return errors.New("no kernel tunnel for this connection")
	}
	var encap *ports
	if c.Encap {
		encap = &ports{local: c.LocalPort, remote: c.RemotePort}
	}
	states := statePair(t.Conn.Local.AsSlice(), t.Conn.Remote.AsSlice(), t.IfID, c.Algorithm.XFRM(),
		ipsec.SA{SPI: c.OutSPI, EncKey: c.Out.EncKey, AuthKey: c.Out.AuthKey},
		ipsec.SA{SPI: c.InSPI, EncKey: c.In.EncKey, AuthKey: c.In.AuthKey}, encap)
	p := &pair{out: states[0], in: states[1]}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.d.addState(p.in); err != nil {
		return fmt.Errorf("%s: %w", stateName(p.in), withKernelReason(err))
	}
	k.pairs[c.InSPI] = p
	how := "ESP"
	if encap != nil {
		how = fmt.Sprintf("ESP in UDP %d→%d", encap.local, encap.remote)
	}
	prev, rekey := k.sending[c.Conn]
	if rekey && c.SendAfterOldDeleted {
		k.pending[c.Conn] = c.InSPI
		how += ", sending on it once the peer deletes the old pair"
	}
	k.log.Printf("tunnel %s: CHILD SA in XFRM: spi out 0x%08x in 0x%08x, %v, %s, if_id %d (kernel ESP)", c.Conn, c.OutSPI, c.InSPI, c.Algorithm, how, t.IfID)
	if k.pending[c.Conn] == c.InSPI {
		return nil
	}
	delete(k.pending, c.Conn) // superseded
	if err := k.d.addState(p.out); err != nil {
		err = fmt.Errorf("%s: %w", stateName(p.out), withKernelReason(err))
		delete(k.pairs, c.InSPI)
		if derr := k.d.nl.XfrmStateDel(&p.in.state); derr != nil {
			err = errors.Join(err, fmt.Errorf("roll back %s: %w", stateName(p.in), derr))
		}
		return err
	}
	k.sending[c.Conn] = c.InSPI
	if rekey {
		// Two outbound states of one reqid would leave the choice to the
		// kernel; the new one is the one to send on.
		k.delete(k.pairs[prev].out)
	}
	return nil
}

// ChildDown deletes the inbound state inSPI of connection conn. Its
// outbound state goes too, replaced by a pending pair's if there is one;
// without one the CHILD SA is down, and so are the connection's other
// pairs (an old one whose Delete exchange the IKE SA did not live to end).
func (k *IKE) ChildDown(conn string, inSPI uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.pairs[inSPI]
	if !ok || k.tunnels[conn].IfID != uint32(p.in.state.Ifid) {
		return
	}
	delete(k.pairs, inSPI)
	k.delete(p.in)
	if k.pending[conn] == inSPI {
		delete(k.pending, conn)
		return
	}
	if k.sending[conn] != inSPI {
		return
	}
	delete(k.sending, conn)
	if next, ok := k.pending[conn]; ok {
		// The new outbound state goes in before the old one goes out, so
		// no packet meets the policy without a state.
		delete(k.pending, conn)
		if err := k.d.addState(k.pairs[next].out); err != nil {
			k.log.Printf("%s: %s: %v", conn, stateName(k.pairs[next].out), withKernelReason(err))
		} else {
			k.sending[conn] = next
		}
		k.delete(p.out)
		return
	}
	k.delete(p.out)
	for spi, other := range k.pairs {
		if other.in.state.Ifid == p.in.state.Ifid {
			delete(k.pairs, spi)
			k.delete(other.in)
		}
	}
}

func (k *IKE) delete(s sa) {
	if err := k.d.nl.XfrmStateDel(&s.state); err != nil && !gone(err) {
		k.log.Printf("delete %s: %v", stateName(s), err)
	}
}

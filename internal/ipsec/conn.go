// Package ipsec is the one model of a route-based IPsec connection that both
// dataplanes program: the kernel's XFRM and emu's userspace ESP engine. Keys
// and SPIs are derived here, once, so the two ends (and the two backends)
// always agree.
package ipsec

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/topology"
)

// Conn is one end of an IPsec connection as deployed on a node.
type Conn struct {
	Name      string       `json:"name"`
	Interface string       `json:"interface"`        // tunnel interface routes point into
	Address   netip.Prefix `json:"address,omitzero"` // tunnel interface address, optional
	Local     netip.Addr   `json:"local"`            // outer source of what this end sends
	Remote    netip.Addr   `json:"remote"`           // outer destination
	Cipher    string       `json:"cipher"`           // esp algorithm name
	MTU       int          `json:"mtu"`              // tunnel interface MTU
	Out       SA           `json:"out"`              // Local → Remote
	In        SA           `json:"in"`               // Remote → Local
	// IKE, when set, keys the connection by IKEv2 instead: Out and In stay
	// empty and the node's agent negotiates the SAs.
	IKE *ike.Config `json:"ike,omitempty"`
}

// SA is one direction's security association parameters.
type SA struct {
	SPI     uint32   `json:"spi"`
	EncKey  HexBytes `json:"enc_key"`
	AuthKey HexBytes `json:"auth_key,omitempty"`
}

// HexBytes keeps keys readable in the 0600 files of the lab directory.
type HexBytes []byte

func (h HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }
func (h *HexBytes) UnmarshalText(b []byte) error {
	v, err := hex.DecodeString(string(b))
	*h = v
	return err
}

// TunnelMTU leaves room for the outer IPv4 header and the largest ESP
// overhead of the supported transforms on a 1500-byte path.
const TunnelMTU = 1400

// Algorithm returns the ESP transform of the connection.
func (c *Conn) Algorithm() (esp.Algorithm, error) { return esp.ParseAlgorithm(c.Cipher) }

// Secrets hands out one master key per connection pair: the given key, or a
// fresh random one the first time either end of a pair asks.
type Secrets struct {
	generated map[[2]netip.Addr][]byte
	psks      map[[2]netip.Addr][]byte // generated IKE pre-shared keys
}

func (s *Secrets) master(t *topology.Tunnel) ([]byte, error) {
	if t.Key != topology.KeyGenerate {
		return hex.DecodeString(t.Key)
	}
	pair := [2]netip.Addr{t.Local, t.Remote}
	if t.Remote.Less(t.Local) {
		pair = [2]netip.Addr{t.Remote, t.Local}
	}
	if s.generated == nil {
		s.generated = map[[2]netip.Addr][]byte{}
	}
	if k, ok := s.generated[pair]; ok {
		return k, nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	s.generated[pair] = k
	return k, nil
}

// Resolve turns a tunnel of the topology into a deployable connection with
// keys and SPIs, or, for a connection keyed by IKE, with the IKE
// configuration its agent negotiates the keys with.
func (s *Secrets) Resolve(t *topology.Tunnel) (Conn, error) {
	if t.IKE != nil {
		cfg, err := s.ikeConfig(t)
		if err != nil {
			return Conn{}, err
		}
		alg, err := cfg.ESP.ESPAlgorithm()
		if err != nil {
			return Conn{}, fmt.Errorf("connection %s: %w", t.Name, err)
		}
		return Conn{Name: t.Name, Interface: t.Interface, Address: t.Address, Local: t.Local, Remote: t.Remote, Cipher: alg.String(), MTU: TunnelMTU, IKE: cfg}, nil
	}
	alg, err := esp.ParseAlgorithm(t.Cipher)
	if err != nil {
		return Conn{}, err
	}
	master, err := s.master(t)
	if err != nil {
		return Conn{}, fmt.Errorf("connection %s: key: %w", t.Name, err)
	}
	c := Conn{Name: t.Name, Interface: t.Interface, Address: t.Address, Local: t.Local, Remote: t.Remote, Cipher: t.Cipher, MTU: TunnelMTU}
	if c.Out, err = deriveSA(master, alg, t.Local, t.Remote); err != nil {
		return Conn{}, err
	}
	if c.In, err = deriveSA(master, alg, t.Remote, t.Local); err != nil {
		return Conn{}, err
	}
	return c, nil
}

// deriveSA derives one direction's keys and SPI from the pair's master key,
// so each end computes the same values independently and each direction has
// its own key (a GCM key must never serve two senders).
func deriveSA(master []byte, alg esp.Algorithm, src, dst netip.Addr) (SA, error) {
	info := "emu esp " + src.String() + ">" + dst.String()
	n := alg.EncKeyLen() + alg.AuthKeyLen() + 4
	okm, err := hkdf.Key(sha256.New, master, nil, info, n)
	if err != nil {
		return SA{}, err
	}
	// SPIs 1-255 are reserved (RFC 4303 §2.1).
	spi := binary.BigEndian.Uint32(okm[n-4:])%(1<<31) + 0x1000
	sa := SA{SPI: spi, EncKey: okm[:alg.EncKeyLen()]}
	if alg.AuthKeyLen() > 0 {
		sa.AuthKey = okm[alg.EncKeyLen() : alg.EncKeyLen()+alg.AuthKeyLen()]
	}
	return sa, nil
}

// Outbound returns the ESP engine configuration of the sending direction.
func (c *Conn) Outbound() (esp.Config, error) { return c.espConfig(c.Out, c.Local, c.Remote) }

// Inbound returns the ESP engine configuration of the receiving direction.
func (c *Conn) Inbound() (esp.Config, error) { return c.espConfig(c.In, c.Remote, c.Local) }

func (c *Conn) espConfig(sa SA, src, dst netip.Addr) (esp.Config, error) {
	alg, err := c.Algorithm()
	if err != nil {
		return esp.Config{}, err
	}
	return esp.Config{SPI: sa.SPI, Src: src, Dst: dst, Algorithm: alg, EncKey: sa.EncKey, AuthKey: sa.AuthKey}, nil
}

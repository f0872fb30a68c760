package ipsec

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"time"

	"github.com/emu-lab/emu/internal/ipsec/ike"
	"github.com/emu-lab/emu/internal/topology"
)

// The provider's algorithm names (SPEC §10) in IANA numbers (RFC 7296
// §3.3.2). "authentication" sets both the integrity algorithm and, for the
// IKE SA, the PRF, as the provider's console and strongSwan's
// "aes-sha1" proposals do.
var (
	encAlgs = map[string]struct{ id, bits uint16 }{
		"aes": {ike.EncrAESCBC, 128}, "aes192": {ike.EncrAESCBC, 192}, "aes256": {ike.EncrAESCBC, 256},
		"des": {ike.EncrDES, 0}, "3des": {ike.Encr3DES, 0},
	}
	authAlgs = map[string]struct{ integ, prf uint16 }{
		"md5": {ike.IntegHMACMD596, ike.PRFHMACMD5}, "sha1": {ike.IntegHMACSHA196, ike.PRFHMACSHA1},
		"sha256": {ike.IntegHMACSHA256128, ike.PRFHMACSHA256}, "sha384": {ike.IntegHMACSHA384192, ike.PRFHMACSHA384},
		"sha512": {ike.IntegHMACSHA512256, ike.PRFHMACSHA512},
	}
	dhGroups = map[string]uint16{"group1": 1, "group2": 2, "group5": 5, "group14": 14, topology.PFSDisabled: 0}
)

// IKEDPDInterval is how long an IKE SA may stay silent before a liveness
// check goes out when DPD is on; with the agent's retransmissions a dead
// peer is declared within about 6 s. The provider documents DPD as on/off
// only.
const IKEDPDInterval = 2 * time.Second

// pskChars is what a generated pre-shared key is drawn from: printable,
// no spaces, nothing a shell or a swanctl.conf must quote.
const pskChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// psk returns the connection's pre-shared key: the given one, or one
// random key per pair of endpoints, the provider's 16 characters.
func (s *Secrets) psk(t *topology.Tunnel) ([]byte, error) {
	if t.IKE.PSK != topology.KeyGenerate {
		return []byte(t.IKE.PSK), nil
	}
	pair := [2]netip.Addr{t.Local, t.Remote}
	if t.Remote.Less(t.Local) {
		pair = [2]netip.Addr{t.Remote, t.Local}
	}
	if s.psks == nil {
		s.psks = map[[2]netip.Addr][]byte{}
	}
	if k, ok := s.psks[pair]; ok {
		return k, nil
	}
	k := make([]byte, topology.DefaultPSKLen)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	for i := range k {
		k[i] = pskChars[int(k[i])%len(pskChars)]
	}
	s.psks[pair] = k
	return k, nil
}

// ikeConfig turns a connection's `ike:` block into the IKE endpoint's
// configuration.
func (s *Secrets) ikeConfig(t *topology.Tunnel) (*ike.Config, error) {
	k := t.IKE
	psk, err := s.psk(t)
	if err != nil {
		return nil, fmt.Errorf("connection %s: psk: %w", t.Name, err)
	}
	suite := func(enc, auth, dh string) ike.Suite {
		e, a := encAlgs[enc], authAlgs[auth]
		return ike.Suite{Encr: e.id, KeyBits: e.bits, Integ: a.integ, PRF: a.prf, DH: dhGroups[dh]}
	}
	c := &ike.Config{
		Name: t.Name, Local: t.Local, Remote: t.Remote, LocalID: k.LocalID, RemoteID: k.RemoteID, PSK: psk,
		IKE:           suite(k.IKEEncAlg, k.IKEAuthAlg, k.IKEPFS),
		ESP:           suite(k.IPsecEncAlg, k.IPsecAuthAlg, k.IPsecPFS),
		IKELifetime:   k.IKELifetime,
		ChildLifetime: k.IPsecLifetime,
		LocalTS:       k.LocalSubnets,
		RemoteTS:      k.RemoteSubnets,
		Initiate:      k.Initiate,
		NATT:          k.NATTraversal,
		ForceEncap:    k.ForceEncap,
	}
	c.ESP.PRF = 0
	if k.DPD {
		c.DPD = IKEDPDInterval
	}
	return c, nil
}

package ike

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/emu-lab/emu/internal/ipsec/esp"
)

// Config is one IPsec connection as the provider's VPN gateway holds it
// (CreateVpnConnection IkeConfig/IpsecConfig, SPEC §10), in IANA numbers.
type Config struct {
	Name          string
	Local, Remote netip.Addr
	// LocalID and RemoteID are an IP address or an FQDN (IkeConfig
	// LocalId/RemoteId); empty means the endpoint's address.
	LocalID, RemoteID string
	PSK               []byte
	IKE               Suite // Encr, KeyBits, Integ, PRF, DH (IkeEncAlg, IkeAuthAlg, IkePfs)
	ESP               Suite // Encr, KeyBits, Integ, DH = IpsecPfs (0: disabled)
	// IKELifetime and ChildLifetime are IkeLifetime and IpsecLifetime; the
	// SA is rekeyed at 90% of it (0: never).
	IKELifetime, ChildLifetime time.Duration
	// LocalTS and RemoteTS are the protected subnets; empty means
	// 0.0.0.0/0, the provider's route-based "destination routing mode".
	LocalTS, RemoteTS []netip.Prefix
	// Initiate makes this end start the negotiation; a responder-only end
	// waits for the peer, as the provider's gateway does by default.
	Initiate bool
	// DPD is the liveness check interval (INFORMATIONAL with no payloads,
	// RFC 7296 §2.4); 0 turns DPD off.
	DPD time.Duration
	// NATT enables NAT detection (RFC 7296 §2.23) and ESP in UDP on
	// port 4500 when a NAT is seen; ForceEncap sends ESP in UDP even
	// without NAT, the way strongSwan's kernel-libipsec does.
	NATT, ForceEncap bool
}

// espCiphers and espIntegs name the ESP engine's CBC ciphers and HMACs by
// IANA transform ID (RFC 7296 §3.3.2); AES by its key length attribute.
var (
	espCiphers = map[[2]uint16]esp.Cipher{
		{EncrAESCBC, 128}: esp.AES128, {EncrAESCBC, 192}: esp.AES192, {EncrAESCBC, 256}: esp.AES256,
		{EncrDES, 0}: esp.DES, {Encr3DES, 0}: esp.TripleDES,
	}
	espIntegs = map[uint16]esp.Integrity{
		IntegHMACMD596: esp.MD5, IntegHMACSHA196: esp.SHA1, IntegHMACSHA256128: esp.SHA256,
		IntegHMACSHA384192: esp.SHA384, IntegHMACSHA512256: esp.SHA512,
	}
)

// ESPAlgorithm maps the CHILD SA suite onto the ESP engine's transforms:
// AES-GCM-16 with a 128-bit key, or any CBC cipher the provider allows with
// any of its HMACs. An error names what the engine has.
func (s Suite) ESPAlgorithm() (esp.Algorithm, error) {
	if s.Encr == EncrAESGCM16 && s.KeyBits == 128 {
		return esp.AESGCM128, nil
	}
	c, okc := espCiphers[[2]uint16{s.Encr, s.KeyBits}]
	i, oki := espIntegs[s.Integ]
	if !okc || !oki {
		return 0, fmt.Errorf("ESP transform %s is not in emu's ESP engine (it has AES_GCM_16_128, and AES_CBC_128/192/256, 3DES or DES with HMAC_MD5_96, HMAC_SHA1_96 or HMAC_SHA2_256/384/512)", FormatProposal(s.proposal(ProtoESP, nil, false)))
	}
	return esp.CBCAlgorithm(c, i), nil
}

func (c *Config) validate() error {
	if !c.Local.IsValid() || !c.Remote.IsValid() {
		return fmt.Errorf("connection %s: local and remote endpoints are required", c.Name)
	}
	if len(c.PSK) == 0 {
		return fmt.Errorf("connection %s: a pre-shared key is required", c.Name)
	}
	if _, err := newPRF(c.IKE.PRF); err != nil {
		return fmt.Errorf("connection %s: %w", c.Name, err)
	}
	if _, err := newCipherSuite(c.IKE.Encr, c.IKE.KeyBits, c.IKE.Integ); err != nil {
		return fmt.Errorf("connection %s: %w", c.Name, err)
	}
	if _, err := modpGroup(c.IKE.DH); err != nil {
		return fmt.Errorf("connection %s: %w", c.Name, err)
	}
	if c.ESP.DH != 0 {
		if _, err := modpGroup(c.ESP.DH); err != nil {
			return fmt.Errorf("connection %s: PFS: %w", c.Name, err)
		}
	}
	if _, err := c.ESP.ESPAlgorithm(); err != nil {
		return fmt.Errorf("connection %s: %w", c.Name, err)
	}
	return nil
}

// ChildSA is a negotiated pair of ESP SAs, ready for the ESP engine or XFRM.
type ChildSA struct {
	Conn      string
	Algorithm esp.Algorithm
	// InSPI is the SPI this end chose and receives on; OutSPI the peer's.
	InSPI, OutSPI uint32
	In, Out       esp.Config
	// Encap is true when ESP travels in UDP (RFC 3948) between
	// Local:LocalPort and Remote:RemotePort.
	Encap                 bool
	LocalPort, RemotePort uint16
	LocalTS, RemoteTS     []netip.Prefix
	// SendAfterOldDeleted is set on the pair this end created as the
	// responder of a rekey: the initiator installs its inbound SA only
	// when our answer arrives, so a dataplane that can keeps sending on
	// the old pair until ChildDown of it (the initiator's Delete, RFC 7296
	// §2.8), as strongSwan does. ESP sent on the new pair sooner is
	// dropped by the peer.
	SendAfterOldDeleted bool
}

// Handler receives the CHILD SAs the endpoint negotiates. Calls come from
// the endpoint's single event loop, one at a time; they must not block.
// On a rekey ChildUp of the new pair comes first, ChildDown of the old
// pair once the peer confirmed its deletion.
type Handler interface {
	ChildUp(ChildSA)
	ChildDown(conn string, inSPI uint32)
}

package topology

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// IKE is a connection keyed by IKEv2 with the provider's parameters
// (CreateVpnConnection IkeConfig/IpsecConfig, SPEC §10), in the provider's
// words. Without it a connection uses manual keying (`key:`).
type IKE struct {
	Line          int
	Version       string
	IKEEncAlg     string
	IKEAuthAlg    string
	IKEPFS        string // the IKE SA's DH group
	IKELifetime   time.Duration
	LocalID       string // "" means the local endpoint address
	RemoteID      string
	PSK           string // KeyGenerate or the key itself
	IPsecEncAlg   string
	IPsecAuthAlg  string
	IPsecPFS      string // PFSDisabled or a DH group
	IPsecLifetime time.Duration
	DPD           bool
	NATTraversal  bool
	ForceEncap    bool // ESP in UDP even without NAT (emu's knob; strongSwan's encap=yes)
	// Initiate makes this end negotiate first; when no end of a pair says
	// so, the end with the lower endpoint address does.
	Initiate      bool
	initiateSet   bool
	LocalSubnets  []netip.Prefix // empty: 0.0.0.0/0, route-based
	RemoteSubnets []netip.Prefix
}

// The provider's allowed values (SPEC §10). Lists start with the default.
var (
	IKEVersions   = []string{"ikev1", "ikev2"}
	EncAlgs       = []string{"aes", "aes192", "aes256", "des", "3des"}
	AuthAlgs      = []string{"sha1", "md5", "sha256", "sha384", "sha512"}
	DHGroups      = []string{"group2", "group1", "group5", "group14"}
	PFSGroups     = append([]string{"group2", PFSDisabled}, DHGroups[1:]...)
	MaxLifetime   = 86400 * time.Second
	DefaultPSKLen = 16
)

// PFSDisabled turns IPsec PFS off.
const PFSDisabled = "disabled"

// Proposals spells the configured proposals in the provider's vocabulary
// (the IkeConfig and IpsecConfig fields of CreateVpnConnection): the IKE
// version, then encryption-integrity-DH of the IKE SA and of ESP, the ESP
// DH group only with PFS, e.g. "IKEv2 aes-sha1-group2, ESP aes-sha1-group2".
func (k *IKE) Proposals() string {
	esp := k.IPsecEncAlg + "-" + k.IPsecAuthAlg
	if k.IPsecPFS != PFSDisabled {
		esp += "-" + k.IPsecPFS
	}
	return fmt.Sprintf("%s %s-%s-%s, ESP %s", strings.Replace(k.Version, "ike", "IKE", 1), k.IKEEncAlg, k.IKEAuthAlg, k.IKEPFS, esp)
}

var ikeFields = []string{"ike-version", "ike-enc-alg", "ike-auth-alg", "ike-pfs", "ike-lifetime", "local-id", "remote-id", "psk",
	"ipsec-enc-alg", "ipsec-auth-alg", "ipsec-pfs", "ipsec-lifetime", "dpd", "nat-traversal", "force-encap", "initiate",
	"local-subnets", "remote-subnets"}

func (r *resolver) ike(n *yaml.Node, what string) *IKE {
	k := &IKE{Line: n.Line, IKEEncAlg: EncAlgs[0], IKEAuthAlg: AuthAlgs[0], IKEPFS: DHGroups[0], IKELifetime: MaxLifetime,
		PSK: KeyGenerate, IPsecEncAlg: EncAlgs[0], IPsecAuthAlg: AuthAlgs[0], IPsecPFS: PFSGroups[0], IPsecLifetime: MaxLifetime,
		DPD: true, NATTraversal: true}
	what += " ike"
	oneOf := func(f field, s string, allowed []string) bool {
		if !slices.Contains(allowed, s) {
			r.at(f.line, "%s: %s %q is not allowed by the provider: use one of %s%s", what, f.key, s, strings.Join(allowed, ", "), hint(s, allowed))
			return false
		}
		return true
	}
	versionGiven := false
	for _, f := range r.fields(n, what, ikeFields...) {
		switch f.key {
		case "local-subnets", "remote-subnets":
			var ps []netip.Prefix
			for _, v := range r.strs(f.val, what+" "+f.key) {
				if p, ok := r.prefix(v.Line, what+" "+f.key, v.Value); ok {
					ps = append(ps, p.Masked())
				}
			}
			if f.key == "local-subnets" {
				k.LocalSubnets = ps
			} else {
				k.RemoteSubnets = ps
			}
			continue
		case "ike-lifetime", "ipsec-lifetime":
			if v, ok := r.integer(f.val, what+" "+f.key+" (seconds)", 0, int(MaxLifetime/time.Second)); ok {
				if f.key == "ike-lifetime" {
					k.IKELifetime = time.Duration(v) * time.Second
				} else {
					k.IPsecLifetime = time.Duration(v) * time.Second
				}
			}
			continue
		}
		s, ok := r.str(f.val, what+" "+f.key)
		if !ok {
			continue
		}
		switch f.key {
		case "ike-version":
			versionGiven = true
			if s == "ikev1" {
				r.at(f.line, "%s: ike-version ikev1 (the provider's default) is not emulated: emu negotiates IKEv2 only; set `ike-version: ikev2` on both ends", what)
			} else if oneOf(f, s, IKEVersions) {
				k.Version = s
			}
		case "ike-enc-alg":
			if oneOf(f, s, EncAlgs) {
				k.IKEEncAlg = s
			}
		case "ike-auth-alg":
			if oneOf(f, s, AuthAlgs) {
				k.IKEAuthAlg = s
			}
		case "ike-pfs":
			if oneOf(f, s, DHGroups) {
				k.IKEPFS = s
			}
		case "ipsec-enc-alg":
			if oneOf(f, s, EncAlgs) {
				k.IPsecEncAlg = s
			}
		case "ipsec-auth-alg":
			if oneOf(f, s, AuthAlgs) {
				k.IPsecAuthAlg = s
			}
		case "ipsec-pfs":
			if oneOf(f, s, PFSGroups) {
				k.IPsecPFS = s
			}
		case "local-id", "remote-id":
			if err := checkIdentity(s); err != nil {
				r.at(f.line, "%s: %s %q %v", what, f.key, s, err)
			}
			if f.key == "local-id" {
				k.LocalID = s
			} else {
				k.RemoteID = s
			}
		case "psk":
			if s != KeyGenerate {
				if err := checkPSK(s); err != nil {
					r.at(f.line, "%s: psk %v (or write %q for a random %d-character key)", what, err, KeyGenerate, DefaultPSKLen)
				}
			}
			k.PSK = s
		case "dpd", "nat-traversal", "force-encap", "initiate":
			v, ok := r.onOff(f, what, s)
			if !ok {
				continue
			}
			switch f.key {
			case "dpd":
				k.DPD = v
			case "nat-traversal":
				k.NATTraversal = v
			case "force-encap":
				k.ForceEncap = v
			case "initiate":
				k.Initiate, k.initiateSet = v, true
			}
		}
	}
	if !versionGiven {
		r.at(n.Line, "%s: the provider's default ike-version is ikev1, which emu does not emulate: write `ike-version: ikev2`", what)
	}
	if k.ForceEncap && !k.NATTraversal {
		r.at(n.Line, "%s: force-encap needs nat-traversal: on (ESP in UDP is NAT traversal)", what)
	}
	return k
}

func (r *resolver) onOff(f field, what, s string) (bool, bool) {
	switch s {
	case "on", "true", "yes":
		return true, true
	case "off", "false", "no":
		return false, true
	}
	r.at(f.line, "%s: %s must be on or off, not %q", what, f.key, s)
	return false, false
}

// checkIdentity enforces the provider's LocalId/RemoteId: at most 100
// characters, an IP address or an FQDN.
func checkIdentity(s string) error {
	if len(s) == 0 || len(s) > 100 {
		return fmt.Errorf("must be 1 to 100 characters")
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") ||
			strings.IndexFunc(label, func(c rune) bool {
				return !(c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c) || c == '-'))
			}) >= 0 {
			return fmt.Errorf("must be an IP address or an FQDN like vpn.example.com")
		}
	}
	return nil
}

// checkPSK enforces the provider's pre-shared key rule: 1 to 100 printable
// ASCII characters without spaces.
func checkPSK(s string) error {
	if len(s) == 0 || len(s) > 100 {
		return fmt.Errorf("must be 1 to 100 characters")
	}
	for _, c := range s {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("must be printable ASCII without spaces")
		}
	}
	return nil
}

// checkIKE pairs the IKE settings of both ends of t: either both ends are
// keyed by IKE or neither, and exactly one of them initiates.
func (r *resolver) checkIKE(n *Node, t, pt *Tunnel, peer *Node) {
	if (t.IKE == nil) != (pt.IKE == nil) {
		r.at(t.Line, "node %q connection %s: one end is keyed by IKE and the other (%s, line %d) by `key:`: give both ends an `ike:` block, or neither", n.Name, t.Name, peer.Name, pt.Line)
		return
	}
	if t.IKE == nil {
		return
	}
	both := t.IKE.initiateSet && pt.IKE.initiateSet
	switch {
	case both && t.IKE.Initiate == pt.IKE.Initiate && t.Local.Less(t.Remote):
		r.at(t.Line, "node %q connection %s: both ends say `initiate: %s` (%s, line %d, too): let exactly one end initiate", n.Name, t.Name, onOffWord(t.IKE.Initiate), peer.Name, pt.Line)
	case t.IKE.initiateSet:
	case pt.IKE.initiateSet:
		t.IKE.Initiate = !pt.IKE.Initiate
	default:
		t.IKE.Initiate = t.Local.Less(t.Remote)
	}
}

func onOffWord(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

package capture

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Algorithm names, as SA.Algorithm spells them.
const (
	AESGCM128    = "aes-gcm-128"    // rfc4106(gcm(aes)), 16-octet ICV
	AESCBCSHA1   = "aes-cbc-sha1"   // cbc(aes) + hmac(sha1), 96-bit ICV
	AESCBCSHA256 = "aes-cbc-sha256" // cbc(aes) + hmac(sha256), 128-bit ICV
)

// SA is the part of an ESP security association Wireshark needs to decrypt
// one direction of a tunnel.
type SA struct {
	SPI       uint32
	Src, Dst  netip.Addr
	Algorithm string
	// EncKey is the cipher key; for AES-GCM it ends with the 4-byte salt,
	// exactly as the kernel's rfc4106 key.
	EncKey  []byte
	AuthKey []byte
}

// wiresharkCipher and wiresharkAuth hold the strings Wireshark's ESP
// dissector matches in its esp_sa file, with the key lengths they need, for
// the two halves of a CBC algorithm name "<enc>-cbc-<auth>" (the provider's
// encryption and authentication values, SPEC §10).
//
// Source: Wireshark epan/dissectors/packet-ipsec.c, the value_string tables
// esp_encryption_type_vals ("AES-CBC [RFC3602]", "TripleDES-CBC [RFC2451]",
// "DES-CBC [RFC2405]", "AES-GCM with 16 octet ICV [RFC4106]") and
// esp_authentication_type_vals ("NULL", "HMAC-MD5-96 [RFC2403]",
// "HMAC-SHA-1-96 [RFC2404]", "HMAC-SHA-256/384/512-... [RFC4868]"); a UAT
// enum field is saved and loaded as that display string. AES-CBC takes the
// key length from the key. The dissector refuses AES-GCM with any
// authentication other than "NULL" ("AES-GCM encryption can only be used
// with NULL authentication") and wants 160 key bits for it: the 128-bit key
// and the 32-bit salt.
var (
	wiresharkCipher = map[string]struct {
		name   string
		keyLen int
	}{
		"aes": {"AES-CBC [RFC3602]", 16}, "aes192": {"AES-CBC [RFC3602]", 24}, "aes256": {"AES-CBC [RFC3602]", 32},
		"des": {"DES-CBC [RFC2405]", 8}, "3des": {"TripleDES-CBC [RFC2451]", 24},
	}
	wiresharkAuth = map[string]struct {
		name   string
		keyLen int
	}{
		"md5": {"HMAC-MD5-96 [RFC2403]", 16}, "sha1": {"HMAC-SHA-1-96 [RFC2404]", 20},
		"sha256": {"HMAC-SHA-256-128 [RFC4868]", 32}, "sha384": {"HMAC-SHA-384-192 [RFC4868]", 48},
		"sha512": {"HMAC-SHA-512-256 [RFC4868]", 64},
	}
)

type wiresharkAlg struct {
	enc, auth       string
	encLen, authLen int
}

// wiresharkAlgorithm resolves an algorithm name: aes-gcm-128 or a CBC pair.
func wiresharkAlgorithm(name string) (wiresharkAlg, bool) {
	if name == AESGCM128 {
		return wiresharkAlg{"AES-GCM with 16 octet ICV [RFC4106]", "NULL", 20, 0}, true
	}
	enc, auth, ok := strings.Cut(name, "-cbc-")
	c, okc := wiresharkCipher[enc]
	a, oka := wiresharkAuth[auth]
	return wiresharkAlg{c.name, a.name, c.keyLen, a.keyLen}, ok && okc && oka
}

// WriteWiresharkESPSA writes sas as Wireshark's esp_sa file, so a capture of
// the tunnel decrypts when the file is placed in the Wireshark profile
// directory (or the same rows entered under Preferences > Protocols > ESP >
// ESP SAs, with "Attempt to detect/decode encrypted ESP payloads" on). The
// file holds keys: create it 0600.
//
// Format (Wireshark's UAT files, epan/uat_load.l, fields from esp_uat_flds in
// packet-ipsec.c): one SA per line, every field a double-quoted string,
// separated by commas, in the order protocol ("IPv4"/"IPv6"), source IP,
// destination IP, SPI, encryption algorithm, encryption key, authentication
// algorithm, authentication key; keys as "0x" and hex digits (the
// dissector's compute_ascii_key reads a "0x" prefix as hex); lines starting
// with '#' are comments. Newer releases add two columns, "SN" and "ESN High
// Bits", and register defaults for them ("32-bit", "0": esp_uat_defaults_)
// so files without them still load; releases without those columns reject
// any extra field ("more fields than required" in uat_load.l). Eight fields
// is therefore the form both read, and the lab's SAs use no extended
// sequence numbers. TestWiresharkESPSA_TsharkDecryptsAndAuthenticates checks
// the file against a real tshark when one is installed.
func WriteWiresharkESPSA(w io.Writer, sas []SA) error {
	var b strings.Builder
	b.WriteString("# Wireshark ESP SAs (esp_sa) written by emu; they hold keys.\n")
	for _, sa := range sas {
		line, err := espSALine(sa)
		if err != nil {
			return err
		}
		b.WriteString(line)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func espSALine(sa SA) (string, error) {
	name := fmt.Sprintf("SA 0x%08x %s->%s", sa.SPI, sa.Src, sa.Dst)
	alg, ok := wiresharkAlgorithm(sa.Algorithm)
	if !ok {
		return "", fmt.Errorf("%s: algorithm %q has no Wireshark name (use %s or <enc>-cbc-<auth> such as %s)",
			name, sa.Algorithm, AESGCM128, AESCBCSHA1)
	}
	sa.Src, sa.Dst = sa.Src.Unmap(), sa.Dst.Unmap()
	if !sa.Src.IsValid() || !sa.Dst.IsValid() || sa.Src.Is4() != sa.Dst.Is4() {
		return "", fmt.Errorf("%s: source and destination must be two addresses of one family", name)
	}
	if len(sa.EncKey) != alg.encLen || len(sa.AuthKey) != alg.authLen {
		return "", fmt.Errorf("%s: %s needs a %d-byte encryption key and a %d-byte authentication key, got %d and %d",
			name, sa.Algorithm, alg.encLen, alg.authLen, len(sa.EncKey), len(sa.AuthKey))
	}
	family := "IPv6"
	if sa.Src.Is4() {
		family = "IPv4"
	}
	fields := []string{
		family, sa.Src.String(), sa.Dst.String(), fmt.Sprintf("0x%08x", sa.SPI),
		alg.enc, hexKey(sa.EncKey), alg.auth, hexKey(sa.AuthKey),
	}
	return `"` + strings.Join(fields, `","`) + "\"\n", nil
}

// hexKey leaves an absent key (AES-GCM's authentication key) as an empty
// field.
func hexKey(k []byte) string {
	if len(k) == 0 {
		return ""
	}
	return "0x" + hex.EncodeToString(k)
}

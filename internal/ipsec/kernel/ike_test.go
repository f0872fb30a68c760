package kernel

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/ipsec/ike"
)

// Each ESP transform IKE can negotiate reaches XFRM under the kernel's name,
// with the ICV length of its RFC (4106 §6, 2403 §2, 2404 §2, 4868 §2.3);
// plain XFRMA_ALG_AUTH would truncate hmac(sha256) to 96 bits. The key
// lengths are what the kernel's cbc(aes) infers AES-128/192/256 from, and
// what cbc(des) and cbc(des3_ede) insist on.
func TestXFRM_EachIKETransform_KernelNameAndTruncation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		suite ike.Suite
		want  string // AEAD name/ICV bits, or crypt+auth/trunc bits, then key bits
	}{
		{"AES_GCM_16_128", ike.Suite{Encr: ike.EncrAESGCM16, KeyBits: 128}, "rfc4106(gcm(aes))/128 key 160"},
		{"AES_CBC_128/HMAC_SHA1_96", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA196}, "cbc(aes)+hmac(sha1)/96 key 128"},
		{"AES_CBC_128/HMAC_SHA2_256_128", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACSHA256128}, "cbc(aes)+hmac(sha256)/128 key 128"},
		{"AES_CBC_128/HMAC_MD5_96", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 128, Integ: ike.IntegHMACMD596}, "cbc(aes)+hmac(md5)/96 key 128"},
		{"AES_CBC_192/HMAC_SHA2_384_192", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 192, Integ: ike.IntegHMACSHA384192}, "cbc(aes)+hmac(sha384)/192 key 192"},
		{"AES_CBC_256/HMAC_SHA2_512_256", ike.Suite{Encr: ike.EncrAESCBC, KeyBits: 256, Integ: ike.IntegHMACSHA512256}, "cbc(aes)+hmac(sha512)/256 key 256"},
		{"3DES/HMAC_SHA1_96", ike.Suite{Encr: ike.Encr3DES, Integ: ike.IntegHMACSHA196}, "cbc(des3_ede)+hmac(sha1)/96 key 192"},
		{"DES/HMAC_MD5_96", ike.Suite{Encr: ike.EncrDES, Integ: ike.IntegHMACMD596}, "cbc(des)+hmac(md5)/96 key 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alg, err := tc.suite.ESPAlgorithm()
			if err != nil {
				t.Fatal(err)
			}
			x := alg.XFRM()
			got := x.Crypt + "+" + x.Auth + "/" + strconv.Itoa(x.AuthTruncBits)
			if x.AEAD != "" {
				got = x.AEAD + "/" + strconv.Itoa(x.AEADICVBits)
			}
			got += " key " + strconv.Itoa(alg.EncKeyLen()*8)
			if got != tc.want {
				t.Errorf("XFRM algorithm %s, want %s", got, tc.want)
			}
		})
	}
	// What neither engine has is refused when the connection is added,
	// long before a state could be: the error names what there is.
	_, err := ike.Suite{Encr: ike.EncrAESGCM16, KeyBits: 256}.ESPAlgorithm()
	if err == nil || !strings.Contains(err.Error(), "AES_GCM_16_128") {
		t.Errorf("AES-GCM-256: %v", err)
	}
}

// A negotiated pair becomes two tunnel-mode states of the connection's
// if_id and reqid, SPIs and keys the right way round, and with NAT-T each
// carries the UDP ports of its own direction.
func TestStatePair_NegotiatedSAs_DirectionsSPIsAndEncapPorts(t *testing.T) {
	local, remote := net.IPv4(192, 0, 2, 1), net.IPv4(192, 0, 2, 2)
	out := ipsec.SA{SPI: 0xc0ffee01, EncKey: []byte("out-key"), AuthKey: []byte("out-auth")}
	in := ipsec.SA{SPI: 0xc0ffee02, EncKey: []byte("in-key"), AuthKey: []byte("in-auth")}
	for _, encap := range []*ports{nil, {local: 4500, remote: 4501}} {
		pair := statePair(local, remote, 7, esp.AESGCM128.XFRM(), out, in, encap)
		if len(pair) != 2 || pair[0].dir != "out" || pair[1].dir != "in" {
			t.Fatalf("pair %+v", pair)
		}
		for i, want := range []struct {
			src, dst net.IP
			keys     ipsec.SA
			sport    int
			dport    int
		}{{local, remote, out, 4500, 4501}, {remote, local, in, 4501, 4500}} {
			s := pair[i]
			st := s.state
			if !st.Src.Equal(want.src) || !st.Dst.Equal(want.dst) || uint32(st.Spi) != want.keys.SPI || string(s.enc) != string(want.keys.EncKey) || string(s.aut) != string(want.keys.AuthKey) {
				t.Errorf("%s: %v→%v spi %#x keys %q/%q", s.dir, st.Src, st.Dst, uint32(st.Spi), s.enc, s.aut)
			}
			if st.Mode != netlink.XFRM_MODE_TUNNEL || st.Proto != netlink.XFRM_PROTO_ESP || st.Ifid != 7 || st.Reqid != reqid(7) {
				t.Errorf("%s: mode %v proto %v if_id %d reqid %d", s.dir, st.Mode, st.Proto, st.Ifid, st.Reqid)
			}
			switch {
			case encap == nil && st.Encap != nil:
				t.Errorf("%s: encapsulated without NAT-T: %v", s.dir, st.Encap)
			case encap != nil && (st.Encap == nil || st.Encap.Type != netlink.XFRM_ENCAP_ESPINUDP || st.Encap.SrcPort != want.sport || st.Encap.DstPort != want.dport):
				t.Errorf("%s: encap %v, want ESP in UDP %d→%d", s.dir, st.Encap, want.sport, want.dport)
			}
		}
	}
}

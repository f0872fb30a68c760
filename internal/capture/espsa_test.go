package capture

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func seq(n int, from byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

func TestWriteWiresharkESPSA_ExactText(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	sas := []SA{
		{SPI: 0xc0010203, Src: a, Dst: b, Algorithm: AESGCM128, EncKey: seq(20, 0x00)},
		{SPI: 0x10, Src: b, Dst: a, Algorithm: AESCBCSHA1, EncKey: seq(16, 0x10), AuthKey: seq(20, 0x20)},
		{SPI: 0xffffffff, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
			Algorithm: AESCBCSHA256, EncKey: seq(16, 0xa0), AuthKey: seq(32, 0xc0)},
	}
	var buf bytes.Buffer
	if err := WriteWiresharkESPSA(&buf, sas); err != nil {
		t.Fatal(err)
	}
	want := `# Wireshark ESP SAs (esp_sa) written by emu; they hold keys.
"IPv4","192.0.2.1","198.51.100.7","0xc0010203","AES-GCM with 16 octet ICV [RFC4106]","0x000102030405060708090a0b0c0d0e0f10111213","NULL",""
"IPv4","198.51.100.7","192.0.2.1","0x00000010","AES-CBC [RFC3602]","0x101112131415161718191a1b1c1d1e1f","HMAC-SHA-1-96 [RFC2404]","0x202122232425262728292a2b2c2d2e2f30313233"
"IPv6","2001:db8::1","2001:db8::2","0xffffffff","AES-CBC [RFC3602]","0xa0a1a2a3a4a5a6a7a8a9aaabacadaeaf","HMAC-SHA-256-128 [RFC4868]","0xc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
`
	if got := buf.String(); got != want {
		t.Errorf("esp_sa file:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteWiresharkESPSA_BadSA_NamesItAndTheFix(t *testing.T) {
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::2")
	for _, tc := range []struct {
		sa   SA
		want string
	}{
		{SA{SPI: 1, Src: a, Dst: a, Algorithm: "aes-gcm-256", EncKey: seq(36, 0)}, `algorithm "aes-gcm-256" has no Wireshark name (use aes-gcm-128`},
		{SA{SPI: 1, Src: a, Dst: a, Algorithm: AESGCM128, EncKey: seq(16, 0)}, "needs a 20-byte encryption key and a 0-byte authentication key, got 16 and 0"},
		{SA{SPI: 1, Src: a, Dst: b, Algorithm: AESGCM128, EncKey: seq(20, 0)}, "two addresses of one family"},
	} {
		err := WriteWiresharkESPSA(&bytes.Buffer{}, []SA{tc.sa})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "SA 0x00000001") {
			t.Errorf("error %v, want one naming SA 0x00000001 and %q", err, tc.want)
		}
	}
}

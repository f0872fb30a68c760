package capture

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/emu-lab/emu/internal/ipsec/esp"
	"github.com/emu-lab/emu/internal/testenv"
)

// The esp_sa text is only right if Wireshark itself decrypts with it: this
// builds one tunnel-mode ESP packet per algorithm (RFC 4303, RFC 4106 for
// GCM), writes them with WritePcap and their SAs with WriteWiresharkESPSA,
// and asks tshark for the inner UDP port and the ICV verdict.
func TestWiresharkESPSA_TsharkDecryptsAndAuthenticates(t *testing.T) {
	tshark, err := exec.LookPath("tshark")
	testenv.Require(t, err, "tshark is the witness that Wireshark decrypts with the esp_sa file (scripts/setup.sh installs it)")
	src, dst := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	sas := []SA{
		{SPI: 0x100, Src: src, Dst: dst, Algorithm: AESGCM128, EncKey: seq(20, 0x01)},
		{SPI: 0x200, Src: src, Dst: dst, Algorithm: AESCBCSHA1, EncKey: seq(16, 0x11), AuthKey: seq(20, 0x21)},
		{SPI: 0x300, Src: src, Dst: dst, Algorithm: AESCBCSHA256, EncKey: seq(16, 0x31), AuthKey: seq(32, 0x41)},
	}
	var pkts []Packet
	for i, sa := range sas {
		data := espFrame(t, sa, innerUDP(t, uint16(5001+i)))
		pkts = append(pkts, Packet{Time: time.Unix(1700000000, int64(i)), Length: len(data), Data: data})
	}
	// Every other algorithm is sealed by emu's ESP engine: tshark is then
	// the independent witness of both the esp_sa names and the engine.
	for _, alg := range esp.Algorithms() {
		if alg == esp.AESGCM128 || alg == esp.AESCBCSHA1 || alg == esp.AESCBCSHA256 {
			continue
		}
		i := len(sas)
		sa := SA{SPI: uint32(0x100 * (i + 1)), Src: src, Dst: dst, Algorithm: alg.String(),
			EncKey: seq(alg.EncKeyLen(), byte(0x10*i+1)), AuthKey: seq(alg.AuthKeyLen(), byte(0x10*i+2))}
		out, err := esp.NewOutbound(esp.Config{SPI: sa.SPI, Algorithm: alg, EncKey: sa.EncKey, AuthKey: sa.AuthKey})
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := out.Seal(nil, innerUDP(t, uint16(5001+i)), 4)
		if err != nil {
			t.Fatal(err)
		}
		data := frame(t,
			&layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv4},
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolESP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
			gopacket.Payload(sealed)).Data
		sas = append(sas, sa)
		pkts = append(pkts, Packet{Time: time.Unix(1700000000, int64(i)), Length: len(data), Data: data})
	}
	dir := t.TempDir()
	pcap := filepath.Join(dir, "esp.pcap")
	var buf bytes.Buffer
	if err := WritePcap(&buf, pkts); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pcap, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	if err := WriteWiresharkESPSA(&buf, sas); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "wireshark"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wireshark", "esp_sa"), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tshark, "-r", pcap,
		"-o", "esp.enable_encryption_decode:TRUE", "-o", "esp.enable_authentication_check:TRUE",
		"-T", "fields", "-e", "esp.spi", "-e", "udp.dstport", "-e", "esp.icv_good")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	// tshark warns on stderr about running as root; anything else there
	// (an esp_sa line it could not load) is a failure.
	complaints := strings.ReplaceAll(stderr.String(), `Running as user "root" and group "root". This could be dangerous.`, "")
	if err != nil || strings.TrimSpace(complaints) != "" {
		t.Fatalf("tshark: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(sas) {
		t.Fatalf("tshark printed %d lines, want %d:\n%s", len(lines), len(sas), out)
	}
	for i, line := range lines {
		f := strings.Split(line, "\t")
		// Booleans print as 1 or True, depending on the tshark release.
		if len(f) != 3 || f[1] != strconv.Itoa(5001+i) || (f[2] != "1" && f[2] != "True") {
			t.Errorf("%s: tshark gave %q, want inner UDP port %d and a good ICV", sas[i].Algorithm, line, 5001+i)
		}
	}
}

func innerUDP(t *testing.T, port uint16) []byte {
	t.Helper()
	ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.IPv4(10, 1, 0, 1), DstIP: net.IPv4(10, 2, 0, 1)}
	udp := &layers.UDP{SrcPort: 4000, DstPort: layers.UDPPort(port)}
	if err := udp.SetNetworkLayerForChecksum(ip4); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ip4, udp, gopacket.Payload("inner marker")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// espFrame encrypts inner (an IPv4 packet, next header 4) under sa with
// sequence number 1 and wraps it in Ethernet and an outer IPv4 header.
func espFrame(t *testing.T, sa SA, inner []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(sa.EncKey[:16])
	if err != nil {
		t.Fatal(err)
	}
	header := binary.BigEndian.AppendUint32(nil, sa.SPI)
	header = binary.BigEndian.AppendUint32(header, 1)
	align := aes.BlockSize
	if sa.Algorithm == AESGCM128 {
		align = 4
	}
	plain := bytes.Clone(inner)
	for i := 1; (len(plain)+2)%align != 0; i++ {
		plain = append(plain, byte(i))
	}
	plain = append(plain, byte(len(plain)-len(inner)), 4)
	var esp []byte
	switch sa.Algorithm {
	case AESGCM128:
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			t.Fatal(err)
		}
		iv := seq(8, 0x90)
		nonce := append(bytes.Clone(sa.EncKey[16:]), iv...)
		sealed := gcm.Seal(nil, nonce, plain, header)
		esp = append(append(bytes.Clone(header), iv...), sealed...)
	default:
		iv := seq(aes.BlockSize, 0xa0)
		ct := make([]byte, len(plain))
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, plain)
		esp = append(append(bytes.Clone(header), iv...), ct...)
		h, icvLen := func() (func() hash.Hash, int) {
			if sa.Algorithm == AESCBCSHA1 {
				return sha1.New, 12
			}
			return sha256.New, 16
		}()
		icv := hmac.New(h, sa.AuthKey)
		icv.Write(esp)
		esp = append(esp, icv.Sum(nil)[:icvLen]...)
	}
	return frame(t,
		&layers.Ethernet{SrcMAC: mac, DstMAC: mac, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolESP, SrcIP: sa.Src.AsSlice(), DstIP: sa.Dst.AsSlice()},
		gopacket.Payload(esp)).Data
}

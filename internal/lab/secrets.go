package lab

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/plan"
)

// ESPSAFile is the Wireshark ESP SA table of a lab, in its lab directory.
const ESPSAFile = "esp_sa"

// writeESPSA stores every SA of the lab in Wireshark's esp_sa format, 0600:
// it holds keys, and it is what lets a user's Wireshark decrypt a capture.
func writeESPSA(p *plan.Plan) error {
	var sas []capture.SA
	add := func(c ipsec.Conn) {
		// Each end's outbound SA is one direction; together they are all.
		sas = append(sas, capture.SA{SPI: c.Out.SPI, Src: c.Local, Dst: c.Remote, Algorithm: c.Cipher, EncKey: c.Out.EncKey, AuthKey: c.Out.AuthKey})
	}
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			switch s := s.(type) {
			case plan.Agent:
				for _, c := range s.Tunnels {
					add(c)
				}
			case plan.KernelTunnel:
				add(s.Conn)
			}
		}
	}
	if len(sas) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := capture.WriteWiresharkESPSA(&buf, sas); err != nil {
		return err
	}
	path := filepath.Join(p.LabDir, ESPSAFile)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

package lab

import (
	"bytes"
	"encoding/json"
	"path/filepath"

	"github.com/emu-lab/emu/internal/capture"
	"github.com/emu-lab/emu/internal/ipsec"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/safefile"
)

// Files in the lab directory that hold keys (mode 0600): the Wireshark ESP
// SA table, and every connection as deployed, which emu trace reads to
// decrypt what it captures.
const (
	ESPSAFile = "esp_sa"
	ConnsFile = "ipsec.json"
)

// writeSecrets stores every connection of the plan, whichever dataplane
// runs it. Each file is journalled before it is written, so a rollback
// removes it even from a lab directory that existed before.
func writeSecrets(j *journal, p *plan.Plan) error {
	var conns []ipsec.Conn
	for _, st := range p.Stages {
		for _, s := range st.Steps {
			switch s := s.(type) {
			case plan.Agent:
				conns = append(conns, s.Tunnels...)
			case plan.KernelTunnel:
				conns = append(conns, s.Conn)
			}
		}
	}
	if len(conns) == 0 {
		return nil
	}
	var sas []capture.SA
	for _, c := range conns {
		if c.IKE != nil {
			continue // keys negotiated at run time, by the agents
		}
		// Each end's outbound SA is one direction; together they are all.
		sas = append(sas, capture.SA{SPI: c.Out.SPI, Src: c.Local, Dst: c.Remote, Algorithm: c.Cipher, EncKey: c.Out.EncKey, AuthKey: c.Out.AuthKey})
	}
	var table bytes.Buffer
	if err := capture.WriteWiresharkESPSA(&table, sas); err != nil {
		return err
	}
	js, err := json.MarshalIndent(conns, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{ESPSAFile: table.Bytes(), ConnsFile: js} {
		path := filepath.Join(p.LabDir, name)
		if err := j.add(Entry{Kind: "file", Name: path}); err != nil {
			return err
		}
		if err := safefile.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ReadConns returns the connections a deploy stored in a lab directory.
// Those keyed by IKE get the SAs their agents last negotiated, so traces of
// them decrypt too.
func ReadConns(labDir string) ([]ipsec.Conn, error) {
	data, err := safefile.ReadFile(filepath.Join(labDir, ConnsFile))
	if err != nil {
		return nil, err
	}
	var conns []ipsec.Conn
	if err := json.Unmarshal(data, &conns); err != nil {
		return nil, err
	}
	files, _ := filepath.Glob(filepath.Join(labDir, "agents", "*.sas.json"))
	for _, f := range files {
		data, err := safefile.ReadFile(f)
		if err != nil {
			continue // an agent that negotiated nothing yet
		}
		var negotiated []ipsec.Conn
		if json.Unmarshal(data, &negotiated) != nil {
			continue
		}
		for _, n := range negotiated {
			for i := range conns {
				if c := &conns[i]; c.IKE != nil && c.Name == n.Name && c.Local == n.Local {
					c.Out, c.In = n.Out, n.In
				}
			}
		}
	}
	return conns, nil
}

package graph_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/graph"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/nodes"
	"github.com/emu-lab/emu/topologies"
)

func TestGraph_StaticScenario_ShowsKindsLinksAddressesAndTunnel(t *testing.T) {
	data, _ := topologies.FS.ReadFile("static.yaml")
	path := filepath.Join(t.TempDir(), "static.yaml")
	os.WriteFile(path, data, 0o644)
	topo, err := nodes.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var dot, mer strings.Builder
	if err := graph.DOT(&dot, topo); err != nil {
		t.Fatal(err)
	}
	if err := graph.Mermaid(&mer, topo); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"vbr" [shape=cylinder`, `"onprem" -- "vbr" [taillabel="eth2 10.0.0.1/30", headlabel="eth1 10.0.0.2/30"]`, `"onprem" -- "vpngw" [style=dashed`, `IPsec to-vpc: 10.0.0.1 ↔ 172.16.1.10 (aes-gcm-128)`} {
		if !strings.Contains(dot.String(), want) {
			t.Errorf("DOT lacks %q:\n%s", want, dot.String())
		}
	}
	for _, want := range []string{"flowchart LR", `vbr[("vbr<br/><small>vbr</small>")]`, `onprem ---|"eth2 10.0.0.1/30 — eth1 10.0.0.2/30"| vbr`, `onprem -.-|"IPsec to-vpc`} {
		if !strings.Contains(mer.String(), want) {
			t.Errorf("Mermaid lacks %q:\n%s", want, mer.String())
		}
	}
}

// An IKE-keyed connection is labelled with the proposals it is configured
// with (the provider's defaults here, PFS on by default), not the manual
// keying's cipher.
func TestGraph_IKEConnection_LabelShowsConfiguredProposals(t *testing.T) {
	topo, err := topology.Parse("/labs/ike.yaml", []byte(labtest.IKEKeyed(t, "", "")), nodes.Default())
	if err != nil {
		t.Fatal(err)
	}
	var dot strings.Builder
	if err := graph.DOT(&dot, topo); err != nil {
		t.Fatal(err)
	}
	if want := `IPsec to-vpc: 10.0.0.1 ↔ 172.16.1.10 (IKEv2 aes-sha1-group2, ESP aes-sha1-group2)`; !strings.Contains(dot.String(), want) {
		t.Errorf("DOT lacks %q:\n%s", want, dot.String())
	}
}

package checks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/topologies"
)

// Failover breaks the customer edge's first connection, whatever the kind
// of the node playing it is called: with the on-premises gateway's BGP run
// by FRR and every kind a third party's, it is still that gateway's.
func TestFailover_AsksCustomerEdge_FindsTheFRRGatewayOfAThirdPartyKind(t *testing.T) {
	dir := t.TempDir()
	labtest.CopyTree(t, topologies.FS, "frr-onprem", dir)
	r, text := labtest.ThirdPartyKinds(labtest.Shipped(t, "frr-onprem.yaml"))
	path := filepath.Join(dir, "frr-onprem.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	topo, err := topology.Load(path, r)
	if err == nil {
		err = r.Validate(topo)
	}
	if err != nil {
		t.Fatal(err)
	}
	gw, tun := FailoverConnection(topo)
	if gw == nil || gw.Kind != "third-party-onprem-gateway" || gw.BGP == nil || gw.BGP.Speaker != "frr" || tun == nil {
		t.Fatalf("failover would break %+v's connection %+v, want the FRR-run on-premises gateway's", gw, tun)
	}
}

// withClient2 adds a second data-center host, declared right after client,
// on its own LAN behind the on-premises gateway.
func withClient2(t *testing.T) string {
	text := labtest.Shipped(t, "static.yaml")
	for old, add := range map[string]string{
		"    onprem:\n": "    client2:\n      kind: host\n      interfaces:\n        eth1: 10.1.1.10/24\n      routes:\n        - {dst: default, via: 10.1.1.1}\n",
		"        eth2: 10.0.0.1/30       # Express Connect circuit; also the VPN IP\n": "",
		"  links:\n": "",
	} {
		switch old {
		case "    onprem:\n":
			text = strings.Replace(text, old, add+old, 1)
		case "  links:\n":
			text = strings.Replace(text, old, old+"    - endpoints: [\"client2:eth1\", \"onprem:eth3\"]\n", 1)
		default:
			text = strings.Replace(text, old, old+"        eth3: 10.1.1.1/24\n", 1)
		}
	}
	return text
}

// The probe pair is one end system on each side of the tunnel, whatever the
// order or names of the nodes in the file.
func TestEndPair_ChosenBySide_NotByOrderOrName(t *testing.T) {
	ecsFirst := strings.Replace(labtest.Shipped(t, "static.yaml"), "  nodes:\n", "  nodes:\n    ecs:\n      kind: host\n      interfaces:\n        eth1: 172.16.2.10/24\n      routes:\n        - {dst: default, via: 172.16.2.1}\n", 1)
	ecsFirst = strings.Replace(ecsFirst, "    ecs:\n      kind: host\n      interfaces:\n        eth1: 172.16.2.10/24\n      routes:\n        - {dst: default, via: 172.16.2.1}\n  links:", "  links:", 1)
	for name, c := range map[string]struct{ text, order string }{
		"client2 after client": {withClient2(t), "client client2 ecs"},
		"ecs first":            {ecsFirst, "ecs client"},
	} {
		topo := labtest.Load(t, labtest.Write(t, c.text))
		var order []string
		for _, h := range hostsOf(topo) {
			order = append(order, h.node.Name)
		}
		if strings.Join(order, " ") != c.order {
			t.Fatalf("%s: hosts in file order %v, want %s", name, order, c.order)
		}
		a, b, why := endPair(topo)
		if why != "" || a.node.Name != "client" || b.node.Name != "ecs" {
			t.Errorf("%s: pair %v → %v (%s), want client → ecs", name, a.node.Name, b.node.Name, why)
		}
	}
}

func TestPath_SecondDataCenterHostDeclaredAfterClient_StillWalksTheTunnel(t *testing.T) {
	l := labtest.DeployText(t, withClient2(t))
	conns, err := lab.ReadConns(l.Plan.LabDir)
	if err != nil {
		t.Fatal(err)
	}
	rs := Run(context.Background(), Lab{Topology: l.Topology, Conns: conns, Dir: l.Plan.LabDir}, []Check{Path})
	if len(rs) != 1 || !rs[0].Passed || !strings.HasPrefix(rs[0].Evidence, "client sends → onprem encrypts") {
		t.Fatalf("path: %+v", rs)
	}
}

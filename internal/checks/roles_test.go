package checks

import (
	"os"
	"path/filepath"
	"testing"

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
	gw, tun := firstConnection(topo)
	if gw == nil || gw.Kind != "third-party-onprem-gateway" || gw.BGP == nil || gw.BGP.Speaker != "frr" || tun == nil {
		t.Fatalf("failover would break %+v's connection %+v, want the FRR-run on-premises gateway's", gw, tun)
	}
}

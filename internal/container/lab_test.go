package container_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/emu-lab/emu/internal/checks"
	"github.com/emu-lab/emu/internal/checks/checktest"
	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/topology"
)

// asContainers makes nodes of a shipped scenario containers: every node,
// or (cloudOnly) the cloud side's kinds, data center left as namespaces.
func asContainers(t *testing.T, file, image string, cloudOnly bool) string {
	text := labtest.Shipped(t, file)
	var block string
	if cloudOnly {
		block = "  kinds:\n"
		for _, k := range []string{"vbr", "cen", "vpc", "vpn-gateway"} {
			block += fmt.Sprintf("    %s: {runtime: docker, image: %q}\n", k, image)
		}
	} else {
		block = fmt.Sprintf("  defaults: {runtime: docker, image: %q}\n", image)
	}
	return strings.Replace(text, "topology:\n", "topology:\n"+block, 1)
}

func TestContainerLabs_EveryMethod_AllContainersAndMixed_PassEveryCheck(t *testing.T) {
	rt := newRuntime(t)
	image := testImage(t)
	var labs []string
	t.Cleanup(func() { // after every subtest's destroy
		for _, name := range labs {
			if left, err := rt.List(context.Background(), name); err != nil || len(left) > 0 {
				t.Errorf("lab %s: containers left after destroy: %v %v", name, left, err)
			}
		}
	})
	for _, file := range []string{"static.yaml", "static-bgp.yaml", "bgp.yaml"} {
		for _, cloudOnly := range []bool{false, true} {
			name := fmt.Sprintf("%s all containers", file)
			if cloudOnly {
				name = fmt.Sprintf("%s cloud side containers", file)
			}
			t.Run(name, func(t *testing.T) {
				l := labtest.DeployText(t, asContainers(t, file, image, cloudOnly))
				labs = append(labs, l.Topology.Name)
				containers := 0
				for _, n := range l.Plan.Nodes {
					if n.Runtime == topology.RuntimeDocker {
						containers++
					}
				}
				if want := map[bool]int{false: 7, true: 4}[cloudOnly]; containers != want {
					t.Fatalf("%d container nodes, want %d", containers, want)
				}
				conns, err := lab.ReadConns(l.Plan.LabDir)
				if err != nil {
					t.Fatal(err)
				}
				labc := checks.Lab{Topology: l.Topology, Conns: conns, Dir: l.Plan.LabDir}
				for _, r := range checktest.Run(t, labc, checks.For(labc)...) {
					if !r.Passed {
						t.Errorf("%s: %s", r.Check, r.Evidence)
					}
				}
			})
		}
	}
}

func TestContainerLab_DeployWithMissingImage_FailsBeforeMakingAnything(t *testing.T) {
	newRuntime(t)
	text := asContainers(t, "static.yaml", "emu-node:does-not-exist", false)
	topo := labtest.Load(t, labtest.Write(t, labtest.Rename(text, labtest.UniqueName())))
	d := labtest.NewDeployer(t)
	err := d.Deploy(context.Background(), labtest.Plan(t, topo))
	if err == nil || !strings.Contains(err.Error(), "make images") {
		t.Fatalf("deploy with a missing image: %v, want the error to say `make images`", err)
	}
	labtest.AssertNothingLeft(t, topo.Name)
	if rec, _ := d.Store.Get(topo.Name); rec != nil {
		t.Error("a record was left for a lab that was never made")
	}
}

// BenchmarkDeploy7Nodes compares the static scenario's deploy and destroy
// with every node a namespace and with every node a container.
func BenchmarkDeploy7Nodes(b *testing.B) {
	newRuntime(b)
	image := testImage(b)
	for _, runtime := range []string{topology.RuntimeNamespace, topology.RuntimeDocker} {
		b.Run(runtime, func(b *testing.B) {
			text := labtest.Shipped(b, "static.yaml")
			if runtime == topology.RuntimeDocker {
				text = strings.Replace(text, "topology:\n", fmt.Sprintf("topology:\n  defaults: {runtime: docker, image: %q}\n", image), 1)
			}
			var deploy, destroy time.Duration
			for range b.N {
				topo := labtest.Load(b, labtest.Write(b, labtest.Rename(text, labtest.UniqueName())))
				d := labtest.NewDeployer(b)
				p := labtest.Plan(b, topo)
				start := time.Now()
				if err := d.Deploy(context.Background(), p); err != nil {
					b.Fatal(err)
				}
				deploy += time.Since(start)
				start = time.Now()
				if _, err := d.Destroy(topo.Name, true); err != nil {
					b.Fatal(err)
				}
				destroy += time.Since(start)
			}
			b.ReportMetric(deploy.Seconds()/float64(b.N), "deploy-s")
			b.ReportMetric(destroy.Seconds()/float64(b.N), "destroy-s")
		})
	}
}

func TestContainerLab_FailureAfterContainersStarted_RollsBackContainers(t *testing.T) {
	rt := newRuntime(t)
	text := asContainers(t, "static.yaml", testImage(t), false)
	topo := labtest.Load(t, labtest.Write(t, labtest.Rename(text, labtest.UniqueName())))
	d := labtest.NewDeployer(t)
	p := labtest.Plan(t, topo)
	injected := errors.New("injected failure")
	// Fail at the first link: every container exists by then.
	d.BeforeStep = func(_ int, s plan.Step) error {
		if _, ok := s.(plan.Veth); ok {
			if left, _ := rt.List(context.Background(), topo.Name); len(left) != 7 {
				return fmt.Errorf("%d containers before the links, want 7", len(left))
			}
			return injected
		}
		return nil
	}
	if err := d.Deploy(context.Background(), p); !errors.Is(err, injected) {
		t.Fatalf("deploy returned %v, want the injected failure", err)
	}
	if left, err := rt.List(context.Background(), topo.Name); err != nil || len(left) > 0 {
		t.Fatalf("containers left after rollback: %v %v", left, err)
	}
	labtest.AssertNothingLeft(t, topo.Name)
}

func TestContainerLab_ContainerDiesMidDeploy_RolledBack(t *testing.T) {
	rt := newRuntime(t)
	text := asContainers(t, "static.yaml", testImage(t), false)
	topo := labtest.Load(t, labtest.Write(t, labtest.Rename(text, labtest.UniqueName())))
	d := labtest.NewDeployer(t)
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Kill the vbr's container as the routes go in, as `docker kill` would.
	// Steps of a stage run in parallel: kill once.
	var kill sync.Once
	d.BeforeStep = func(_ int, s plan.Step) (err error) {
		if _, ok := s.(plan.Route); ok {
			kill.Do(func() {
				_, err = cli.ContainerKill(context.Background(), plan.NamespaceName(topo.Name, "vbr"), client.ContainerKillOptions{Signal: "KILL"})
			})
		}
		return err
	}
	err = d.Deploy(context.Background(), labtest.Plan(t, topo))
	if err == nil || !strings.Contains(err.Error(), "node vbr") {
		t.Fatalf("deploy with a container killed mid-way: %v, want it to name node vbr", err)
	}
	if left, err := rt.List(context.Background(), topo.Name); err != nil || len(left) > 0 {
		t.Fatalf("containers left after rollback: %v %v", left, err)
	}
	labtest.AssertNothingLeft(t, topo.Name)
}

package container_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/plan"
	"github.com/emu-lab/emu/internal/probe"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/topology"
	"github.com/emu-lab/emu/internal/wiring"
)

// The node image is built once per test run, under a tag of its own, and
// removed when the run ends.
var (
	imageOnce sync.Once
	imageTag  string
	imageErr  error
)

func TestMain(m *testing.M) {
	labtest.AgentMain() // lab tests start this binary as their node agents
	code := m.Run()
	if imageTag != "" {
		if err := removeImage(imageTag); err != nil {
			os.Stderr.WriteString("remove test image: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func removeImage(tag string) error {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return err
	}
	defer cli.Close()
	_, err = cli.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	return err
}

// testImage builds the node image with the program `make images` runs.
func testImage(t testing.TB) string {
	t.Helper()
	imageOnce.Do(func() {
		tag := "emu-node:test-" + randHex()
		cmd := exec.Command("go", "run", "./images/build", "-tag", tag)
		cmd.Dir = filepath.Join("..", "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			imageErr = errors.New(string(out))
			return
		}
		imageTag = tag
	})
	if imageErr != nil {
		t.Fatalf("build the node image: %v", imageErr)
	}
	return imageTag
}

// newRuntime skips a test that has no root or no engine to talk to.
func newRuntime(t testing.TB) *container.Runtime {
	t.Helper()
	testenv.RequireRoot(t, "container nodes are linked under /run/netns")
	rt, err := container.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	testenv.Require(t, rt.Ping(t.Context()), "container tests need a Docker engine")
	return rt
}

// newLab returns a lab name of this test alone; when the test ends, also on
// failure, everything labelled with it is removed and nothing may be left.
func newLab(t testing.TB, rt *container.Runtime) string {
	t.Helper()
	lab := "c" + randHex()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		left, err := rt.List(ctx, lab)
		if err != nil {
			t.Error(err)
		}
		for _, c := range left {
			if err := rt.Remove(ctx, c.Name); err != nil {
				t.Error(err)
			}
		}
		assertNothingLeft(t, rt, lab)
	})
	return lab
}

func randHex() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// assertNothingLeft checks for containers with the lab's label, /run/netns
// entries and mounts of the lab's namespaces.
func assertNothingLeft(t testing.TB, rt *container.Runtime, lab string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left, err := rt.List(ctx, lab)
	if err != nil {
		t.Error(err)
	}
	for _, c := range left {
		t.Errorf("container %s (%s) is left", c.Name, c.State)
	}
	prefix := netnsx.Path(plan.NamespaceName(lab, ""))
	entries, _ := filepath.Glob(prefix + "*")
	for _, e := range entries {
		t.Errorf("namespace entry %s is left", e)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			t.Errorf("mount %s is left", fields[4])
		}
	}
}

func TestContainerNodes_WiredLikeNamespaces_PingAcrossVeth(t *testing.T) {
	rt := newRuntime(t)
	img := testImage(t)
	lab := newLab(t, rt)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	a, err := rt.Create(ctx, lab, "a", img, topology.Software{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := rt.Create(ctx, lab, "b", img, topology.Software{})
	if err != nil {
		t.Fatal(err)
	}
	list, err := rt.List(ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || !list[0].Running() || !list[1].Running() {
		t.Fatalf("List(%s) = %+v, want a and b running", lab, list)
	}

	// emu's wiring, unchanged, on the linked namespaces.
	w := wiring.New()
	defer w.Close()
	if err := w.AddVeth(a.Name, "eth1", b.Name, "eth1", 0); err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{a.Name: "10.9.0.1/30", b.Name: "10.9.0.2/30"}
	for ns, p := range addrs {
		if err := w.AddAddress(ns, "eth1", wiring.IPNet(netip.MustParsePrefix(p))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := probe.Ping(a.Name, netip.MustParseAddr("10.9.0.2"), 2*time.Second); err != nil {
		t.Fatalf("ping from container a to container b: %v", err)
	}
	// The container sees the interface emu moved in: it is the same namespace.
	var names []string
	err = netnsx.Do(b.Name, func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil || !strings.Contains(strings.Join(names, " "), "eth1") {
		t.Fatalf("interfaces in %s: %v %v, want eth1", b.Name, names, err)
	}
	if ip, err := exec.LookPath("ip"); err == nil {
		out, err := exec.Command(ip, "netns", "exec", a.Name, ip, "-br", "addr", "show", "eth1").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "10.9.0.1/30") {
			t.Errorf("ip netns exec %s: %s %v", a.Name, out, err)
		}
	}
	w.Close()

	for _, c := range []container.Container{a, b, a} { // the second a: idempotent
		if err := rt.Remove(ctx, c.Name); err != nil {
			t.Fatalf("remove %s: %v", c.Name, err)
		}
	}
	assertNothingLeft(t, rt, lab)
}

func TestContainerNode_KilledExternally_ReportedDead(t *testing.T) {
	rt := newRuntime(t)
	img := testImage(t)
	lab := newLab(t, rt)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := rt.Create(ctx, lab, "a", img, topology.Software{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Check(ctx, c.Name); err != nil {
		t.Fatalf("fresh container: %v", err)
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil { // as `docker kill` would
		t.Fatal(err)
	}
	var dead *container.DeadError
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err = rt.Check(ctx, c.Name)
		if errors.As(err, &dead) || time.Now().After(deadline) {
			break
		}
	}
	if dead == nil {
		t.Fatalf("Check after kill = %v, want a DeadError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, c.Name+" is exited (exit code 137") || !strings.Contains(msg, "deploy it again") {
		t.Errorf("error %q should name the container, its state and the fix", msg)
	}
	// The link still holds the namespace: only Remove frees it.
	if !wiring.NamespaceExists(c.Name) {
		t.Errorf("namespace %s vanished with its container", c.Name)
	}
	if err := rt.Remove(ctx, c.Name); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, rt, lab)
}

func TestContainerNode_RestartedExternally_ReportedUnwired(t *testing.T) {
	rt := newRuntime(t)
	img := testImage(t)
	lab := newLab(t, rt)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := rt.Create(ctx, lab, "a", img, topology.Software{})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.ContainerRestart(ctx, c.ID, client.ContainerRestartOptions{}); err != nil { // as `docker restart` would
		t.Fatal(err)
	}
	if err := rt.Check(ctx, c.Name); err == nil || !strings.Contains(err.Error(), "new network namespace") {
		t.Fatalf("Check after restart = %v, want the namespace mismatch", err)
	}
	if err := rt.Remove(ctx, c.Name); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, rt, lab)
}

func TestContainerNode_MissingImage_SaysMakeImages(t *testing.T) {
	rt := newRuntime(t)
	lab := newLab(t, rt)
	missing := "emu-node:missing-" + randHex()
	err := rt.ImageExists(t.Context(), missing)
	if !errors.Is(err, container.ErrNoImage) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "`make images`") {
		t.Fatalf("ImageExists(%s) = %v, want ErrNoImage naming the image and `make images`", missing, err)
	}
	if _, err := rt.Create(t.Context(), lab, "a", missing, topology.Software{}); !errors.Is(err, container.ErrNoImage) {
		t.Fatalf("Create with %s = %v, want ErrNoImage", missing, err)
	}
	assertNothingLeft(t, rt, lab)
}

func TestRemove_ContainerWithoutEmuLabel_LeftAlone(t *testing.T) {
	rt := newRuntime(t)
	img := testImage(t)
	lab := newLab(t, rt)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	name := plan.NamespaceName(lab, "a")
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Created as a user would, with emu's name but without its labels.
	foreign, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config:     &dcontainer.Config{Image: img, Labels: map[string]string{"emu.test": lab}},
		HostConfig: &dcontainer.HostConfig{NetworkMode: "none"},
		Name:       name,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.ContainerRemove(context.Background(), foreign.ID, client.ContainerRemoveOptions{Force: true})
	if err := rt.Remove(ctx, name); err == nil || !strings.Contains(err.Error(), "emu did not create it") {
		t.Fatalf("Remove(%s) = %v, want a refusal", name, err)
	}
	if _, err := rt.Create(ctx, lab, "a", img, topology.Software{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Create over a foreign container = %v, want a refusal", err)
	}
	if _, err := cli.ContainerInspect(ctx, foreign.ID, client.ContainerInspectOptions{}); err != nil {
		t.Fatalf("the foreign container is gone: %v", err)
	}
}

func TestPing_NoEngine_SaysHowToStartIt(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	rt, err := container.New()
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	err = rt.Ping(t.Context())
	want := "no Docker engine answers at unix:///nonexistent/docker.sock: start it (systemctl start docker) or use runtime: namespace"
	if err == nil || err.Error() != want {
		t.Fatalf("Ping = %v, want %q", err, want)
	}
}

// BenchmarkCreate compares a node as a container with a node as a plain
// namespace: create, link and remove.
func BenchmarkCreate(b *testing.B) {
	rt := newRuntime(b)
	img := testImage(b)
	lab := newLab(b, rt)
	ctx := context.Background()
	b.Run("container", func(b *testing.B) {
		var create, remove time.Duration
		for b.Loop() {
			start := time.Now()
			c, err := rt.Create(ctx, lab, "n", img, topology.Software{})
			if err != nil {
				b.Fatal(err)
			}
			create += time.Since(start)
			start = time.Now()
			if err := rt.Remove(ctx, c.Name); err != nil {
				b.Fatal(err)
			}
			remove += time.Since(start)
		}
		b.ReportMetric(float64(create.Milliseconds())/float64(b.N), "create-ms/op")
		b.ReportMetric(float64(remove.Milliseconds())/float64(b.N), "remove-ms/op")
	})
	b.Run("namespace", func(b *testing.B) {
		name := plan.NamespaceName(lab, "n")
		b.Cleanup(func() { wiring.DeleteNamespace(name) })
		for b.Loop() {
			w := wiring.New()
			if err := w.CreateNamespace(name, true, false); err != nil {
				b.Fatal(err)
			}
			w.Close()
			if err := wiring.DeleteNamespace(name); err != nil {
				b.Fatal(err)
			}
		}
	})
}

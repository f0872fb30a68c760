package container_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/internal/wiring"
)

// shellImage builds a FROM scratch image holding busybox (the host's static
// one) as sh, ip, cat and sleep: a user's image, with a shell for exec.
func shellImage(t *testing.T, rt *container.Runtime) string {
	t.Helper()
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("no static /bin/busybox to build a test image from")
	}
	dir := t.TempDir()
	df := "FROM scratch\n"
	for _, app := range []string{"sh", "ip", "cat", "sleep"} {
		if err := os.WriteFile(filepath.Join(dir, app), busybox, 0o755); err != nil {
			t.Fatal(err)
		}
		df += "COPY " + app + " /bin/" + app + "\n"
	}
	df += "ENTRYPOINT [\"/bin/sleep\", \"1000000\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "emu-test-shell:" + randHex()
	if err := rt.BuildImage(t.Context(), tag, dir, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeImage(tag); err != nil {
			t.Error(err)
		}
	})
	return tag
}

const dockerSoftware = `
name: lab
topology:
  defaults: {kind: linux, runtime: docker, image: IMAGE}
  nodes:
    R1:
      binds: [conf:/mnt/conf:ro]
      env: {ROLE: first}
      exec:
        - ip addr add 10.9.0.1/24 dev eth1
        - ip link set eth1 up
        - cat /mnt/conf/x > /seen; echo $ROLE >> /seen
    R2:
      exec: [ip addr add 10.9.0.2/24 dev eth1, ip link set eth1 LAST]
  links:
    - endpoints: ["R1:eth1", "R2:eth1"]
`

func writeDockerLab(t *testing.T, image, last string) string {
	t.Helper()
	text := strings.NewReplacer("IMAGE", image, "LAST", last).Replace(dockerSoftware)
	path := labtest.Write(t, labtest.Rename(text, labtest.UniqueName()))
	conf := filepath.Join(filepath.Dir(path), "conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "x"), []byte("bound\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestContainerNode_LinuxKind_ExecBindsEnvAsInNamespaceNodes(t *testing.T) {
	rt := newRuntime(t)
	l := labtest.DeployFile(t, writeDockerLab(t, shellImage(t, rt), "up"))
	out, code, err := rt.Exec(context.Background(), l.NS("R1"), "cat /seen")
	if err != nil || code != 0 || out != "bound\nfirst\n" {
		t.Errorf("R1 saw %q (exit %d, %v), want its bind and env: %q", out, code, err, "bound\nfirst\n")
	}
	// The veth's carrier comes up a moment after both ends are set up.
	var ifs []wiring.InterfaceState
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ifs, err = wiring.Interfaces(l.NS("R2")); err == nil && len(ifs) > 0 && ifs[0].State == "up" {
			break
		}
	}
	if err != nil || len(ifs) == 0 || !strings.Contains(strings.Join(ifs[0].Addrs, " "), "10.9.0.2/24") || ifs[0].State != "up" {
		t.Errorf("R2 interfaces %+v (%v): its exec did not configure eth1", ifs, err)
	}
}

func TestContainerNode_ExecFails_DeployFailsWithFileLine_AndRollsBack(t *testing.T) {
	rt := newRuntime(t)
	path := writeDockerLab(t, shellImage(t, rt), "upp")
	topo := labtest.Load(t, path)
	err := labtest.NewDeployer(t).Deploy(context.Background(), labtest.Plan(t, topo))
	want := path + `:14: node R2 exec "ip link set eth1 upp" failed (exit status`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("deploy error = %v\nwant it to say %q", err, want)
	}
	labtest.AssertNothingLeft(t, topo.Name)
	if left, err := rt.List(context.Background(), topo.Name); err != nil || len(left) > 0 {
		t.Errorf("containers left after the rollback: %v %v", left, err)
	}
}

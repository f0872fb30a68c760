package labtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/moby/client"

	"github.com/emu-lab/emu/internal/container"
	"github.com/emu-lab/emu/internal/testenv"
)

// ShellImage builds a user's image for container nodes, FROM scratch with
// the host's static busybox as sh, ip, cat and sleep, and removes it when
// the test ends. It needs root and a Docker engine (skipped without them,
// failed under make test) and a static /bin/busybox (likewise).
func ShellImage(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t, "container nodes are linked under /run/netns")
	rt, err := container.New()
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	testenv.Require(t, rt.Ping(context.Background()), "container tests need a Docker engine")
	busybox, err := os.ReadFile("/bin/busybox")
	testenv.Require(t, err, "a static /bin/busybox to build a test image from (apt-get install busybox-static; scripts/setup.sh does)")
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
	b := make([]byte, 4)
	rand.Read(b)
	tag := "emu-test-shell:" + hex.EncodeToString(b)
	if err := rt.BuildImage(context.Background(), tag, dir, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cli, err := client.New(client.FromEnv)
		if err == nil {
			defer cli.Close()
			_, err = cli.ImageRemove(context.Background(), tag, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		}
		if err != nil {
			t.Errorf("remove image %s: %v", tag, err)
		}
	})
	return tag
}

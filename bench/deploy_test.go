package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emu-lab/emu/internal/netnsx"
	"github.com/emu-lab/emu/internal/testenv"
	"github.com/emu-lab/emu/internal/wiring"
)

// newRunner skips unless root, and removes everything the runner made when
// the test ends, also after Ctrl-C (which cancels the returned context).
func newRunner(tb testing.TB) (*Runner, context.Context) {
	tb.Helper()
	testenv.RequireRoot(tb, "creates network namespaces")
	r, err := NewRunner()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	tb.Cleanup(func() {
		stop()
		if err := r.Close(); err != nil {
			tb.Error(err)
		}
	})
	return r, ctx
}

func staticLab(tb testing.TB) Lab {
	l, err := FileLab("static", "../topologies/static.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func settle(tb testing.TB, ctx context.Context) {
	if _, err := Settle(ctx, 2*time.Minute); err != nil {
		tb.Fatal(err)
	}
}

// tool is one way to deploy and destroy a lab.
type tool struct {
	name    string
	deploy  func(*Runner, context.Context, Lab) (Deployed, error)
	destroy func(*Runner, context.Context, Deployed) (time.Duration, error)
}

var tools = []tool{
	{"emu", (*Runner).EmuDeploy, func(r *Runner, _ context.Context, d Deployed) (time.Duration, error) { return r.EmuDestroy(d) }},
	{"shell", (*Runner).ShellDeploy, (*Runner).ShellDestroy},
}

// BenchmarkDeploy times the deploy of the 7-node scenario (the destroy and
// the kernel's teardown after it are outside the timer).
func BenchmarkDeploy(b *testing.B) {
	for _, t := range tools {
		b.Run(t.name, func(b *testing.B) {
			r, ctx := newRunner(b)
			l := staticLab(b)
			settle(b, ctx)
			b.ResetTimer()
			for range b.N {
				dep, err := t.deploy(r, ctx, l)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := t.destroy(r, ctx, dep); err != nil {
					b.Fatal(err)
				}
				settle(b, ctx)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDestroy times the destroy of the 7-node scenario as the command
// returns; the kernel finishes the teardown later, outside the timer.
func BenchmarkDestroy(b *testing.B) {
	for _, t := range tools {
		b.Run(t.name, func(b *testing.B) {
			r, ctx := newRunner(b)
			l := staticLab(b)
			settle(b, ctx)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				dep, err := t.deploy(r, ctx, l)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				_, err = t.destroy(r, ctx, dep)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				settle(b, ctx)
				b.StartTimer()
			}
		})
	}
}

// The comparison is fair only if the shell script builds what emu builds:
// same interfaces, states and addresses, same routes, same sysctls, per node.
func TestScript_BuildsWhatEmuBuilds(t *testing.T) {
	r, ctx := newRunner(t)
	for _, l := range []Lab{staticLab(t), Chain(3)} {
		t.Run(l.Label, func(t *testing.T) {
			emu, err := r.EmuDeploy(ctx, l)
			if err != nil {
				t.Fatal(err)
			}
			defer r.EmuDestroy(emu)
			shell, err := r.ShellDeploy(ctx, l)
			if err != nil {
				t.Fatal(err)
			}
			defer r.ShellDestroy(ctx, shell)
			for i := range emu.namespaces {
				want, got := snapshot(t, emu.namespaces[i]), snapshot(t, shell.namespaces[i])
				if want != got {
					t.Errorf("node %d differs:\nemu (%s):\n%s\nshell (%s):\n%s", i, emu.namespaces[i], want, shell.namespaces[i], got)
				}
			}
		})
	}
}

// snapshot is the state of a namespace that a deploy sets, in a form
// independent of the namespace's name and of MAC addresses.
func snapshot(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	ifs, err := wiring.Interfaces(ns)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ifs, func(a, b wiring.InterfaceState) int { return strings.Compare(a.Name, b.Name) })
	for _, i := range ifs {
		fmt.Fprintf(&b, "link %s %s %v\n", i.Name, i.State, i.Addrs)
	}
	routes, err := exec.Command("ip", "-n", ns, "route", "show").Output()
	if err != nil {
		t.Fatalf("ip -n %s route: %v", ns, err)
	}
	b.Write(routes)
	err = netnsx.Do(ns, func() error {
		for _, s := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"} {
			v, err := os.ReadFile("/proc/sys/" + s)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "sysctl %s=%s", s, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

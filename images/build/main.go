// Command build builds the image of container nodes (`make images`, run from
// the repository root): it compiles emu and the pause init statically into a
// fresh build context beside images/Dockerfile and has the Docker engine
// build it through its API.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"

	"github.com/emu-lab/emu/internal/container"
)

func main() {
	tag := flag.String("tag", container.Image, "tag of the image to build")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *tag); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, tag string) error {
	dockerfile, err := os.ReadFile(filepath.Join("images", "Dockerfile"))
	if err != nil {
		return fmt.Errorf("%w: run from the root of the emu source tree (make images)", err)
	}
	rt, err := container.New()
	if err != nil {
		return err
	}
	defer rt.Close()
	if err := rt.Ping(ctx); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "emu-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), dockerfile, 0o644); err != nil {
		return err
	}
	for _, b := range []struct{ out, pkg string }{{"emu", "./cmd/emu"}, {"pause", "./images/pause"}} {
		// Static, so that FROM scratch needs no libc.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b.pkg, err)
		}
	}
	if err := rt.BuildImage(ctx, tag, dir, os.Stdout); err != nil {
		return err
	}
	// FROM scratch: the image is its two files, so the README need not
	// carry a size that drifts with every change to emu.
	var size int64
	for _, f := range []string{"emu", "pause"} {
		info, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		size += info.Size()
	}
	fmt.Printf("built %s: %.1f MB (the static emu and pause binaries)\n", tag, float64(size)/1e6)
	return nil
}

package container

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
)

// BuildImage builds the image tag from the Dockerfile in contextDir, sending
// the directory to the engine as a tar stream: no docker CLI is involved.
// The builder's output goes to out, if not nil.
func (r *Runtime) BuildImage(ctx context.Context, tag, contextDir string, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDir(pw, contextDir)) }()
	defer pr.Close()
	resp, err := r.cli.ImageBuild(ctx, pr, client.ImageBuildOptions{
		Tags:       []string{tag},
		Dockerfile: "Dockerfile",
		// The classic builder: BuildKit over the API needs a client-side
		// session, and a FROM scratch image gains nothing from it.
		Version:     build.BuilderV1,
		Remove:      true,
		ForceRemove: true,
	})
	if err != nil {
		return fmt.Errorf("build image %s: %w", tag, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		err := dec.Decode(&msg)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("build image %s: read the engine's answer: %w", tag, err)
		}
		if msg.Error != "" {
			return fmt.Errorf("build image %s from %s: %s", tag, contextDir, msg.Error)
		}
		io.WriteString(out, msg.Stream)
	}
}

// tarDir writes the files under dir as a tar stream with paths relative to
// dir, owned by root, as `docker build` sends its context.
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("build context %s: %w", path, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("send build context %s: %w", dir, err)
	}
	return tw.Close()
}

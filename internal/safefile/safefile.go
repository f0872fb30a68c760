// Package safefile writes the files emu keeps in a lab directory without
// ever writing through a symlink or into a file someone else prepared
// there: a link planted at a file's name (`ln -s /etc/x emu-lab/nodes/a.json`)
// is replaced or refused, never followed. It reads them back the same way:
// a FIFO, device or link planted there is refused, never waited on. The
// directories themselves are checked by the caller (lab's checked-directory
// helper).
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Create replaces whatever is at path (a file of other permissions, a
// symlink) by a new empty file with mode perm, open for writing. The old
// entry is unlinked, never written through; O_EXCL|O_NOFOLLOW make the
// create fail rather than follow a link planted between the unlink and it.
func Create(path string, perm fs.FileMode) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("replace %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return f, nil
}

// WriteFile replaces the file at path by a new one holding data, as
// Create does.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// TmpPath is the temporary file Replace writes before it renames it over
// path: whoever cleans up after a killed writer removes it.
func TmpPath(path string) string { return path + ".tmp" }

// Replace replaces path atomically: data goes into TmpPath(path), made as
// WriteFile does, which is then renamed over path (a rename replaces a
// symlink at path, never follows it). A reader never sees half a file.
func Replace(path string, data []byte, perm fs.FileMode) error {
	tmp := TmpPath(path)
	if err := WriteFile(tmp, data, perm); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// OpenAppend opens a log file for appending, creating it with mode perm;
// a symlink at path is refused (ELOOP), not followed.
func OpenAppend(path string, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	return f, nil
}

// MaxRead bounds what ReadFile reads of one of emu's own files, in bytes: a
// state file of an agent with 256 connections is under 1 MiB.
const MaxRead = 64 << 20

// ReadFile returns the contents of one of the files emu keeps in a lab
// directory. It opens without following a symlink (O_NOFOLLOW) and without
// blocking (O_NONBLOCK), and refuses anything but a regular file of at most
// MaxRead bytes: a FIFO planted at the name fails at once instead of
// hanging the reader. A missing file's error matches fs.ErrNotExist.
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("read %s: a symlink, not the file emu wrote: remove it (emu never follows one)", path)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("read %s: not a regular file (%s), not the file emu wrote: remove it", path, info.Mode().Type())
	}
	// The file may grow after the stat: read one byte past the limit to see.
	data, err := io.ReadAll(io.LimitReader(f, MaxRead+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxRead {
		return nil, fmt.Errorf("read %s: over %d MiB, not a file emu wrote", path, MaxRead>>20)
	}
	return data, nil
}

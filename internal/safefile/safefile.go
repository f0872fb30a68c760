// Package safefile writes the files emu keeps in a lab directory without
// ever writing through a symlink or into a file someone else prepared
// there: a link planted at a file's name (`ln -s /etc/x emu-lab/nodes/a.json`)
// is replaced or refused, never followed. The directories themselves are
// checked by the caller (lab's checked-directory helper).
package safefile

import (
	"errors"
	"fmt"
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

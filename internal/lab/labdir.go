package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The lab directory holds keys (SPEC §12): emu writes into it only when it is
// a real directory (not a symlink), owned by the user running emu (root), that
// no one else can write, inside a parent where no one else can replace it.
// Every file emu writes there goes through package safefile: created afresh,
// exclusively (secrets with mode 0600), never through a symlink.

// checkOwnDir returns whether dir exists, and an error saying what is wrong
// with it if emu must not write into it.
func checkOwnDir(dir string) (exists bool, err error) {
	info, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lab directory %s: %w", dir, err)
	}
	if err := ownDirProblem(dir, info); err != nil {
		return true, err
	}
	return true, nil
}

// ownDirProblem says why emu must not trust the directory described by info.
func ownDirProblem(dir string, info fs.FileInfo) error {
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symlink: emu writes keys there and never follows a link: remove it (`rm %s`) and deploy again", dir, dir)
	case !info.IsDir():
		return fmt.Errorf("%s is not a directory: move it away and deploy again", dir)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: cannot read its owner", dir)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to the user running emu (uid %d): emu writes keys there and will not reuse a directory another user made: remove it (`rm -r %s`) and deploy again", dir, st.Uid, os.Geteuid(), dir)
	}
	if info.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by other users (mode %04o): they could swap the key files: remove it (`rm -r %s`) or `chmod go-w %s`, and deploy again", dir, info.Mode().Perm(), dir, dir)
	}
	return nil
}

// checkParent refuses a lab directory whose parent lets other users rename
// it away and put their own in its place: writable by others without the
// sticky bit (/tmp has it, so a topology in /tmp is fine).
func checkParent(dir string) error {
	parent := filepath.Dir(dir)
	info, err := os.Stat(parent)
	if err != nil {
		return fmt.Errorf("directory of the lab %s: %w", parent, err)
	}
	if info.Mode().Perm()&0o022 != 0 && info.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("%s is writable by other users and not sticky (mode %04o): they could replace the lab directory %s, which holds keys: keep the topology in a directory only you can write (or `chmod +t %s`)", parent, info.Mode().Perm(), filepath.Base(dir), parent)
	}
	return nil
}

// checkLabDir refuses a lab directory emu must not write into, before
// anything is made.
func checkLabDir(dir string) error {
	if err := checkParent(dir); err != nil {
		return err
	}
	_, err := checkOwnDir(dir)
	return err
}

// ownDir makes the lab directory or a directory inside it, recorded first so
// a rollback removes it, or reuses it if emu can trust it. Concurrent callers
// for one directory are fine.
func ownDir(j *journal, dir string, perm fs.FileMode) error {
	exists, err := checkOwnDir(dir)
	if err != nil || exists {
		return err
	}
	if err := j.add(Entry{Kind: "dir", Name: dir}); err != nil {
		return err
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			_, err = checkOwnDir(dir)
			return err
		}
		return fmt.Errorf("create %s: %w", dir, err)
	}
	// Mkdir's mode goes through the umask; a umask cannot widen it, but make
	// it exact so the directory passes checkOwnDir next time.
	return os.Chmod(dir, perm)
}

// rotateLogs moves the previous deploy's logs/ to logs.1 (replacing an
// older logs.1), so this deploy's logs start empty: a panic logged by the
// last lab must not read as this one's. Its agents, keepers and daemons
// then create logs/ afresh.
func rotateLogs(labDir string) error {
	logs := filepath.Join(labDir, "logs")
	exists, err := checkOwnDir(logs)
	if err != nil || !exists {
		return err
	}
	if err := removeLabDir(logs + ".1"); err != nil {
		return fmt.Errorf("remove the logs of the deploy before last: %w", err)
	}
	if err := os.Rename(logs, logs+".1"); err != nil {
		return fmt.Errorf("keep the previous deploy's logs: %w", err)
	}
	return nil
}

// MarkerFile, in a lab directory, says emu created that directory. Without
// a lab's record (after a reboot, or a destroy without --cleanup), it is
// how --cleanup tells emu's directory from one a user made with the same
// name.
const MarkerFile = ".emu-lab"

// NotEmuDirError refuses to remove a lab directory that carries no
// MarkerFile: emu did not create it.
type NotEmuDirError struct{ Dir string }

func (e *NotEmuDirError) Error() string {
	return fmt.Sprintf("left %s and everything in it: it has no %s marker, so emu did not create it (or an emu older than the marker did): look inside and remove it yourself (`rm -r %s`) if it is yours to delete", e.Dir, MarkerFile, e.Dir)
}

// removeMarkedLabDir removes a lab directory emu created, as its MarkerFile
// says, and refuses any other with *NotEmuDirError. A directory already
// gone is fine.
func removeMarkedLabDir(dir string) error {
	if !exists(dir) {
		return nil
	}
	if info, err := os.Lstat(filepath.Join(dir, MarkerFile)); err != nil || !info.Mode().IsRegular() {
		return &NotEmuDirError{Dir: dir}
	}
	return removeLabDir(dir)
}

// removeLabDir removes a lab directory or one of its subdirectories,
// refusing anything that does not look like one emu made, so a damaged
// record or a stray -t can never make emu delete a user's files. A symlink
// is removed, not followed.
func removeLabDir(dir string) error {
	isLabDir := func(d string) bool { return strings.HasPrefix(filepath.Base(d), "emu-") }
	if !filepath.IsAbs(dir) || !(isLabDir(dir) || isLabDir(filepath.Dir(dir))) {
		return fmt.Errorf("refusing to remove %q: not an emu lab directory", dir)
	}
	info, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove lab directory: %w", err)
	}
	if info.IsDir() {
		if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
			return fmt.Errorf("refusing to remove %s: it belongs to uid %d, so emu did not make it", dir, st.Uid)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove lab directory: %w%s", err, leftIn(dir))
	}
	return nil
}

// leftIn names what a failed removal left under dir (at most 5 paths), so
// the error says what was written there meanwhile, or what could not go.
func leftIn(dir string) string {
	var left []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, path)
		}
		if len(left) == 5 {
			return filepath.SkipAll
		}
		return nil
	})
	if len(left) == 0 {
		return ""
	}
	return fmt.Sprintf(" (left there: %s)", strings.Join(left, ", "))
}

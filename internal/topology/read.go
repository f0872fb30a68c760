package topology

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// MaxFileSize bounds a topology file, in bytes. The shipped scenarios are
// under 4 KiB; a lab of a thousand nodes stays under 1 MiB. A bound keeps a
// path like /dev/zero or a runaway generator from exhausting memory.
const MaxFileSize = 1 << 20

// ReadFile returns the bytes of the topology file at path, bounded and
// refused as Load does (errors are *Error).
func ReadFile(path string) ([]byte, error) { return readFile(path) }

// readFile returns the bytes of the topology file at path. It refuses
// anything but a regular file of at most MaxFileSize bytes, and opens
// without blocking, so a FIFO is refused instead of waiting for a writer.
// Its errors are *Error, so the CLI exits 2 (fix the input).
func readFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("read topology: %v (give the path of a .yaml file with -t)", err)}
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("read topology: %v", err)}
	}
	if !info.Mode().IsRegular() {
		return nil, &Error{File: path, Msg: fmt.Sprintf("not a regular file (%s): a topology is a .yaml file", fileType(info.Mode()))}
	}
	if info.Size() > MaxFileSize {
		return nil, tooBig(path, info.Size())
	}
	// The file may grow after the stat: read one byte past the limit to see.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("read topology: %v", err)}
	}
	if len(data) > MaxFileSize {
		return nil, tooBig(path, int64(len(data)))
	}
	return data, nil
}

func tooBig(path string, size int64) *Error {
	return &Error{File: path, Msg: fmt.Sprintf("%d bytes or more, over the limit of %d bytes (1 MiB) for a topology file: split the lab, or check that -t names the right file", size, MaxFileSize)}
}

func fileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}

package fault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/emu-lab/emu/internal/wiring"
)

// A check's fault (ByCheck) is held by the check while it runs: a write
// lock on <lab dir>/faults/<namespace>.<connection>.check. The kernel drops
// the lock when the holder's process ends, however it ends (SIGKILL, a CI
// runner's kill), so a check table with no lock held was left by a check
// that did not finish, and nothing names a pid that could be reused. The
// lock is an open file description lock (fcntl(2) F_OFD_SETLK), not the
// flock the lab store takes, because F_OFD_GETLK tests it without taking
// it: `emu fault` and `emu inspect` looking never make a starting check
// fail.
//
// The file holds the holder's pid on its first line, only to name it to
// the user, then one JSON line per route the check is about to withdraw
// (method 1's manual step), written before it withdraws them: a check
// killed after that step left them withdrawn, and the next holder reads
// what to restore there (whether each is still withdrawn is read live).
// A holder that ends with no route recorded removes the file while it
// still holds the lock; a taker that locked a file which is no longer the
// one at the path (removed under it) opens the path again, so two checks
// never hold two files of the same name at once.

// CheckHold is a process's hold on the check fault of one connection: while
// it is held, no other process removes that fault as left over.
type CheckHold struct {
	f      *os.File
	path   string
	routes []CheckRoute // recorded in the file
}

// CheckRoute is a route a check withdrew from a VPC route table (method
// 1's manual step), as recorded in its hold before the withdrawal: Node
// (the vpc node) and Namespace hold it, Gateway (the vpn-gateway) published
// it, By names the check's connection, NODE:CONNECTION.
type CheckRoute struct {
	Node      string       `json:"node"`
	Namespace string       `json:"namespace"`
	Dst       netip.Prefix `json:"dst"`
	Via       netip.Addr   `json:"via"`
	Dev       string       `json:"dev,omitempty"`
	Metric    int          `json:"metric,omitempty"`
	Gateway   string       `json:"gateway"`
	By        string       `json:"by"`
}

// String is "DST via VIA" (or "dev DEV"), with " metric N" if not 0.
func (r CheckRoute) String() string {
	s := r.Dst.String()
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Metric != 0 {
		s += " metric " + strconv.Itoa(r.Metric)
	}
	return s
}

// HeldError says a running `emu check --failover` holds the check fault of
// a connection.
type HeldError struct {
	Conn string
	PID  int // the holder's, as it wrote it; 0 if not written yet
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("connection %s is held by an `emu check --failover` running now (%s): it removes its fault when it ends", e.Conn, e.Holder())
}

// Holder names the holding process: "pid N", or "pid unknown".
func (e *HeldError) Holder() string { return pidText(e.PID) }

func pidText(pid int) string {
	if pid <= 0 {
		return "pid unknown"
	}
	return "pid " + strconv.Itoa(pid)
}

func holdPath(dir, ns, conn string) string {
	return filepath.Join(dir, "faults", ns+"."+conn+".check")
}

// HoldCheck takes the hold on the check fault of conn in namespace ns of the
// lab whose directory is dir, without waiting: *HeldError if a running
// process holds it. The routes a holder before it recorded stay recorded
// (LeftRoutes).
func HoldCheck(dir, ns, conn string) (*CheckHold, error) {
	if dir == "" {
		return nil, fmt.Errorf("hold the check's fault of %s in %s: no lab directory to hold it in", conn, ns)
	}
	path := holdPath(dir, ns, conn)
	// Never through a symlink (SPEC §12): the faults directory is made in
	// the lab directory only if that one exists (a lab destroyed meanwhile
	// is not made again), and the hold file is opened with O_NOFOLLOW.
	if err := os.Mkdir(filepath.Dir(path), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("hold the check's fault of %s: %w", conn, err)
	}
	if info, err := os.Lstat(filepath.Dir(path)); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("hold the check's fault of %s: %s is not a directory (a symlink?): emu writes there only into a real directory: remove it", conn, filepath.Dir(path))
	}
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return nil, fmt.Errorf("hold the check's fault of %s: %w (a symlink there is never followed: remove it)", conn, err)
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			f.Close()
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
				return nil, &HeldError{Conn: conn, PID: readPID(path)}
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !samePath(f, path) {
			f.Close() // its holder removed it as it ended: take the new one
			continue
		}
		h := &CheckHold{f: f, path: path}
		data, err := io.ReadAll(io.LimitReader(f, maxHoldFile))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if h.routes, err = parseRoutes(data); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w (remove the file if no check runs on the lab)", path, err)
		}
		if err := h.write(); err != nil {
			f.Close()
			return nil, err
		}
		return h, nil
	}
}

// samePath reports whether f is still the file at path.
func samePath(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	pi, err := os.Stat(path)
	return err == nil && os.SameFile(fi, pi)
}

// write puts this process's pid and the recorded routes in the file.
func (h *CheckHold) write() error {
	var b bytes.Buffer
	b.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	for _, r := range h.routes {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		b.Write(append(line, '\n'))
	}
	if err := h.f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", h.path, err)
	}
	if _, err := h.f.WriteAt(b.Bytes(), 0); err != nil {
		return fmt.Errorf("write %s: %w", h.path, err)
	}
	return nil
}

// RecordRoutes records, before the check withdraws them, the routes it is
// about to withdraw, with those recorded already: a check killed after the
// withdrawal left them withdrawn, and whoever takes the hold next restores
// them (RemoveLeftCheck).
func (h *CheckHold) RecordRoutes(rs []CheckRoute) error {
	for _, r := range rs {
		if !slices.Contains(h.routes, r) {
			h.routes = append(h.routes, r)
		}
	}
	return h.write()
}

// ForgetRoutes clears the record once the routes are restored.
func (h *CheckHold) ForgetRoutes() error {
	h.routes = nil
	return h.write()
}

// LeftRoutes lists the recorded routes still withdrawn now (read over
// netlink): those a check that did not finish left, when the hold was just
// taken.
func (h *CheckHold) LeftRoutes() ([]CheckRoute, error) { return withdrawn(h.routes, "") }

// Release lets the hold go; the kernel does the same when the process ends.
// With no route recorded the file goes first, while still locked: a taker
// that opened it meanwhile sees it is no longer at its path (HoldCheck).
func (h *CheckHold) Release() {
	if h == nil {
		return
	}
	if len(h.routes) == 0 {
		os.Remove(h.path)
	}
	h.f.Close()
}

// CheckHolder returns the pid of the running process holding the check
// fault of conn in ns (0 if it has not written it yet), and whether one
// holds it at all: false means a check table there was left by a check
// that did not finish.
func CheckHolder(dir, ns, conn string) (pid int, held bool, err error) {
	if dir == "" {
		return 0, false, nil
	}
	return holder(holdPath(dir, ns, conn))
}

func holder(path string) (pid int, held bool, err error) {
	for {
		f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if errors.Is(err, os.ErrNotExist) {
			return 0, false, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("read the hold %s: %w", path, err)
		}
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		err = unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk)
		same := samePath(f, path)
		f.Close()
		if err != nil {
			return 0, false, fmt.Errorf("test the lock %s: %w", path, err)
		}
		if lk.Type != unix.F_UNLCK {
			return readPID(path), true, nil
		}
		if same || !fileExists(path) {
			return 0, false, nil
		}
		// Removed and made again while we looked: look at the new one.
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readNoFollow reads a hold file, never through a symlink (SPEC §12).
func readNoFollow(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxHoldFile))
}

// maxHoldFile bounds what is read of a hold file: a pid and a few routes.
const maxHoldFile = 1 << 20

func readPID(path string) int {
	data, _ := readNoFollow(path)
	first, _, _ := strings.Cut(string(data), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

// parseRoutes reads the routes recorded after a hold file's pid line.
func parseRoutes(data []byte) ([]CheckRoute, error) {
	lines := strings.Split(string(data), "\n")
	var out []CheckRoute
	for i, line := range lines[1:] {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r CheckRoute
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("line %d: not a recorded route: %w", i+2, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// withdrawn returns those of rs (in namespace ns, or any if ns is empty)
// not in their namespace's main table now.
func withdrawn(rs []CheckRoute, ns string) ([]CheckRoute, error) {
	var out []CheckRoute
	live := map[string][]wiring.RouteState{}
	for _, r := range rs {
		if ns != "" && r.Namespace != ns {
			continue
		}
		routes, ok := live[r.Namespace]
		if !ok {
			var err error
			if routes, err = wiring.Routes(r.Namespace); err != nil {
				return nil, err
			}
			live[r.Namespace] = routes
		}
		if !slices.ContainsFunc(routes, r.matches) {
			out = append(out, r)
		}
	}
	return out, nil
}

// matches reports whether a live route is r: same destination and metric,
// through r's next hop.
func (r CheckRoute) matches(s wiring.RouteState) bool {
	return s.Dst == r.Dst.String() && s.Metric == r.Metric &&
		(!r.Via.IsValid() || slices.Contains(s.Via, r.Via.String())) &&
		(r.Dev == "" || slices.Contains(s.Dev, r.Dev))
}

// LeftCheck is what RemoveLeftCheck removed of what a check that did not
// finish left: its table, and the routes it withdrew, restored.
type LeftCheck struct {
	Table  bool
	Routes []CheckRoute
}

// Any reports whether anything was left.
func (l LeftCheck) Any() bool { return l.Table || len(l.Routes) > 0 }

// RemoveLeftCheck removes what a check that did not finish left on conn in
// ns, if no running check holds it: its table (emu-check-<conn>), and puts
// back the routes it recorded before withdrawing them that are still
// withdrawn. A fault a running check holds is kept, with *HeldError. The
// hold is taken for the removal, so a check never breaks the connection in
// the middle of it: one starting meanwhile finds the hold taken and does
// not run its failover.
func RemoveLeftCheck(dir, ns, conn string) (LeftCheck, error) {
	h, err := HoldCheck(dir, ns, conn)
	if err != nil {
		return LeftCheck{}, err
	}
	defer h.Release()
	return h.RemoveLeft(ns, conn)
}

// RemoveLeft is RemoveLeftCheck for the holder of the hold on conn in ns:
// a check --failover that took it for its whole run.
func (h *CheckHold) RemoveLeft(ns, conn string) (LeftCheck, error) {
	var left LeftCheck
	var err error
	if left.Table, err = TunnelBrokenBy(ByCheck, ns, conn); err != nil {
		return left, err
	}
	if left.Table {
		if err := TunnelUpBy(ByCheck, ns, conn); err != nil {
			return left, err
		}
	}
	routes, err := h.LeftRoutes()
	if err != nil {
		return left, err
	}
	w := wiring.New()
	defer w.Close()
	for _, r := range routes {
		if _, err := w.EnsureRoute(r.Namespace, wiring.IPNet(r.Dst), wiring.IP(r.Via), r.Dev, r.Metric, true); err != nil {
			return left, fmt.Errorf("restore route %s in %s that an `emu check --failover` that did not finish withdrew: %w", r, r.Node, err)
		}
		left.Routes = append(left.Routes, r)
	}
	return left, h.ForgetRoutes()
}

// leftRoutes lists, for Active, the routes in namespace ns recorded in the
// lab's check holds (any connection) and withdrawn now, as faults.
func leftRoutes(dir, ns string) ([]Fault, error) {
	if dir == "" {
		return nil, nil
	}
	paths, err := filepath.Glob(filepath.Join(dir, "faults", "*.check"))
	if err != nil {
		return nil, err
	}
	var out []Fault
	for _, path := range paths {
		data, err := readNoFollow(path)
		if errors.Is(err, os.ErrNotExist) {
			continue // its check just ended
		}
		if err != nil {
			return nil, err
		}
		rs, err := parseRoutes(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		gone, err := withdrawn(rs, ns)
		if err != nil {
			return nil, err
		}
		if len(gone) == 0 {
			continue
		}
		pid, held, err := holder(path)
		if err != nil {
			return nil, err
		}
		for _, r := range gone {
			out = append(out, Fault{Kind: "route", Name: r.String(), Check: true, Held: held, HeldBy: pid, By: r.By, Gateway: r.Gateway})
		}
	}
	return out, nil
}

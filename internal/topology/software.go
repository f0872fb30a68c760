package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Software is what a node runs of the host's programs (SPEC §11): the
// fields containerlab gives its linux nodes (exec, binds, env) plus daemons
// emu starts, watches and stops. A namespace node with any of it gets its own
// mount namespace for its life: a private /run, /sys showing its own
// interfaces, the binds, and /etc/netns/<namespace>/ as `ip netns exec` does.
type Software struct {
	// Exec commands run in order, each through /bin/sh -c, after the node is
	// wired and its daemons started; one that fails fails the deploy.
	Exec    []Command
	Binds   []Bind
	Env     []string // KEY=value, sorted by key: for exec, daemons and `emu exec`
	Daemons []Daemon
}

// Command is one line of `exec:`.
type Command struct {
	Line int
	Text string
}

// Bind is a containerlab bind, `host-path:node-path[:ro]`: the host path
// (relative ones from the topology file's directory) mounted at the node path
// in the node's mount namespace.
type Bind struct {
	Line     int
	Host     string // absolute
	Node     string // absolute
	ReadOnly bool
}

// Daemon is a long-running program of the node. emu starts the daemons in
// file order, each once the previous one is ready, and stops them on destroy.
type Daemon struct {
	Line    int
	Name    string // names its log, emu-<lab>/logs/<node>.<name>.log
	Command string // run through /bin/sh -c, in the foreground
	// WaitFor is a path (in the node's mount namespace) whose appearance
	// says the daemon is ready, e.g. FRR zebra's /run/frr/zserv.api; "" waits
	// only for the daemon to stay up DaemonSettle.
	WaitFor string
}

// Runs reports whether the node runs any host program of its own.
func (s Software) Runs() bool {
	return len(s.Exec) > 0 || len(s.Binds) > 0 || len(s.Env) > 0 || len(s.Daemons) > 0
}

var envKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// software reads one of exec, binds, env, daemons into node.Software.
func (r *resolver) software(node *Node, f field) {
	what := fmt.Sprintf("node %q %s", node.Name, f.key)
	sw := &node.Software
	switch f.key {
	case "exec":
		for _, c := range r.strs(f.val, what) {
			if strings.TrimSpace(c.Value) == "" {
				r.at(c.Line, "%s: empty command: remove the entry", what)
				continue
			}
			sw.Exec = append(sw.Exec, Command{Line: c.Line, Text: c.Value})
		}
	case "binds":
		for _, b := range r.strs(f.val, what) {
			if bind, ok := r.bind(what, b); ok {
				sw.Binds = append(sw.Binds, bind)
			}
		}
	case "env":
		for _, e := range r.fields(f.val, what) {
			if !envKeyRe.MatchString(e.key) {
				r.at(e.line, "%s: %q is not a variable name (letters, digits and _, not starting with a digit)", what, e.key)
				continue
			}
			if v, ok := r.str(e.val, what+" "+e.key); ok {
				sw.Env = append(sw.Env, e.key+"="+v)
			}
		}
		slices.Sort(sw.Env)
	case "daemons":
		names := map[string]int{}
		for _, d := range r.seq(f.val, what) {
			dm := Daemon{Line: d.Line}
			for _, df := range r.fields(d, what+" entry", "name", "command", "wait-for") {
				v, ok := r.str(df.val, what+" "+df.key)
				if !ok {
					continue
				}
				switch df.key {
				case "name":
					if msg := nameProblem("daemon name", v); msg != "" {
						r.at(df.line, "%s: %s", what, msg)
					}
					if prev, dup := names[v]; dup {
						r.at(df.line, "%s: daemon %q is declared twice (first at line %d): give each its own name", what, v, prev)
					}
					names[v] = df.line
					dm.Name = v
				case "command":
					dm.Command = v
				case "wait-for":
					if !filepath.IsAbs(v) {
						r.at(df.line, "%s: wait-for %q must be an absolute path in the node, like /run/frr/zserv.api", what, v)
					}
					dm.WaitFor = v
				}
			}
			if dm.Name == "" || strings.TrimSpace(dm.Command) == "" {
				r.at(d.Line, "%s: each daemon needs `name:` and `command:`, like {name: zebra, command: /usr/lib/frr/zebra --log stdout}", what)
				continue
			}
			sw.Daemons = append(sw.Daemons, dm)
		}
	}
}

// bind resolves `host-path:node-path[:ro]`; the host path must exist now, so
// a typo fails validation rather than the deploy.
func (r *resolver) bind(what string, n *yaml.Node) (Bind, bool) {
	b := Bind{Line: n.Line}
	parts := strings.Split(n.Value, ":")
	switch {
	case len(parts) == 3 && (parts[2] == "ro" || parts[2] == "rw"):
		b.ReadOnly = parts[2] == "ro"
	case len(parts) != 2:
		r.at(n.Line, "%s: %q must be written host-path:node-path or host-path:node-path:ro", what, n.Value)
		return b, false
	}
	b.Host, b.Node = parts[0], parts[1]
	if b.Host == "" || !filepath.IsAbs(b.Node) {
		r.at(n.Line, "%s: %q: the host path must not be empty and the node path must be absolute, like router1/frr.conf:/etc/frr/frr.conf", what, n.Value)
		return b, false
	}
	if !filepath.IsAbs(b.Host) {
		b.Host = filepath.Join(filepath.Dir(r.t.File), b.Host)
	}
	b.Host, b.Node = filepath.Clean(b.Host), filepath.Clean(b.Node)
	if _, err := os.Stat(b.Host); err != nil {
		r.at(n.Line, "%s: host path %s does not exist: create it or fix the path (relative paths start at the topology file's directory)", what, b.Host)
		return b, false
	}
	return b, true
}

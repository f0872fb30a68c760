package main

import (
	"bytes"
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/emu-lab/emu/internal/lab"
	"github.com/emu-lab/emu/internal/labtest"
	"github.com/emu-lab/emu/topologies"
)

// Every mistake on the command line exits 2 with one line that says what is
// wrong and where the usage is, never a help dump, from every depth of the
// command tree; nothing is printed on stdout.
func TestCLI_CommandLineMistake_Exit2WithOneLineAndHint(t *testing.T) {
	topo := labtest.Copy(t, staticTopology, labtest.UniqueName())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"chek", "-t", topo}, "unknown command \"chek\": did you mean \"check\"? (see `emu --help`)"},
		{[]string{"frobnicate"}, "unknown command \"frobnicate\" (commands: deploy, destroy,"},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus (see `emu --help`)"},
		{[]string{"check", "-t"}, "check: flag needs an argument: -t (see `emu check --help`)"},
		{[]string{"deploy", "--bogus", "-t", topo}, "deploy: flag provided but not defined: -bogus (see `emu deploy --help`)"},
		{[]string{"check", "-t", topo, "extra"}, "check: unexpected argument \"extra\" (this command takes none)"},
		{[]string{"fault"}, "fault: missing command: tunnel, link or list (see `emu fault --help`)"},
		{[]string{"fault", "tunnel"}, "fault tunnel: missing command: down or up (see `emu fault tunnel --help`)"},
		{[]string{"fault", "tunnel", "dwn", "to-vpc"}, "fault tunnel: unknown command \"dwn\": did you mean \"down\"?"},
		{[]string{"fault", "tunnel", "down", "-x", "-t", topo, "to-vpc"}, "fault tunnel down: flag provided but not defined: -x (see `emu fault tunnel down --help`)"},
		{[]string{"route", "restore", "-t", topo, "vpc"}, "route restore: unexpected argument \"vpc\""},
		{[]string{"destroy"}, "destroy: no topology: give one with -t FILE or --all (every lab on this host) (see `emu destroy --help`)"},
		{[]string{"check"}, "check: no topology: give one with -t FILE (see `emu check --help`)"},
		{[]string{"deploy", "nustatic.yaml"}, "deploy: unexpected argument \"nustatic.yaml\" (this command takes none; did you mean -t nustatic.yaml?) (see `emu deploy --help`)"},
		{[]string{"check", topo}, "check: unexpected argument \"" + topo + "\" (this command takes none; did you mean -t " + topo + "?)"},
		{[]string{"fault", "tunnel", "down", topo, "to-vpc"}, "fault tunnel down: no topology: give one with -t FILE; did you mean -t " + topo + "? (see `emu fault tunnel down --help`)"},
		{[]string{"route", "show", "lab.yml"}, "route show: no topology: give one with -t FILE; did you mean -t lab.yml?"},
		{[]string{"graph", "-t", topo, "--dot", "--mermaid"}, "graph: --dot and --mermaid: choose one"},
		{[]string{"graph", "-t", topo, "--mermaid", "--svg", "x.svg"}, "graph: --mermaid and --svg: choose one"},
	} {
		r := runEmu(t, t.TempDir(), tc.args...)
		if r.code != exitInvalid || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || r.stdout != "" {
			t.Errorf("emu %s: exit %d, want %d with one line containing %q\nstderr: %s\nstdout: %s", strings.Join(tc.args, " "), r.code, exitInvalid, tc.want, r.stderr, r.stdout)
		}
	}
	for _, args := range [][]string{{"fault", "tunnel", "down", "--help"}, {"help", "check"}, {"help"}} {
		if r := runEmu(t, t.TempDir(), args...); r.code != 0 || !strings.Contains(r.stdout, "USAGE:") {
			t.Errorf("emu %s: exit %d: %s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	if r := runEmu(t, t.TempDir(), "help", "chek"); r.code != exitInvalid || !strings.Contains(r.stderr, `unknown command "chek": did you mean "check"?`) {
		t.Errorf("emu help chek: exit %d: %s", r.code, r.stderr)
	}
}

// The USAGE line of every command names each of its visible flags, so the
// synopsis cannot drift from what the command accepts.
func TestCLI_UsageLineNamesEveryFlag(t *testing.T) {
	var walk func(parent string, cmds []*cli.Command)
	walk = func(parent string, cmds []*cli.Command) {
		for _, c := range cmds {
			full := parent + " " + c.Name
			if c.Hidden {
				continue
			}
			walk(full, c.Subcommands)
			if c.Action == nil {
				continue
			}
			for _, f := range c.Flags {
				if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
					continue
				}
				named := regexp.MustCompile(`(^|[\s\[|])--?(` + strings.Join(f.Names(), "|") + `)([\s\]|=]|$)`)
				if !named.MatchString(c.UsageText) {
					t.Errorf("%s: USAGE %q lacks --%s", full, c.UsageText, f.Names()[0])
				}
			}
		}
	}
	walk("emu", newApp().Commands)
}

// emu --help lists every scenario shipped in topologies/.
func TestCLI_HelpListsEveryShippedScenario(t *testing.T) {
	files, err := fs.Glob(topologies.FS, "*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped scenario found: %v", err)
	}
	help := newApp().Description
	for _, f := range files {
		if !strings.Contains(help, f) {
			t.Errorf("emu --help does not list %s", f)
		}
	}
}

// Every visible command, at every depth, says in its list line what it
// does: `emu fault tunnel --help` listed "down" and "up" with nothing.
func TestCLI_EveryCommandHasAUsageLine(t *testing.T) {
	var walk func(parent string, cmds []*cli.Command)
	walk = func(parent string, cmds []*cli.Command) {
		for _, c := range cmds {
			full := parent + " " + c.Name
			if c.Hidden {
				continue
			}
			if strings.TrimSpace(c.Usage) == "" {
				t.Errorf("%s: no usage text in its parent's command list", full)
			}
			walk(full, c.Subcommands)
		}
	}
	walk("emu", newApp().Commands)
}

// emu --help's typical session runs as written: trace after a fault only
// once BGP's hold timer (3 s) expired, the fault repaired before the
// failover check (which refuses a lab with a fault in force) and destroy.
func TestCLI_HelpSession_WaitsAfterTheFault_RepairsBeforeTheCheck(t *testing.T) {
	help := newApp().Description
	_, session, ok := strings.Cut(help, "Typical session")
	session, _, _ = strings.Cut(session, "\n\n")
	if !ok {
		t.Fatal("emu --help has no typical session")
	}
	var cmds []string
	for _, line := range strings.Split(session, "\n")[1:] {
		cmd, _, _ := strings.Cut(line, "#")
		cmds = append(cmds, strings.Join(strings.Fields(cmd), " "))
	}
	down := slices.IndexFunc(cmds, func(c string) bool { return strings.HasPrefix(c, "emu fault tunnel down") })
	up := slices.IndexFunc(cmds, func(c string) bool { return strings.HasPrefix(c, "emu fault tunnel up") })
	failover := slices.IndexFunc(cmds, func(c string) bool { return strings.Contains(c, "--failover") })
	if down < 0 || down+1 >= len(cmds) || !strings.HasPrefix(cmds[down+1], "sleep 5; emu trace") {
		t.Errorf("the trace after the fault does not wait for BGP's hold timer: %q", cmds)
	}
	if up < 0 || up < down || failover < up {
		t.Errorf("the fault is not repaired before the failover check: %q", cmds)
	}
	if strings.Contains(help, "same name: is refused") {
		t.Error("stray colon: \"same name: is refused\"")
	}
}

// destroy --all acts host-wide: the records in /run/emu/labs are every
// user's, so its help says so where the flag is named, and where it is
// described.
func TestCLI_DestroyAllHelp_SaysItIsHostWide(t *testing.T) {
	cmd := destroyCommand()
	if !strings.Contains(strings.Join(strings.Fields(cmd.Description), " "), "--all destroys every lab recorded in "+lab.DefaultStateDir+", which is host-wide: other users' labs too") {
		t.Errorf("destroy --help does not say --all is host-wide:\n%s", cmd.Description)
	}
	for _, f := range cmd.Flags {
		if bf, ok := f.(*cli.BoolFlag); ok && bf.Name == "all" && !strings.Contains(bf.Usage, "every user's") {
			t.Errorf("--all's usage %q does not say it takes every user's labs", bf.Usage)
		}
	}
}

// Every visible command and subcommand, at every depth, has a USAGE line of
// its own (never urfave/cli's "[command options]") and examples in its
// --help, each a real command line on a shipped topology: `emu fault tunnel
// --help` had neither, and half the commands had no example.
func TestCLI_EveryCommandHelp_HasUsageAndExamples(t *testing.T) {
	var walk func(path []string, cmds []*cli.Command)
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			p := append(slices.Clone(path), c.Name)
			full := "emu " + strings.Join(p, " ")
			walk(p, c.Subcommands)
			var out bytes.Buffer
			app := newApp()
			app.Writer, app.ErrWriter = &out, &out
			if err := app.Run(append(append([]string{"emu"}, p...), "--help")); err != nil {
				t.Errorf("%s --help: %v", full, err)
				continue
			}
			help := out.String()
			_, usage, _ := strings.Cut(help, "USAGE:\n")
			usage, _, _ = strings.Cut(usage, "\n\n")
			if strings.Contains(usage, "[command options]") || !strings.HasPrefix(strings.TrimSpace(usage), full+" ") {
				t.Errorf("%s --help: USAGE %q is not this command's synopsis", full, usage)
			}
			_, examples, ok := strings.Cut(help, "Examples:\n")
			examples, _, _ = strings.Cut(examples, "\n\n")
			var n int
			for _, line := range strings.Split(examples, "\n") {
				line = strings.TrimSpace(line)
				if strings.HasPrefix(line, full+" ") && strings.Contains(line, "topologies/") {
					n++
				}
			}
			if !ok || n < 2 {
				t.Errorf("%s --help: %d examples of it on a shipped topology, want 2 or more:\n%s", full, n, help)
			}
		}
	}
	walk(nil, newApp().Commands)
}

// A flag that takes a value shows a placeholder that says what the value is
// (FILE, MODE, NODE), never urfave/cli's "value" or a default value in its
// place: --ipsec-dataplane showed "auto" there.
func TestCLI_ValueFlags_ShowAPlaceholder(t *testing.T) {
	placeholder := regexp.MustCompile(`^--\S+ ([A-Z][A-Z0-9.]*)[ ,\t]`)
	var walk func(full string, cmds []*cli.Command)
	walk = func(full string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden {
				continue
			}
			walk(full+" "+c.Name, c.Subcommands)
			for _, f := range c.Flags {
				if _, isBool := f.(*cli.BoolFlag); isBool {
					continue
				}
				if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
					continue
				}
				if s := f.String(); !placeholder.MatchString(s) {
					t.Errorf("%s %s: %q has no capitalised placeholder", full, c.Name, s)
				}
			}
		}
	}
	walk("emu", newApp().Commands)
}

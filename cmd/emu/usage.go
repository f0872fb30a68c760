package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/xrash/smetrics"
)

// usageError is a mistake on the command line (unknown command or flag, a
// flag without its value, an argument the command does not take): exit 2,
// one line, and where the usage is, instead of urfave/cli's help dump
// (printed on stdout, with exit 1 or 3).
type usageError struct {
	command string // the full command, "emu fault tunnel down"
	err     error
}

func (e usageError) Error() string {
	msg := fmt.Sprintf("%v (see `%s --help`)", e.err, e.command)
	if _, sub, ok := strings.Cut(e.command, " "); ok {
		return sub + ": " + msg
	}
	return msg
}

func (e usageError) Unwrap() error { return e.err }

// strictUsage makes every command of app, at every depth, report its
// command-line mistakes as a usageError. A command without ArgsUsage takes no
// positional argument; a command with subcommands and no action of its own
// needs one of them.
func strictUsage(app *cli.App) {
	app.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{app.Name, err} }
	app.Action = func(c *cli.Context) error {
		args := c.Args().Slice()
		if len(args) > 0 && args[0] == "help" { // as subcommands have it: emu help [COMMAND]
			args = args[1:]
			if len(args) > 0 && app.Command(args[0]) != nil {
				return cli.ShowCommandHelp(c, args[0])
			}
		}
		if len(args) == 0 {
			return cli.ShowAppHelp(c)
		}
		return unknownCommand(app.Name, app.Commands, args[0])
	}
	for _, cmd := range app.Commands {
		strictCommand(app.Name, cmd)
	}
}

func strictCommand(parent string, cmd *cli.Command) {
	full := parent + " " + cmd.Name
	cmd.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return usageError{full, err} }
	switch action := cmd.Action; {
	case len(cmd.Subcommands) > 0 && action == nil:
		cmd.Action = func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageError{full, fmt.Errorf("missing command: %s", orList(visibleNames(cmd.Subcommands)))}
			}
			return unknownCommand(full, cmd.Subcommands, c.Args().First())
		}
	case action != nil && cmd.ArgsUsage == "":
		cmd.Action = func(c *cli.Context) error {
			if c.NArg() > 0 {
				arg := c.Args().First()
				return usageError{full, fmt.Errorf("unexpected argument %q (this command takes none%s)", arg, topoHint(cmd, arg))}
			}
			return action(c)
		}
	}
	for _, sub := range cmd.Subcommands {
		strictCommand(full, sub)
	}
}

// noTopology is the error of a command run without -t: a usage mistake
// (exit 2) that names --all where the command has it, and -t FILE where a
// topology file was given without it (emu check static.yaml to-vpc).
func noTopology(c *cli.Context) error {
	msg := "no topology: give one with -t FILE"
	if hasFlag(c.Command, "all") {
		msg += " or --all (every lab on this host)"
	}
	for _, arg := range c.Args().Slice() {
		if hint := topoHint(c.Command, arg); hint != "" {
			msg += hint
			break
		}
	}
	return usageError{c.Command.HelpName, errors.New(msg)}
}

// topoHint is "; did you mean -t ARG?" when cmd takes -t and arg looks like
// the topology given without it (an existing file, or a name ending in
// .yaml or .yml), else "".
func topoHint(cmd *cli.Command, arg string) string {
	if !hasFlag(cmd, "topo") {
		return ""
	}
	ext := strings.ToLower(filepath.Ext(arg))
	if fi, err := os.Stat(arg); (err != nil || !fi.Mode().IsRegular()) && ext != ".yaml" && ext != ".yml" {
		return ""
	}
	return fmt.Sprintf("; did you mean -t %s?", arg)
}

func hasFlag(cmd *cli.Command, name string) bool {
	for _, f := range cmd.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

func unknownCommand(parent string, commands []*cli.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q (commands: %s)", name, strings.Join(visibleNames(commands), ", "))
	if best := closest(commands, name); best != "" {
		msg = fmt.Sprintf("unknown command %q: did you mean %q?", name, best)
	}
	return usageError{parent, errors.New(msg)}
}

func visibleNames(commands []*cli.Command) []string {
	var names []string
	for _, c := range commands {
		if !c.Hidden && c.Name != "help" { // urfave/cli adds a help subcommand; --help is the documented way
			names = append(names, c.Name)
		}
	}
	return names
}

// orList is "a", "a or b", "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// closest is the visible command within two edits of name (a typo), or "".
func closest(commands []*cli.Command, name string) string {
	best, bestDist := "", 3
	for _, c := range visibleNames(commands) {
		if d := smetrics.WagnerFischer(c, name, 1, 1, 1); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

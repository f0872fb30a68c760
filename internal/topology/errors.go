package topology

import (
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a topology file, located so an editor can jump to it.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errors is every problem found in one file: users fix them in one pass
// instead of one run per typo.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// errs accumulates located errors while a file is decoded and resolved.
type errs struct {
	file     string
	list     Errors
	warnings []string
}

// at records an error; the same error reached twice (text shared through
// defaults, kinds, groups or YAML aliases) is reported once.
func (c *errs) at(line int, format string, args ...any) {
	e := &Error{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)}
	for _, prev := range c.list {
		if *prev == *e {
			return
		}
	}
	c.list = append(c.list, e)
}

// warn records what emu ignores but the user wrote, as file:line: text.
func (c *errs) warn(line int, format string, args ...any) {
	w := (&Error{File: c.file, Line: line, Msg: fmt.Sprintf(format, args...)}).Error()
	if !slices.Contains(c.warnings, w) {
		c.warnings = append(c.warnings, w)
	}
}

func (c *errs) err() error {
	if len(c.list) == 0 {
		return nil
	}
	return c.list
}

package topology

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// decodeOne reads the file as exactly one YAML document. yaml.v3 reports
// some mistakes without a line ("control characters are not allowed",
// "invalid leading UTF-8 octet") or without naming them (a tab in the
// indentation is "found character that cannot start any token"), and
// yaml.Unmarshal silently drops every document after the first: each of
// these becomes an Error on its line that says what to change. Nesting
// deeper than MaxDepth is refused before yaml.v3 reads a byte.
func decodeOne(file string, data []byte) (*yaml.Node, error) {
	if err := checkDepth(file, data); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, second yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return &doc, nil // nothing but comments: Parse says what it needs
	} else if err != nil {
		return nil, textError(file, data, err)
	}
	err := dec.Decode(&second)
	if errors.Is(err, io.EOF) || err == nil && len(second.Content) == 0 {
		return &doc, nil
	}
	line := second.Line
	if err != nil {
		// yaml.v3's lines inside a later document are unreliable: name the
		// separator instead.
		line = separatorAfter(data, doc.Line)
	}
	return nil, &Error{File: file, Line: line, Msg: "a second YAML document starts here (`---`): emu reads one lab per file and would ignore it: remove the `---` and what follows, or move that lab to its own file"}
}

// separatorAfter is the 1-based line of the first document separator
// (`---` at the start of a line) after line n, or 0.
func separatorAfter(data []byte, n int) int {
	for i, l := range bytes.Split(data, []byte("\n")) {
		l = bytes.TrimRight(l, " \t\r")
		if i+1 > n && (bytes.Equal(l, []byte("---")) || bytes.HasPrefix(l, []byte("--- "))) {
			return i + 1
		}
	}
	return 0
}

// textError locates what yaml.v3 could not read.
func textError(file string, data []byte, yamlErr error) *Error {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		col := i - bytes.LastIndexByte(data[:i], '\n')
		switch {
		case r == utf8.RuneError && size == 1:
			return &Error{File: file, Line: line, Msg: fmt.Sprintf("byte 0x%02x at column %d is not UTF-8: a topology is UTF-8 text; save the file as UTF-8", data[i], col)}
		case r == 0:
			return &Error{File: file, Line: line, Msg: fmt.Sprintf("a NUL byte at column %d: a topology is YAML text, not a binary file; remove it (or give the right file with -t)", col)}
		case r < 0x20 && r != '\t' && r != '\n' && r != '\r', r == 0x7f:
			return &Error{File: file, Line: line, Msg: fmt.Sprintf("control character U+%04X at column %d: YAML does not allow it; remove it", r, col)}
		case r == '\n':
			line++
		}
		i += size
	}
	errLine := yamlErrLine(yamlErr)
	if line, col := indentTab(data, errLine); col > 0 {
		return &Error{File: file, Line: line, Msg: fmt.Sprintf("a tab indents this line (column %d): YAML indents with spaces only; replace the tab with spaces", col)}
	}
	return &Error{File: file, Line: errLine, Msg: "not valid YAML: " + yamlErrText(yamlErr)}
}

// indentTab finds a tab in the leading whitespace of the line yaml.v3
// blamed (1-based) or the next one (its indentation errors name the line
// before), or of any line when yaml.v3 gave none. It returns that line and
// the tab's 1-based column, or 0, 0.
func indentTab(data []byte, blamed int) (line, col int) {
	for i, l := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		if blamed > 0 && n != blamed && n != blamed+1 {
			continue
		}
		if c := bytes.IndexFunc(l, func(r rune) bool { return r != ' ' }); c >= 0 && l[c] == '\t' {
			return n, c + 1
		}
	}
	return 0, 0
}

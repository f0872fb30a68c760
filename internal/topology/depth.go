package topology

import (
	"bytes"
	"fmt"
)

// MaxDepth bounds how deeply collections nest in a topology file: block
// levels (indentation, and compact `- - x` entries) plus flow brackets
// (`[`, `{`) open at one point. A topology's deepest value (a node's
// ipsec ike proposals) sits about ten levels down.
//
// yaml.v3 spends time quadratic in the nesting depth and checks its own
// limit (10000) only after scanning the whole file: a 1 MiB file of 520000
// `[` took 173 s of CPU, `{a: ` × 60000 took 19 s. checkDepth is a linear
// scan that refuses such a file before yaml.v3 sees it.
const MaxDepth = 64

// checkDepth refuses data whose nesting exceeds MaxDepth, on the line where
// it does. It reads YAML only as far as nesting goes: comments, quoted
// scalars and block scalars (`|`, `>`) are skipped so the brackets in them
// do not count; anything it misreads, yaml.v3 still judges afterwards.
func checkDepth(file string, data []byte) error {
	var (
		indents   []int // columns of the open block levels
		flow      int   // open flow brackets
		quote     byte  // the quote of a quoted scalar still open, or 0
		blockText = -1  // indentation of the line that opened a block scalar, or -1
	)
	tooDeep := func(line int) error {
		return &Error{File: file, Line: line, Msg: fmt.Sprintf("collections nest more than %d levels deep here: no topology needs that many (emu refuses it before parsing, which would take minutes): flatten the file, or check that -t names the right file", MaxDepth)}
	}
	for n, line := range bytes.Split(data, []byte("\n")) {
		lineNo := n + 1
		line = bytes.TrimSuffix(line, []byte("\r"))
		indent := len(line) - len(bytes.TrimLeft(line, " "))
		blank := indent == len(line) || line[indent] == '#'
		if blockText >= 0 {
			if blank || indent > blockText {
				continue
			}
			blockText = -1
		}
		i := indent
		if quote == 0 && flow == 0 && !blank {
			for len(indents) > 0 && indents[len(indents)-1] >= indent {
				indents = indents[:len(indents)-1]
			}
			indents = append(indents, indent)
			// Compact entries nest on one line: `- - x`, `? - x`.
			for i+1 < len(line) && (line[i] == '-' || line[i] == '?') && (line[i+1] == ' ' || line[i+1] == '\t') {
				i += 2
				for i < len(line) && line[i] == ' ' {
					i++
				}
				indents = append(indents, i)
			}
			if len(indents) > MaxDepth {
				return tooDeep(lineNo)
			}
		}
		for ; i < len(line); i++ {
			c := line[i]
			if quote != 0 {
				switch {
				case quote == '"' && c == '\\':
					i++
				case c == quote && quote == '\'' && i+1 < len(line) && line[i+1] == '\'':
					i++ // '' is a quote inside a single-quoted scalar
				case c == quote:
					quote = 0
				}
				continue
			}
			// Only the start of a token can open a quote, a collection or
			// a comment: `it's`, `a[1]` and `a#b` are plain text.
			tokenStart := i == 0 || line[i-1] == ' ' || line[i-1] == '\t' ||
				flow > 0 && bytes.IndexByte([]byte("[{,:"), line[i-1]) >= 0
			switch {
			case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
				i = len(line)
			case (c == '"' || c == '\'') && tokenStart:
				quote = c
			case (c == '[' || c == '{') && (tokenStart || flow > 0):
				flow++
				if len(indents)+flow > MaxDepth {
					return tooDeep(lineNo)
				}
			case (c == ']' || c == '}') && flow > 0:
				flow--
			case (c == '|' || c == '>') && tokenStart && flow == 0 && blockHeader(line[i+1:]):
				blockText = indent
				i = len(line)
			}
		}
	}
	return nil
}

// blockHeader reports whether rest, what follows a `|` or `>`, completes a
// block scalar header: indentation and chomping indicators, then nothing
// but a comment.
func blockHeader(rest []byte) bool {
	rest = bytes.TrimLeft(rest, "+-0123456789")
	rest = bytes.TrimLeft(rest, " \t")
	return len(rest) == 0 || rest[0] == '#'
}

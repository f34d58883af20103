package config

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// assignment is one "key = value" of a configuration file, with its
// continuation lines joined by newlines as oslo.config joins them.
type assignment struct {
	section string // normalized by normalizeSection
	key     string
	value   string
	line    int // 1-based line of the key
}

// parseINI parses one configuration file the way oslo.config's iniparser
// does: lines are right-trimmed; a blank line ends a value; a line starting
// with a space or tab continues the previous value (even when it looks like
// a comment); "#" and ";" start a comment only in the first column; a key is
// split from its value at the first "=" or ":", whichever comes first; one
// pair of matching quotes around a value is removed. Inline comments do not
// exist: "key = 1 # one" has the value "1 # one". file only names the file
// in errors.
func parseINI(file string, data []byte) ([]assignment, error) {
	if !utf8.Valid(data) {
		return nil, &Error{File: file, Reason: "not valid UTF-8"}
	}
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")

	var (
		out     []assignment
		section string
		open    bool     // out's last element still takes continuation lines
		cont    []string // its continuation lines so far
	)
	// closeValue appends the continuation lines to the open value.
	closeValue := func() {
		if open && len(cont) > 0 {
			last := &out[len(out)-1]
			last.value += "\n" + strings.Join(cont, "\n")
		}
		open, cont = false, cont[:0]
	}
	for i, raw := range strings.Split(text, "\n") {
		n := i + 1
		line := strings.TrimRightFunc(raw, unicode.IsSpace)
		switch {
		case line == "":
			closeValue()
			continue
		case line[0] == ' ' || line[0] == '\t':
			if !open {
				return nil, syntaxError(file, n, fmt.Sprintf("unexpected continuation line %q (no option above it)", line))
			}
			cont = append(cont, strings.TrimLeftFunc(line, unicode.IsSpace))
			continue
		}
		closeValue()
		switch line[0] {
		case '[':
			if !strings.HasSuffix(line, "]") {
				return nil, syntaxError(file, n, fmt.Sprintf("section header %q lacks its closing ]", line))
			}
			if len(line) <= 2 {
				return nil, syntaxError(file, n, "empty section name")
			}
			section = normalizeSection(line[1 : len(line)-1])
		case '#', ';':
			// A comment: nothing to keep.
		default:
			key, value, ok := splitKeyValue(line)
			switch {
			case !ok:
				return nil, syntaxError(file, n, fmt.Sprintf("%q is neither [section], comment nor key = value", line))
			case key == "":
				return nil, syntaxError(file, n, fmt.Sprintf("empty option name in %q", line))
			case section == "":
				return nil, syntaxError(file, n, fmt.Sprintf("option %q before any [section]", key))
			}
			out = append(out, assignment{section: section, key: key, value: value, line: n})
			open = true
		}
	}
	closeValue()
	return out, nil
}

// splitKeyValue splits line at its first "=" or ":" and trims both sides;
// a value wrapped in one pair of matching quotes loses them.
func splitKeyValue(line string) (key, value string, ok bool) {
	sep := strings.IndexByte(line, '=')
	if colon := strings.IndexByte(line, ':'); sep < 0 || (colon >= 0 && colon < sep) {
		sep = colon
	}
	if sep < 0 {
		return "", "", false
	}
	key = strings.TrimSpace(line[:sep])
	value = strings.TrimSpace(line[sep+1:])
	if value != "" && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
		if len(value) == 1 {
			value = ""
		} else {
			value = value[1 : len(value)-1]
		}
	}
	return key, value, true
}

// normalizeSection makes section names case-insensitive as oslo.config
// does: any spelling of DEFAULT becomes "DEFAULT", every other name is
// lower-cased. Spaces inside the brackets stay part of the name.
func normalizeSection(name string) string {
	if strings.EqualFold(name, sectionDefault) {
		return sectionDefault
	}
	return strings.ToLower(name)
}

// syntaxError reports a line of file that is not valid INI.
func syntaxError(file string, line int, reason string) *Error {
	return &Error{File: file, Line: line, Reason: reason}
}

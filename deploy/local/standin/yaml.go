package main

// A YAML subset, enough for the DittoFS configuration the operator renders
// (and for hand-written configurations in the same style): block mappings,
// block sequences (also at the parent key's indentation), plain, single- and
// double-quoted scalars, the empty flow collections {} and [], flow
// sequences of scalars, comments and "---". Anything else (anchors, tags,
// block scalars, nested flow collections) is an error with its line number,
// never a silent misreading.
//
// Values are map[string]any, []any, string (scalars keep their text) or nil.

import (
	"fmt"
	"strconv"
	"strings"
)

type yline struct {
	no     int // 1-based line number in the input
	indent int
	text   string
}

type yparser struct {
	lines []yline
}

func parseYAML(src string) (any, error) {
	p := &yparser{}
	for i, raw := range strings.Split(src, "\n") {
		raw = strings.TrimRight(raw, "\r")
		text, err := stripComment(raw)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		trimmed := strings.TrimLeft(text, " ")
		if strings.TrimSpace(trimmed) == "" {
			continue
		}
		if strings.HasPrefix(trimmed, "\t") {
			return nil, fmt.Errorf("line %d: tab in indentation", i+1)
		}
		if i == 0 && strings.HasPrefix(trimmed, "%") {
			continue
		}
		if trimmed == "---" || trimmed == "..." {
			if len(p.lines) > 0 {
				if trimmed == "..." {
					break
				}
				return nil, fmt.Errorf("line %d: more than one document", i+1)
			}
			continue
		}
		p.lines = append(p.lines, yline{no: i + 1, indent: len(text) - len(trimmed), text: trimmed})
	}
	if len(p.lines) == 0 {
		return nil, nil
	}
	v, next, err := p.node(0, p.lines[0].indent)
	if err != nil {
		return nil, err
	}
	if next < len(p.lines) {
		return nil, fmt.Errorf("line %d: unexpected content (indentation?)", p.lines[next].no)
	}
	return v, nil
}

// stripComment cuts a "#" comment that is outside quotes and at the start
// of the line or after a blank.
func stripComment(s string) (string, error) {
	inSingle, inDouble := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inDouble:
			if c == '\\' {
				i++
			} else if c == '"' {
				inDouble = false
			}
		case inSingle:
			if c == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					i++
				} else {
					inSingle = false
				}
			}
		case c == '"' && (i == 0 || strings.ContainsRune(" \t:-[{,", rune(s[i-1]))):
			inDouble = true
		case c == '\'' && (i == 0 || strings.ContainsRune(" \t:-[{,", rune(s[i-1]))):
			inSingle = true
		case c == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t'):
			return strings.TrimRight(s[:i], " \t"), nil
		}
	}
	if inSingle || inDouble {
		return "", fmt.Errorf("unterminated quoted scalar")
	}
	return strings.TrimRight(s, " \t"), nil
}

func isSeqItem(text string) bool {
	return text == "-" || strings.HasPrefix(text, "- ")
}

// node parses the node whose first line is lines[i], at indentation ind.
func (p *yparser) node(i, ind int) (any, int, error) {
	l := p.lines[i]
	if l.indent != ind {
		return nil, i, fmt.Errorf("line %d: bad indentation", l.no)
	}
	if isSeqItem(l.text) {
		return p.sequence(i, ind)
	}
	if _, _, ok, err := splitKey(l.text); err != nil {
		return nil, i, fmt.Errorf("line %d: %v", l.no, err)
	} else if ok {
		return p.mapping(i, ind)
	}
	v, err := scalar(l.text)
	if err != nil {
		return nil, i, fmt.Errorf("line %d: %v", l.no, err)
	}
	return v, i + 1, nil
}

func (p *yparser) sequence(i, ind int) (any, int, error) {
	out := []any{}
	for i < len(p.lines) && p.lines[i].indent == ind && isSeqItem(p.lines[i].text) {
		l := p.lines[i]
		rest := strings.TrimPrefix(l.text, "-")
		body := strings.TrimLeft(rest, " ")
		if body == "" {
			if i+1 < len(p.lines) && p.lines[i+1].indent > ind {
				v, next, err := p.node(i+1, p.lines[i+1].indent)
				if err != nil {
					return nil, i, err
				}
				out = append(out, v)
				i = next
			} else {
				out = append(out, nil)
				i++
			}
			continue
		}
		// "- key: v" or "- - x": the item's content starts at a deeper
		// indentation on the same line; parse it as if it had its own line.
		p.lines[i] = yline{no: l.no, indent: ind + 1 + (len(rest) - len(body)), text: body}
		v, next, err := p.node(i, p.lines[i].indent)
		if err != nil {
			return nil, i, err
		}
		out = append(out, v)
		i = next
	}
	return out, i, nil
}

func (p *yparser) mapping(i, ind int) (any, int, error) {
	out := map[string]any{}
	for i < len(p.lines) && p.lines[i].indent == ind {
		l := p.lines[i]
		if isSeqItem(l.text) {
			return nil, i, fmt.Errorf("line %d: sequence item inside a mapping", l.no)
		}
		key, value, ok, err := splitKey(l.text)
		if err != nil {
			return nil, i, fmt.Errorf("line %d: %v", l.no, err)
		}
		if !ok {
			return nil, i, fmt.Errorf("line %d: expected \"key: value\"", l.no)
		}
		if _, dup := out[key]; dup {
			return nil, i, fmt.Errorf("line %d: duplicate key %q", l.no, key)
		}
		i++
		if value != "" {
			v, err := scalar(value)
			if err != nil {
				return nil, i, fmt.Errorf("line %d: %v", l.no, err)
			}
			out[key] = v
			continue
		}
		switch {
		case i < len(p.lines) && p.lines[i].indent > ind:
			v, next, err := p.node(i, p.lines[i].indent)
			if err != nil {
				return nil, i, err
			}
			out[key], i = v, next
		case i < len(p.lines) && p.lines[i].indent == ind && isSeqItem(p.lines[i].text):
			v, next, err := p.sequence(i, ind)
			if err != nil {
				return nil, i, err
			}
			out[key], i = v, next
		default:
			out[key] = nil
		}
	}
	if i < len(p.lines) && p.lines[i].indent > ind {
		return nil, i, fmt.Errorf("line %d: unexpected indentation", p.lines[i].no)
	}
	return out, i, nil
}

// splitKey splits "key: value" / "key:" (key plain or quoted). ok is false
// when the text is not a mapping entry.
func splitKey(text string) (key, value string, ok bool, err error) {
	if text[0] == '"' || text[0] == '\'' {
		end := closingQuote(text)
		if end < 0 {
			return "", "", false, fmt.Errorf("unterminated quoted key")
		}
		rest := text[end+1:]
		if rest != ":" && !strings.HasPrefix(rest, ": ") {
			return "", "", false, nil
		}
		k, err := scalar(text[:end+1])
		if err != nil {
			return "", "", false, err
		}
		ks, _ := k.(string)
		return ks, strings.TrimSpace(rest[1:]), true, nil
	}
	if text[0] == '[' || text[0] == '{' {
		return "", "", false, nil
	}
	if strings.HasSuffix(text, ":") && !strings.Contains(text, ": ") {
		return text[:len(text)-1], "", true, nil
	}
	if j := strings.Index(text, ": "); j > 0 {
		return text[:j], strings.TrimSpace(text[j+2:]), true, nil
	}
	return "", "", false, nil
}

func closingQuote(s string) int {
	q := s[0]
	for i := 1; i < len(s); i++ {
		switch {
		case q == '"' && s[i] == '\\':
			i++
		case s[i] == q && q == '\'' && i+1 < len(s) && s[i+1] == '\'':
			i++
		case s[i] == q:
			return i
		}
	}
	return -1
}

func scalar(s string) (any, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "" || s == "~" || s == "null" || s == "Null" || s == "NULL":
		return nil, nil
	case s == "{}":
		return map[string]any{}, nil
	case s[0] == '[':
		return flowSequence(s)
	case s[0] == '{':
		return nil, fmt.Errorf("non-empty flow mappings are not supported")
	case s[0] == '"':
		if closingQuote(s) != len(s)-1 {
			return nil, fmt.Errorf("text after a quoted scalar")
		}
		v, err := strconv.Unquote(s)
		if err != nil {
			return nil, fmt.Errorf("bad double-quoted scalar %s", s)
		}
		return v, nil
	case s[0] == '\'':
		if closingQuote(s) != len(s)-1 {
			return nil, fmt.Errorf("text after a quoted scalar")
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	case s[0] == '&' || s[0] == '*' || s[0] == '!' || s[0] == '|' || s[0] == '>' || s[0] == '@' || s[0] == '`':
		return nil, fmt.Errorf("unsupported YAML feature at %q (anchors, aliases, tags and block scalars are not read)", s)
	}
	return s, nil
}

func flowSequence(s string) (any, error) {
	if !strings.HasSuffix(s, "]") {
		return nil, fmt.Errorf("unterminated flow sequence")
	}
	inner := strings.TrimSpace(s[1 : len(s)-1])
	out := []any{}
	if inner == "" {
		return out, nil
	}
	for inner != "" {
		var item string
		if inner[0] == '"' || inner[0] == '\'' {
			end := closingQuote(inner)
			if end < 0 {
				return nil, fmt.Errorf("unterminated quoted scalar in flow sequence")
			}
			item, inner = inner[:end+1], strings.TrimSpace(inner[end+1:])
			if inner != "" && inner[0] != ',' {
				return nil, fmt.Errorf("expected ',' in flow sequence")
			}
		} else {
			j := strings.IndexByte(inner, ',')
			if j < 0 {
				j = len(inner)
			}
			item, inner = strings.TrimSpace(inner[:j]), inner[j:]
		}
		if strings.ContainsAny(item, "[]{}") {
			return nil, fmt.Errorf("nested flow collections are not supported")
		}
		v, err := scalar(item)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		inner = strings.TrimSpace(strings.TrimPrefix(inner, ","))
	}
	return out, nil
}

// lookup walks nested mappings: lookup(cfg, "adapters", "nfs", "port").
func lookup(v any, path ...string) (any, bool) {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"unicode/utf8"
)

// goal is what the Go/Python ratio should reach.
type goal struct {
	min, max float64 // ratio ≥ min, or ratio ≤ max; zero: no goal
	text     string  // overrides the generated wording
}

func atLeast(x float64) goal { return goal{min: x} }
func atMost(x float64) goal  { return goal{max: x} }

func (g goal) String() string {
	switch {
	case g.text != "":
		return g.text
	case g.min > 0:
		return fmt.Sprintf("≥ %g×", g.min)
	case g.max > 0:
		return fmt.Sprintf("≤ %g×", g.max)
	}
	return ""
}

func (g goal) met(ratio float64) (bool, bool) {
	switch {
	case g.min > 0:
		return ratio >= g.min, true
	case g.max > 0:
		return ratio <= g.max, true
	}
	return false, false
}

// cell is one side of a row: a value, a reason it is missing, or "not run".
type cell struct {
	set    bool
	value  float64
	reason string // n/a reason; "" with set=false means not run
}

func (c cell) text(format func(float64) string) string {
	switch {
	case c.set:
		return format(c.value)
	case c.reason != "":
		return "n/a (" + c.reason + ")"
	}
	return "not run"
}

type row struct {
	key, metric string
	format      func(float64) string
	goal        goal
	goV, pyV    cell
}

// table collects the rows of a run in a fixed order. Rows are declared up
// front so that one that never ran still shows, as "not run".
type table struct {
	mu       sync.Mutex
	rows     []*row
	notes    []string
	sections []section
}

// section is output another tool produced, reported under a heading.
type section struct {
	title string
	lines []string
}

func (t *table) section(title string, lines []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sections = append(t.sections, section{title, lines})
}

func (t *table) add(key, metric string, format func(float64) string, g goal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows = append(t.rows, &row{key: key, metric: metric, format: format, goal: g})
}

func (t *table) find(key string) *row {
	for _, r := range t.rows {
		if r.key == key {
			return r
		}
	}
	panic("bench: no table row " + key) // a typo in the harness, not bad input
}

func (t *table) setGo(key string, v float64) { t.set(key, true, cell{set: true, value: v}) }
func (t *table) setPy(key string, v float64) { t.set(key, false, cell{set: true, value: v}) }

// goNA and pyNA record why a side could not be measured; a value already
// recorded is kept.
func (t *table) goNA(reason string, keys ...string) { t.na(true, reason, keys) }
func (t *table) pyNA(reason string, keys ...string) { t.na(false, reason, keys) }

func (t *table) na(goSide bool, reason string, keys []string) {
	reason = oneLine(reason, 140)
	for _, k := range keys {
		t.mu.Lock()
		r := t.find(k)
		c := &r.pyV
		if goSide {
			c = &r.goV
		}
		if !c.set {
			*c = cell{reason: reason}
		}
		t.mu.Unlock()
	}
}

func (t *table) set(key string, goSide bool, c cell) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.find(key)
	if goSide {
		r.goV = c
	} else {
		r.pyV = c
	}
}

func (t *table) note(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

// print writes the table with aligned columns, then the notes.
func (t *table) print(w io.Writer, title string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := [][]string{{"metric", "go", "python", "go/python", "goal"}}
	for _, r := range t.rows {
		ratio, verdict := "", r.goal.String()
		if r.goV.set && r.pyV.set && r.pyV.value != 0 && !math.IsNaN(r.goV.value) && !math.IsNaN(r.pyV.value) {
			x := r.goV.value / r.pyV.value
			ratio = fmt.Sprintf("%.2f×", x)
			if ok, has := r.goal.met(x); has {
				if ok {
					verdict += " met"
				} else {
					verdict += " MISSED"
				}
			}
		}
		lines = append(lines, []string{r.metric, r.goV.text(r.format), r.pyV.text(r.format), ratio, verdict})
	}
	widths := make([]int, 5)
	for _, l := range lines {
		for i, s := range l {
			widths[i] = max(widths[i], utf8.RuneCountInString(s))
		}
	}
	fmt.Fprintf(w, "\n== %s\n", title)
	for i, l := range lines {
		var b strings.Builder
		for j, s := range l {
			if j > 0 {
				b.WriteString(" | ")
			}
			b.WriteString(s)
			if j < len(l)-1 {
				b.WriteString(strings.Repeat(" ", widths[j]-utf8.RuneCountInString(s)))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if i == 0 {
			var sep []string
			for _, wd := range widths {
				sep = append(sep, strings.Repeat("-", wd))
			}
			fmt.Fprintln(w, strings.Join(sep, "-|-"))
		}
	}
	for _, sec := range t.sections {
		fmt.Fprintf(w, "\n-- %s\n", sec.title)
		for _, l := range sec.lines {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range t.notes {
			fmt.Fprintln(w, "  - "+n)
		}
	}
}

// Value formats.
func fmtRate(v float64) string { return groupThousands(fmt.Sprintf("%.0f", v)) }
func fmtMs(v float64) string   { return fmt.Sprintf("%.2f ms", v) }
func fmtMiB(v float64) string  { return fmt.Sprintf("%.1f MiB", v) }
func fmtMBs(v float64) string  { return fmt.Sprintf("%.0f MB/s", v) }

func groupThousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// oneLine squeezes an error message into one table cell.
func oneLine(s string, maxRunes int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > maxRunes {
		r := []rune(s)
		s = string(r[:maxRunes-1]) + "…"
	}
	return s
}

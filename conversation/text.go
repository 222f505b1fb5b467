package conversation

import (
	"fmt"
	"io"
	"strings"
)

// WriteText draws the conversation as an indented tree, one signal a line:
//
//	order.place @shop  done
//	├─ charge @billing  done
//	│  └─ charged @shop  in_flight
//	└─ reserve @warehouse  applied
func (c Conversation) WriteText(w io.Writer) error {
	children := map[string][]Node{}
	known := map[string]bool{}
	for _, n := range c.Nodes {
		known[n.ID.String()] = true
	}
	var roots []Node
	for _, n := range c.Nodes {
		parent := n.Causation.String()
		if n.Causation.IsZero() || !known[parent] {
			roots = append(roots, n)
			continue
		}
		children[parent] = append(children[parent], n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "conversation %s (%d signals)\n", c.ID, len(c.Nodes))
	var walk func(n Node, prefix string, last, top bool)
	walk = func(n Node, prefix string, last, top bool) {
		branch, next := "", prefix
		if !top {
			branch, next = "├─ ", prefix+"│  "
			if last {
				branch, next = "└─ ", prefix+"   "
			}
		}
		fmt.Fprintf(&b, "%s%s%s @%s  %s", prefix, branch, orUnknown(n.Type), orUnknown(n.Destination), n.State)
		if n.Duplicates > 0 {
			fmt.Fprintf(&b, "  (%d duplicates dropped)", n.Duplicates)
		}
		if n.Reason != "" {
			fmt.Fprintf(&b, "  reason: %s", n.Reason)
		}
		b.WriteString("\n")
		kids := children[n.ID.String()]
		for i, k := range kids {
			walk(k, next, i == len(kids)-1, false)
		}
	}
	for _, r := range roots {
		walk(r, "", true, true)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

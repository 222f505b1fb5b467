package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// svgColors gives each variant a fixed colour in the picture.
var svgColors = map[string]string{
	"classic":           "#d62728",
	"baton-pg":          "#1f77b4",
	"baton-pg-plain":    "#17becf",
	"baton-embedded":    "#2ca02c",
	"baton-redis":       "#9467bd",
	"baton-redis-fsync": "#8c564b",
	"baton-memory":      "#7f7f7f",
}

// WriteSVG draws the deduplication data each variant stored over its
// measured time: rows of the classic processed table against live tokens.
// It is a plain SVG document with no scripts or external references.
func (r *Report) WriteSVG(w io.Writer) error {
	const (
		width, height            = 760, 420
		left, right, top, bottom = 80, 210, 50, 60
	)
	plotW, plotH := float64(width-left-right), float64(height-top-bottom)
	var series []Result
	var maxX float64
	var maxY int64
	for _, res := range r.Results {
		if res.Variant == "ceiling" || len(res.Samples) == 0 {
			continue
		}
		series = append(series, res)
		for _, s := range res.Samples {
			maxX = math.Max(maxX, s.At)
			maxY = max(maxY, s.Stored)
		}
	}
	// A logarithmic axis shows both the growing table and the flat line
	// of live tokens, four orders of magnitude apart.
	decades := max(2, int(math.Ceil(math.Log10(float64(max(maxY, 10))))))
	xRight := niceCeil(math.Max(maxX, 1))
	px := func(x float64) float64 { return float64(left) + x/xRight*plotW }
	py := func(y float64) float64 {
		return float64(top) + plotH - math.Log10(math.Max(y, 1))/float64(decades)*plotH
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold">Deduplication data stored while the process runs</text>`+"\n", left)
	fmt.Fprintf(&b, `<text x="%d" y="40" fill="#555">classic: rows in the processed-message table; baton: live tokens (= signals in flight)</text>`+"\n", left)
	// Axes and grid.
	for i := 0; i <= decades; i++ {
		y := math.Pow(10, float64(i))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e5e5"/>`+"\n", left, py(y), float64(left)+plotW, py(y))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, py(y)+4, thousands(int64(y)))
	}
	for i := 0; i <= 5; i++ {
		x := xRight * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#999"/>`+"\n", px(x), top+int(plotH), px(x), float64(top)+plotH+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(x), float64(top)+plotH+18, trimFloat(x))
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="#333"/>`+"\n", left, top, left, float64(top)+plotH)
	fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, float64(top)+plotH, float64(left)+plotW, float64(top)+plotH)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">running time per variant (s; warm-up and drain included)</text>`+"\n", float64(left)+plotW/2, height-18)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">rows / live tokens (log scale)</text>`+"\n", float64(top)+plotH/2)
	// Lines, and a legend with each variant's last and largest value.
	for i, res := range series {
		color := svgColors[res.Variant]
		if color == "" {
			color = "#333"
		}
		var pts []string
		for _, s := range res.Samples {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.At), py(float64(s.Stored))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		ly := top + 10 + i*34
		lx := width - right + 16
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+18, ly, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", lx+24, ly+4, html.EscapeString(res.Variant))
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555" font-size="11">end %s, max %s</text>`+"\n", lx+24, ly+18, thousands(res.StoredEnd), thousands(res.StoredMax))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// niceCeil rounds v up to 1, 1.5, 2, 3, 5 or 7.5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 3, 5, 7.5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(x float64) string {
	if x == math.Trunc(x) {
		return fmt.Sprintf("%.0f", x)
	}
	return fmt.Sprintf("%.1f", x)
}

// thousands formats n with thin separators: 1,234,567.
func thousands(n int64) string {
	s := fmt.Sprint(n)
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

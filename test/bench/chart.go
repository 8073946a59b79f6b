package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	stddraw "image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Size of the chart in pixels (at vgimg's 96 dpi).
const (
	chartWidth  = 1280
	chartHeight = 600
)

// chartColors gives each device its bar colour; devices not listed here
// are not drawn.
var chartColors = []struct {
	path  string
	label string
	color color.RGBA
}{
	{pathSidecar, "sidecar (stream)", color.RGBA{0x1f, 0x77, 0xb4, 0xff}},
	{pathVhost, "sidecar (vhost-user)", color.RGBA{0x2c, 0xa0, 0x2c, 0xff}},
	{pathVhostTSO, "sidecar (vhost-user, guest TSO)", color.RGBA{0x17, 0xbe, 0xcf, 0xff}},
	{pathTestpmd, "sidecar (vhost-user, DPDK testpmd)", color.RGBA{0x94, 0x67, 0xbd, 0xff}},
	{pathQEMU, "QEMU -netdev l2tpv3", color.RGBA{0xff, 0x7f, 0x0e, 0xff}},
	{pathLimit, "limit (the group's generator→recvmmsg)", color.RGBA{0x99, 0x99, 0x99, 0xff}},
}

// chartPanel is one direction's bars: a group per (size, mode) with one
// value per device (0 where a device was not measured).
type chartPanel struct {
	dir    string
	groups []cellKey            // Path empty: the group's size, mode (and dir)
	values map[string][]float64 // device → value per group
	ratios map[string][]*float64
}

// chartPanels lays the rows out as one panel per direction (encap, decap;
// the limit's loopback rows join every direction's group of the same size
// and mode), in the rows' order.
func chartPanels(rows []row) []chartPanel {
	var panels []chartPanel
	limit := map[cellKey]float64{}
	for _, r := range rows {
		if r.Path == pathLimit {
			limit[cellKey{"", "", r.FrameBytes, r.Mode}] = r.Mpps
		}
	}
	for _, r := range rows {
		if r.Direction == dirLoopback {
			continue
		}
		i := slices.IndexFunc(panels, func(p chartPanel) bool { return p.dir == r.Direction })
		if i < 0 {
			panels = append(panels, chartPanel{dir: r.Direction, values: map[string][]float64{}, ratios: map[string][]*float64{}})
			i = len(panels) - 1
		}
		p := &panels[i]
		g := cellKey{"", r.Direction, r.FrameBytes, r.Mode}
		j := slices.Index(p.groups, g)
		if j < 0 {
			p.groups = append(p.groups, g)
			j = len(p.groups) - 1
			for _, c := range chartColors {
				p.values[c.path] = append(p.values[c.path], 0)
				p.ratios[c.path] = append(p.ratios[c.path], nil)
			}
			p.values[pathLimit][j] = limit[cellKey{"", "", r.FrameBytes, r.Mode}]
		}
		if _, ok := p.values[r.Path]; ok {
			p.values[r.Path][j] = r.Mpps
			p.ratios[r.Path][j] = r.RatioQEMU
		}
	}
	return panels
}

// chartTitle is the figure's headline: what is compared, when, and over
// how many runs.
func chartTitle(m *meta) string {
	t := "l2tpv3-netdev vs QEMU's -netdev l2tpv3: Mpps, higher is better; ×N = ratio to QEMU"
	if m == nil {
		return t
	}
	var sub []string
	if !m.Started.IsZero() {
		sub = append(sub, m.Started.Format("2006-01-02"))
	}
	if m.Runs > 0 {
		sub = append(sub, fmt.Sprintf("median of %d", m.Runs))
	}
	if m.CPUs > 0 {
		sub = append(sub, fmt.Sprintf("%d CPUs", m.CPUs))
	}
	if m.Started.IsZero() {
		return t
	}
	sub = append(sub, fmt.Sprintf("encap sink UDP_GRO=%v", m.SinkGRO))
	return t + "\n" + strings.Join(sub, ", ")
}

// renderChart draws the grouped bar chart of rows: a panel per direction,
// a group of bars per frame size and mode, a bar per device, and the
// ratio to QEMU above each sidecar bar.
func renderChart(title string, rows []row) (image.Image, error) {
	panels := chartPanels(rows)
	if len(panels) == 0 {
		return nil, fmt.Errorf("chart: no encap or decap rows")
	}
	var present []int // indexes into chartColors of the devices measured
	for i, c := range chartColors {
		if slices.ContainsFunc(rows, func(r row) bool { return r.Path == c.path }) {
			present = append(present, i)
		}
	}
	// Sans rather than the serif default; this command draws nothing else.
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	// A panel's share of the width, less its axis, split between its groups.
	panelW := vg.Length(chartWidth)*vg.Inch/vgimg.DefaultDPI/vg.Length(len(panels)) - vg.Points(70)
	plots := make([]*plot.Plot, len(panels))
	for k, pn := range panels {
		p := plot.New()
		p.Title.Text = map[string]string{dirEncap: "encap: VM → network", dirDecap: "decap: network → VM"}[pn.dir]
		if p.Title.Text == "" {
			p.Title.Text = pn.dir
		}
		p.Title.TextStyle.Font.Size = vg.Points(13)
		p.Y.Label.Text = "Mpps"
		p.Y.Min = 0
		p.Legend.Top = true
		p.Legend.ThumbnailWidth = vg.Points(12)
		p.Legend.Padding = vg.Points(3)
		barW := min(panelW/vg.Length(len(pn.groups))*0.75/vg.Length(len(present)), vg.Points(28))
		names := make([]string, len(pn.groups))
		for j, g := range pn.groups {
			names[j] = fmt.Sprintf("%d B\n%s", g.Size, g.Mode)
		}
		ymax := 0.0
		for n, ci := range present {
			c := chartColors[ci]
			b, err := plotter.NewBarChart(plotter.Values(pn.values[c.path]), barW)
			if err != nil {
				return nil, fmt.Errorf("chart: %s %s: %w", pn.dir, c.path, err)
			}
			b.Color, b.LineStyle.Width = c.color, 0
			b.Offset = barW * vg.Length(float64(n)-float64(len(present)-1)/2)
			p.Add(b)
			if k == 0 {
				p.Legend.Add(c.label, b)
			}
			for _, v := range pn.values[c.path] {
				ymax = max(ymax, v)
			}
			if c.path == pathQEMU || c.path == pathLimit {
				continue
			}
			if l := ratioLabels(pn.values[c.path], pn.ratios[c.path], b.Offset); l != nil {
				l.upright = l.widest() > barW // side by side they would overlap
				p.Add(l)
			}
		}
		p.Y.Max = ymax * 1.3 // room for the legend and the labels
		p.NominalX(names...)
		p.X.Min, p.X.Max = -0.5, float64(len(names))-0.5
		plots[k] = p
	}
	img := image.NewRGBA(image.Rect(0, 0, chartWidth, chartHeight))
	stddraw.Draw(img, img.Bounds(), image.White, image.Point{}, stddraw.Src)
	c := vgimg.NewWith(vgimg.UseImage(img))
	dc := draw.New(c)
	head := text.Style{Color: color.Black, Font: font.From(plot.DefaultFont, vg.Points(15)),
		XAlign: draw.XCenter, YAlign: draw.YTop, Handler: plot.DefaultTextHandler}
	dc.FillText(head, vg.Point{X: dc.Center().X, Y: dc.Max.Y - vg.Points(8)}, title)
	body := draw.Crop(dc, 0, 0, 0, -head.Height(title)-vg.Points(16))
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Points(24), PadLeft: vg.Points(8),
		PadRight: vg.Points(12), PadBottom: vg.Points(8)}
	canvases := plot.Align([][]*plot.Plot{plots}, tiles, body)
	for k, p := range plots {
		p.Draw(canvases[0][k])
	}
	return c.Image(), nil
}

// ratioLabels puts "×ratio" above each bar of one device (offset is the
// bar's offset within its group), or returns nil when there is no ratio.
func ratioLabels(values []float64, ratios []*float64, offset vg.Length) *offsetLabels {
	l := &offsetLabels{offset: offset}
	for j, r := range ratios {
		if r == nil || values[j] == 0 {
			continue
		}
		s := fmt.Sprintf("×%.2f", *r)
		if *r >= 10 {
			s = fmt.Sprintf("×%.1f", *r)
		}
		l.xys = append(l.xys, plotter.XY{X: float64(j), Y: values[j]})
		l.text = append(l.text, s)
	}
	if len(l.text) == 0 {
		return nil
	}
	return l
}

// offsetLabels draws text centred above points shifted right by offset
// (plotter.Labels cannot shift by a length in one axis and centre),
// reading upwards when upright.
type offsetLabels struct {
	offset  vg.Length
	xys     plotter.XYs
	text    []string
	upright bool
}

// style is the labels' text style.
func (l *offsetLabels) style() text.Style {
	st := text.Style{Color: color.Black, Font: font.From(plot.DefaultFont, vg.Points(10)),
		XAlign: draw.XCenter, YAlign: draw.YBottom, Handler: plot.DefaultTextHandler}
	if l.upright {
		st.Rotation, st.XAlign, st.YAlign = math.Pi/2, draw.XLeft, draw.YCenter
	}
	return st
}

// widest is the width of the widest label, written level.
func (l *offsetLabels) widest() vg.Length {
	sty := l.style()
	sty.Rotation = 0
	var w vg.Length
	for _, t := range l.text {
		w = max(w, sty.Width(t))
	}
	return w
}

// Plot implements plot.Plotter.
func (l *offsetLabels) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	sty := l.style()
	for i, xy := range l.xys {
		c.FillText(sty, vg.Point{X: trX(xy.X) + l.offset, Y: trY(xy.Y) + vg.Points(2)}, l.text[i])
	}
}

// DataRange implements plot.DataRanger.
func (l *offsetLabels) DataRange() (xmin, xmax, ymin, ymax float64) {
	return plotter.XYRange(l.xys)
}

// writeChart renders rows into a PNG file at path, creating its directory.
func writeChart(path, title string, rows []row) error {
	img, err := renderChart(title, rows)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readResults loads a results file the harness wrote.
func readResults(path string) (*meta, []row, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var res struct {
		Meta *meta `json:"meta"`
		Rows []row `json:"rows"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(res.Rows) == 0 {
		return nil, nil, fmt.Errorf("%s: no rows", path)
	}
	return res.Meta, res.Rows, nil
}

// saveChart writes the chart of a run to path (relative: to the module
// root; empty: no chart) and says so.
func saveChart(path string, m *meta, rows []row) error {
	if path == "" {
		return nil
	}
	if !filepath.IsAbs(path) {
		if root, err := moduleRoot(); err == nil {
			path = filepath.Join(root, path)
		}
	}
	if err := writeChart(path, chartTitle(m), rows); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	fmt.Printf("wrote %s\n", path)
	return nil
}

// chartFrom re-renders the chart of a results file without measuring.
func chartFrom(results, path string) error {
	m, rows, err := readResults(results)
	if err != nil {
		return err
	}
	if path == "" {
		return fmt.Errorf("-chart-from needs a -chart path")
	}
	return saveChart(path, m, rows)
}

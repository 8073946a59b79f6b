package config

import (
	"log/slog"
	"os"
	"strings"
	"testing"
)

// readFile returns a file under testdata as text.
func readFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// A good file gives every port and the daemon settings.
func TestConfigGood(t *testing.T) {
	f, err := Parse(readFile(t, "good.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Ports) != 2 || len(f.Refused) != 0 {
		t.Fatalf("ports %d refused %v", len(f.Ports), f.Refused)
	}
	p1, p2 := f.Ports[0], f.Ports[1]
	if p1.Name != "vm1-net0" || p1.Stream == nil || p1.Batch != 32 || p1.L2TP.SessionID != 0x20 {
		t.Errorf("port 1: %+v", p1)
	}
	if p2.Name != "vm2-net0" || p2.VhostUser == nil || p2.VhostUser.Path != "/tmp/x/vm2.sock" || p2.Batch != 64 {
		t.Errorf("port 2: %+v", p2)
	}
	if f.Admin != "/tmp/x/admin.sock" || f.Metrics != "127.0.0.1:9469" || f.LogLevel == nil || *f.LogLevel != slog.LevelWarn {
		t.Errorf("daemon settings: admin %q metrics %q level %v", f.Admin, f.Metrics, f.LogLevel)
	}
	if f.Pcaps["vm1-net0"] != "/tmp/x/vm1.pcap" {
		t.Errorf("pcap: %v", f.Pcaps)
	}
}

// Unknown keys are refused with the key named: at the top the whole file,
// in a [[port]] that port.
func TestConfigUnknownKeys(t *testing.T) {
	goodConfig := readFile(t, "good.toml")
	_, err := Parse("metric = \"127.0.0.1:1\"\n" + goodConfig)
	if err == nil || !strings.Contains(err.Error(), `unknown key "metric" (did you mean "metrics"?)`) {
		t.Fatalf("top-level typo: %v", err)
	}
	typo := strings.Replace(goodConfig, "batch = 32", "bacth = 32", 1)
	f, err := Parse(typo)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Ports) != 1 || len(f.Refused) != 1 {
		t.Fatalf("ports %d refused %d", len(f.Ports), len(f.Refused))
	}
	r := f.Refused[0]
	if r.Spec.Name != "vm1-net0" || !strings.Contains(r.Err.Error(), `unknown key "port.bacth" (did you mean "port.batch"?)`) {
		t.Errorf("refused %s: %v", r.Spec.Name, r.Err)
	}
}

// A syntax error refuses the file with its line.
func TestConfigSyntaxError(t *testing.T) {
	_, err := Parse("[[port]]\nname = \"a\nx")
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("got %v", err)
	}
}

// One broken port among good ones: the good ones are kept, every broken
// one is refused by name with its reason.
func TestConfigBrokenPorts(t *testing.T) {
	f, err := Parse(readFile(t, "broken.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var good []string
	for _, p := range f.Ports {
		good = append(good, p.Name)
	}
	if strings.Join(good, ",") != "good1,good2" {
		t.Errorf("good ports: %v", good)
	}
	want := []struct{ name, msg string }{
		{"nodst", "--l2tpv3: missing dst"},
		{"twofronts", "exclusive"},
		{"good1", "name good1 is also [[port]] 1's"},
		{"samesock", "socket /tmp/x/good1.sock is also port good1's"},
		{"[[port]] 7", "port.name is required"},
		{"[[port]] 7", "port.batch: want an integer"},
	}
	got := map[string]string{}
	for _, r := range f.Refused {
		got[r.Spec.Name] += r.Err.Error()
	}
	for _, w := range want {
		if !strings.Contains(got[w.name], w.msg) {
			t.Errorf("port %s: got %q, want %q", w.name, got[w.name], w.msg)
		}
	}
}

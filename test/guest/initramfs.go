package guest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// recipeVersion changes whenever the layout of the initramfs changes in a
// way the recipe hash would not see.
const recipeVersion = "l2t-guest-1"

// netModules are loaded at boot, in this order; l2tpModules when the kernel
// command line has l2t.l2tp=1. Dependencies found in a module's modinfo are
// added before it, so the lists need not be complete.
var (
	netModules = []string{"virtio_ring", "virtio", "virtio_pci_modern_dev",
		"virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "virtio_net"}
	l2tpModules = []string{"udp_tunnel", "ip6_udp_tunnel", "l2tp_core", "l2tp_netlink",
		"l2tp_eth", "l2tp_ip", "l2tp_ip6"}
)

//go:embed init.sh
var initScript []byte

//go:embed shell.sh
var shellScript []byte

// recipe is everything from the host that goes into the initramfs.
type recipe struct {
	deb     string   // the kernel .deb
	busybox string   // static busybox
	ip      string   // iproute2's ip (symlinks resolved)
	libs    []string // ip's shared libraries as ldd names them (loader included)
}

func collectRecipe(deb string) (recipe, error) {
	r := recipe{deb: deb}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return r, err
	}
	if static, err := isStaticELF(bb); err != nil || !static {
		return r, fmt.Errorf("%s is not a static busybox (install busybox-static)", bb)
	}
	r.busybox = bb
	for _, c := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		real, err := filepath.EvalSymlinks(c)
		if err == nil && !strings.Contains(filepath.Base(real), "busybox") {
			r.ip = real
			break
		}
	}
	if r.ip == "" {
		return r, errors.New("iproute2's ip not found (install iproute2)")
	}
	r.libs, err = sharedLibs(r.ip)
	return r, err
}

// hash names the initramfs this recipe makes.
func (r recipe) hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%q\n%q\n", recipeVersion, netModules, l2tpModules)
	h.Write(initScript)
	h.Write(shellScript)
	hashStat(h, append([]string{r.deb, r.busybox, r.ip}, r.libs...)...)
	return shortHash(h.Sum(nil))
}

var lddLibRE = regexp.MustCompile(`(?m)^\s*(?:\S+ => )?(/\S+) \(0x`)

// sharedLibs lists the absolute paths of bin's shared libraries per ldd.
func sharedLibs(bin string) ([]string, error) {
	out, err := runCmd("", "ldd", bin)
	if err != nil {
		return nil, err
	}
	var libs []string
	for _, m := range lddLibRE.FindAllStringSubmatch(string(out), -1) {
		libs = append(libs, m[1])
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s listed no libraries:\n%s", bin, out)
	}
	return libs, nil
}

// isStaticELF reports whether the ELF file at p has no program interpreter.
func isStaticELF(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// debContents is what one pass over the kernel package found.
type debContents struct {
	kver    string
	kernel  []byte
	raw     map[string]kmodFile // wanted modules, as stored
	builtin map[string]bool     // modules built into the kernel
}

type kmodFile struct {
	path string // path inside the package
	data []byte // possibly compressed (.ko.xz, .ko.zst, .ko.gz)
}

var (
	kernelRE = regexp.MustCompile(`^(?:usr/)?boot/vmlinuz-(.+)$`)
	moduleRE = regexp.MustCompile(`^(?:usr/)?lib/modules/([^/]+)/kernel/.*/([^/]+)\.ko(\.xz|\.zst|\.gz)?$`)
	builtRE  = regexp.MustCompile(`^(?:usr/)?lib/modules/([^/]+)/modules\.builtin$`)
)

// modName normalises a module file or dependency name.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// scanDeb streams the package's files and keeps the kernel, the modules
// named in want and the list of built-in modules.
func scanDeb(deb string, want map[string]bool) (*debContents, error) {
	cmd := exec.Command("dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &debContents{raw: map[string]kmodFile{}, builtin: map[string]bool{}}
	tr := tar.NewReader(out)
	var scanErr error
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			scanErr = err
			break
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(path.Clean(hdr.Name), "/")
		if m := kernelRE.FindStringSubmatch(name); m != nil {
			c.kver = m[1]
			if c.kernel, scanErr = io.ReadAll(tr); scanErr != nil {
				break
			}
		} else if m := moduleRE.FindStringSubmatch(name); m != nil && want[modName(m[2])] {
			data, err := io.ReadAll(tr)
			if err != nil {
				scanErr = err
				break
			}
			c.raw[modName(m[2])] = kmodFile{path: name, data: data}
		} else if m := builtRE.FindStringSubmatch(name); m != nil {
			data, err := io.ReadAll(tr)
			if err != nil {
				scanErr = err
				break
			}
			for _, l := range strings.Fields(string(data)) {
				c.builtin[modName(strings.TrimSuffix(path.Base(l), ".ko"))] = true
			}
		}
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil && scanErr == nil {
		scanErr = fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, stderr.String())
	}
	if scanErr != nil {
		return nil, scanErr
	}
	if c.kernel == nil {
		return nil, fmt.Errorf("no boot/vmlinuz-* in %s", deb)
	}
	return c, nil
}

// decompressModule returns the ELF bytes of a module file.
func decompressModule(f kmodFile) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(f.path, ".ko"):
		return f.data, nil
	case strings.HasSuffix(f.path, ".gz"):
		zr, err := gzip.NewReader(bytes.NewReader(f.data))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(f.path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(f.path, ".zst"):
		tool = "zstd"
	}
	cmd := exec.Command(tool, "-dc")
	cmd.Stdin = bytes.NewReader(f.data)
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w", tool, f.path, err)
	}
	return out, nil
}

// moduleDepends returns the "depends=" list of a module's .modinfo.
func moduleDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, modName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// kernelModules holds the modules taken from the package, decompressed.
type kernelModules struct {
	kver    string
	kernel  []byte
	ko      map[string][]byte   // name → ELF
	deps    map[string][]string // name → modules it needs (not built in)
	builtin map[string]bool
}

// loadKernelModules reads the kernel and the closure of roots under
// "depends" from the package; a dependency not among the modules kept in the
// first pass costs one more pass.
func loadKernelModules(deb string, roots []string) (*kernelModules, error) {
	km := &kernelModules{ko: map[string][]byte{}, deps: map[string][]string{}}
	want := map[string]bool{}
	for _, r := range roots {
		want[r] = true
	}
	for pass := 0; pass < 8; pass++ {
		c, err := scanDeb(deb, want)
		if err != nil {
			return nil, err
		}
		km.kver, km.kernel, km.builtin = c.kver, c.kernel, c.builtin
		grew := false
		names := make([]string, 0, len(want))
		for n := range want {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if _, done := km.ko[n]; done || km.builtin[n] {
				continue
			}
			f, ok := c.raw[n]
			if !ok {
				return nil, fmt.Errorf("module %s is neither in %s nor built in", n, filepath.Base(deb))
			}
			ko, err := decompressModule(f)
			if err != nil {
				return nil, err
			}
			deps, err := moduleDepends(ko)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.path, err)
			}
			km.ko[n] = ko
			km.deps[n] = deps
			for _, d := range deps {
				if !want[d] {
					want[d] = true
					grew = true
				}
			}
		}
		if !grew {
			return km, nil
		}
	}
	return nil, errors.New("module dependencies do not settle")
}

// loadOrder returns roots and their dependencies, each after what it needs;
// built-in modules are left out.
func (km *kernelModules) loadOrder(roots []string, seen map[string]bool) []string {
	var order []string
	var visit func(string)
	visit = func(n string) {
		if seen[n] || km.builtin[n] {
			return
		}
		seen[n] = true
		for _, d := range km.deps[n] {
			visit(d)
		}
		order = append(order, n)
	}
	for _, r := range roots {
		visit(r)
	}
	return order
}

// buildFromDeb writes a.Kernel (if missing) and a.Initrd. If the kernel
// cannot be made PVH-bootable, a.Kernel becomes the bzImage.
func buildFromDeb(deb, kver string, r recipe, a *Assets) error {
	km, err := loadKernelModules(deb, append(append([]string{}, netModules...), l2tpModules...))
	if err != nil {
		return err
	}
	if km.kver != kver {
		return fmt.Errorf("%s holds kernel %s, want %s", filepath.Base(deb), km.kver, kver)
	}
	if !fileExists(a.Kernel) {
		kernel := km.kernel
		kdir := filepath.Dir(a.Kernel)
		if a.Kernel == pvhPath(kdir) {
			if vmlinux, err := pvhKernel(km.kernel); err == nil {
				kernel = vmlinux
			} else {
				// Boot the bzImage instead, now and from now on.
				os.WriteFile(filepath.Join(kdir, "vmlinux.failed"), []byte(err.Error()+"\n"), 0o644)
				a.Kernel = filepath.Join(kdir, "vmlinuz")
			}
		}
		if err := writeFileAtomic(a.Kernel, kernel, 0o644); err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := writeInitramfs(zw, km, r); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return writeFileAtomic(a.Initrd, buf.Bytes(), 0o644)
}

// writeInitramfs writes the initramfs cpio (uncompressed) to w.
func writeInitramfs(w io.Writer, km *kernelModules, r recipe) error {
	c := newCPIOWriter(w)
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp", "/run", "/root", "/mnt", "/etc", "/bin", "/sbin", "/usr/bin", "/usr/sbin"} {
		c.mkdirAll(d)
	}
	c.charDev("/dev/console", 0o600, 5, 1)
	c.file("/init", 0o755, initScript)
	c.file("/lib/l2t/shell", 0o755, shellScript)
	c.file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	c.file("/etc/group", 0o644, []byte("root:x:0:\n"))

	bb, err := os.ReadFile(r.busybox)
	if err != nil {
		return err
	}
	c.file("/bin/busybox", 0o755, bb)
	c.symlink("/bin/sh", "busybox")

	ip, err := os.ReadFile(r.ip)
	if err != nil {
		return err
	}
	c.file("/usr/sbin/ip", 0o755, ip)
	for _, lib := range r.libs {
		data, err := os.ReadFile(lib) // follows symlinks
		if err != nil {
			return err
		}
		c.file(lib, 0o755, data)
	}

	seen := map[string]bool{}
	lists := []struct {
		name  string
		roots []string
	}{{"net.list", netModules}, {"l2tp.list", l2tpModules}}
	for _, l := range lists {
		order := km.loadOrder(l.roots, seen)
		for _, n := range order {
			c.file("/lib/l2t/modules/"+n+".ko", 0o644, km.ko[n])
		}
		c.file("/lib/l2t/"+l.name, 0o644, []byte(strings.Join(order, "\n")+"\n"))
	}
	return c.Close()
}

// writeFileAtomic writes data to a temporary file beside p and renames it.
func writeFileAtomic(p string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

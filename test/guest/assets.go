package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CacheEnv names the environment variable that overrides [DefaultCacheDir].
const CacheEnv = "L2TPV3_GUEST_CACHE"

// DefaultCacheDir is where guest kernels and initramfs images are cached.
const DefaultCacheDir = "/var/tmp/l2tpv3-netdev-guest"

// Assets are the files a guest boots from.
type Assets struct {
	Kernel        string // the Debian kernel: its ELF vmlinux (PVH boot) or else its bzImage
	Initrd        string // gzip-compressed newc cpio made by this package
	KernelVersion string // kernel release, e.g. "6.1.0-56-amd64"
}

// hostPackages maps a command the harness needs to the Debian package that
// provides it. busybox is checked for being static as well.
var hostPackages = []struct{ cmd, pkg string }{
	{"qemu-system-x86_64", "qemu-system-x86"},
	{"busybox", "busybox-static"},
	{"xz", "xz-utils"},
	{"ip", "iproute2"},
}

var (
	assetsMu   sync.Mutex // guards assetsDone
	assetsDone *Assets    // the result of the first successful EnsureAssets
)

// EnsureAssets returns the guest kernel and initramfs, building them if the
// cache lacks them. When run as root it first installs whatever Debian
// packages are missing (QEMU, busybox-static, xz-utils, iproute2), running
// apt-get update once if the package lists are empty or an install fails.
// It downloads (never installs) the kernel package that linux-image-amd64
// depends on. A second call in the same process returns at once; concurrent
// processes serialise on a lock file in the cache directory.
func EnsureAssets() (Assets, error) {
	assetsMu.Lock()
	defer assetsMu.Unlock()
	if assetsDone != nil {
		return *assetsDone, nil
	}
	a, err := ensureAssets()
	if err != nil {
		return Assets{}, fmt.Errorf("guest assets: %w", err)
	}
	assetsDone = &a
	return a, nil
}

// CacheDir returns the cache directory: $L2TPV3_GUEST_CACHE or DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv(CacheEnv); d != "" {
		return d
	}
	return DefaultCacheDir
}

func ensureAssets() (Assets, error) {
	dir := CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Assets{}, err
	}
	unlock, err := lockFile(filepath.Join(dir, "lock"))
	if err != nil {
		return Assets{}, err
	}
	defer unlock()

	if err := ensureHostPackages(); err != nil {
		return Assets{}, err
	}
	pkg, err := kernelPackage(dir)
	if err != nil {
		return Assets{}, err
	}
	kver := strings.TrimPrefix(pkg, "linux-image-")
	kdir := filepath.Join(dir, kver)
	deb, err := kernelDeb(kdir, pkg)
	if err != nil {
		return Assets{}, err
	}
	r, err := collectRecipe(deb)
	if err != nil {
		return Assets{}, err
	}
	a := Assets{
		Kernel:        kernelPath(kdir),
		Initrd:        filepath.Join(kdir, "initrd-"+r.hash()+".gz"),
		KernelVersion: kver,
	}
	if !fileExists(a.Kernel) || !fileExists(a.Initrd) {
		if err := buildFromDeb(deb, kver, r, &a); err != nil {
			return Assets{}, err
		}
	}
	// Images of other recipes may belong to another checkout sharing the
	// cache: only those unused for a day go. The mtime marks use.
	now := time.Now()
	os.Chtimes(a.Initrd, now, now)
	old, _ := filepath.Glob(filepath.Join(kdir, "initrd-*.gz"))
	for _, f := range old {
		if st, err := os.Stat(f); err == nil && f != a.Initrd && now.Sub(st.ModTime()) > 24*time.Hour {
			os.Remove(f)
		}
	}
	return a, nil
}

// pvhPath is where the PVH-bootable vmlinux of kdir's kernel is cached.
func pvhPath(kdir string) string { return filepath.Join(kdir, "vmlinux") }

// kernelPath picks the kernel to boot: the extracted vmlinux (PVH boot,
// faster under TCG) unless extracting it failed before, recorded by a
// "vmlinux.failed" file; then the bzImage, vmlinuz.
func kernelPath(kdir string) string {
	if fileExists(filepath.Join(kdir, "vmlinux.failed")) {
		return filepath.Join(kdir, "vmlinuz")
	}
	return pvhPath(kdir)
}

// lockFile takes an exclusive flock on path and returns its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// ensureHostPackages installs the Debian packages behind missing commands.
func ensureHostPackages() error {
	var missing []string
	for _, hp := range hostPackages {
		p, err := exec.LookPath(hp.cmd)
		if err == nil && hp.cmd == "busybox" {
			if static, _ := isStaticELF(p); !static {
				err = errors.New("not static")
			}
		}
		if err != nil {
			missing = append(missing, hp.pkg)
		}
	}
	for _, c := range []string{"apt-get", "apt-cache", "dpkg-deb"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s not found: guests need a Debian host", c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing Debian packages %v and not root to install them", missing)
	}
	if !aptListsPresent() {
		if err := aptUpdate(); err != nil {
			return err
		}
	}
	args := append([]string{"install", "-y", "-o", "DPkg::Lock::Timeout=300"}, missing...)
	if _, err := runCmd("", "apt-get", args...); err != nil {
		// Stale lists give 404s: refresh once and try again.
		if uerr := aptUpdate(); uerr != nil {
			return errors.Join(err, uerr)
		}
		if _, err := runCmd("", "apt-get", args...); err != nil {
			return err
		}
	}
	return nil
}

var aptUpdated bool // apt-get update has run in this process; guarded by assetsMu

func aptUpdate() error {
	if aptUpdated {
		return nil
	}
	if os.Geteuid() != 0 {
		return errors.New("apt package lists missing and not root to run apt-get update")
	}
	aptUpdated = true
	_, err := runCmd("", "apt-get", "update", "-o", "DPkg::Lock::Timeout=300")
	return err
}

func aptListsPresent() bool {
	m, _ := filepath.Glob("/var/lib/apt/lists/*_Packages*")
	return len(m) > 0
}

// runCmd runs name with args (in dir, if set) non-interactively and returns
// its standard output; the error carries the tail of its combined output.
func runCmd(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		out := stdout.String() + stderr.String()
		if len(out) > 2000 {
			out = "…" + out[len(out)-2000:]
		}
		return nil, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return stdout.Bytes(), nil
}

var kernelPkgRE = regexp.MustCompile(`\blinux-image-[0-9]+\.[0-9][^\s_]*-amd64`)

// kernelPackage names the kernel package that linux-image-amd64 depends on
// (e.g. linux-image-6.1.0-56-amd64). Without usable package lists it takes
// the newest kernel already in the cache, else runs apt-get update.
func kernelPackage(cache string) (string, error) {
	for attempt := 0; ; attempt++ {
		out, err := runCmd("", "apt-cache", "depends", "linux-image-amd64")
		if err == nil {
			if m := kernelPkgRE.FindString(string(out)); m != "" {
				return m, nil
			}
		}
		if c := newestCachedKernel(cache); c != "" {
			return c, nil
		}
		if attempt > 0 || aptUpdated {
			if err == nil {
				err = fmt.Errorf("no linux-image-*-amd64 dependency in:\n%s", out)
			}
			return "", fmt.Errorf("finding the guest kernel package: %w", err)
		}
		if uerr := aptUpdate(); uerr != nil {
			return "", uerr
		}
	}
}

// newestCachedKernel returns the package name of the most recently used
// kernel in the cache that has its .deb, or "".
func newestCachedKernel(cache string) string {
	debs, _ := filepath.Glob(filepath.Join(cache, "*", "linux-image-*.deb"))
	sort.Slice(debs, func(i, j int) bool {
		a, _ := os.Stat(debs[i])
		b, _ := os.Stat(debs[j])
		return a != nil && b != nil && a.ModTime().After(b.ModTime())
	})
	for _, d := range debs {
		if m := kernelPkgRE.FindString(filepath.Base(d)); m != "" {
			return m
		}
	}
	return ""
}

// kernelDeb returns the cached .deb of pkg in kdir, downloading it first if
// needed.
func kernelDeb(kdir, pkg string) (string, error) {
	if d := findDeb(kdir, pkg); d != "" {
		return d, nil
	}
	tmp := filepath.Join(kdir, "download")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := runCmd(tmp, "apt-get", "download", pkg); err != nil {
		if uerr := aptUpdate(); uerr != nil {
			return "", errors.Join(err, uerr)
		}
		if _, err := runCmd(tmp, "apt-get", "download", pkg); err != nil {
			return "", err
		}
	}
	got := findDeb(tmp, pkg)
	if got == "" {
		return "", fmt.Errorf("apt-get download %s left no .deb", pkg)
	}
	dst := filepath.Join(kdir, filepath.Base(got))
	if err := os.Rename(got, dst); err != nil {
		return "", err
	}
	return dst, nil
}

func findDeb(dir, pkg string) string {
	m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if len(m) == 0 {
		return ""
	}
	sort.Strings(m)
	return m[len(m)-1]
}

// hashStat feeds each file's path, size and modification time to a
// recipe hash; contents are not read (they are large and rarely change
// without their mtime).
func hashStat(h interface{ Write([]byte) (int, error) }, paths ...string) {
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			fmt.Fprintf(h, "%s missing\n", p)
			continue
		}
		fmt.Fprintf(h, "%s %d %d\n", p, st.Size(), st.ModTime().UnixNano())
	}
}

// shortHash is the first 12 hex digits of sha256(b).
func shortHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:6])
}

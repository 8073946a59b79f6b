package guest

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// cpioWriter writes a "newc" (SVR4, no CRC) cpio archive, the format the
// Linux kernel unpacks as an initramfs. Entries carry uid/gid 0 and mtime 0,
// so equal inputs give byte-equal archives. The kernel does not create parent
// directories: callers add each directory before what it holds (mkdirAll
// does so and remembers what it made).
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool // directories already written
	err  error           // first write error; later writes are skipped
}

// Mode bits of the newc header (the same as st_mode).
const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
	cpioSymlink = 0o120000
	cpioCharDev = 0o020000
)

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<16), dirs: map[string]bool{"": true, ".": true, "/": true}}
}

// header writes one entry header and its name; the caller writes size bytes
// of data next and then calls pad.
func (c *cpioWriter) header(name string, mode uint32, size int, rdevMajor, rdevMinor uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		name = "."
	}
	nlink := 1
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	if c.err != nil {
		return
	}
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	_, c.err = c.w.Write(b)
}

// pad writes zero bytes up to the next multiple of four of n.
func (c *cpioWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// mkdirAll adds dir and any missing parents, mode 0755.
func (c *cpioWriter) mkdirAll(dir string) {
	dir = path.Clean("/" + dir)
	if c.dirs[dir] {
		return
	}
	c.mkdirAll(path.Dir(dir))
	c.header(dir, cpioDir|0o755, 0, 0, 0)
	c.dirs[dir] = true
}

// file adds a regular file (and its parent directories).
func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	c.mkdirAll(path.Dir(path.Clean("/" + name)))
	c.header(name, cpioRegular|perm, len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

// symlink adds name pointing at target.
func (c *cpioWriter) symlink(name, target string) {
	c.mkdirAll(path.Dir(path.Clean("/" + name)))
	c.header(name, cpioSymlink|0o777, len(target), 0, 0)
	c.write([]byte(target))
	c.pad(len(target))
}

// charDev adds a character device node.
func (c *cpioWriter) charDev(name string, perm, major, minor uint32) {
	c.mkdirAll(path.Dir(path.Clean("/" + name)))
	c.header(name, cpioCharDev|perm, 0, major, minor)
}

// Close writes the trailer and flushes; it does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err != nil {
		return c.err
	}
	return c.w.Flush()
}

//go:build armbe || arm64be || m68k || mips || mips64 || mips64p32 || ppc || ppc64 || s390 || s390x || shbe || sparc || sparc64

package vhostuser

// The ring accessors read little-endian u16 indexes out of native 32-bit atomic words;
// refuse to build where that would be wrong rather than corrupt a guest.
var _ = "vhostuser supports little-endian hosts only" + 1

// Command mkguest builds (or finds in the cache) the test guest's kernel and
// initramfs and prints their paths, for shell scripts and the Makefile demo:
//
//	eval "$(go run ./test/guest/cmd/mkguest -sh)"
//	qemu-system-x86_64 -kernel "$KERNEL" -initrd "$INITRD" …
//
// Without -sh it prints the kernel path and the initrd path on two lines.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

func main() {
	sh := flag.Bool("sh", false, "print KERNEL=…, INITRD=… and KERNEL_VERSION=… shell assignments")
	flag.Parse()
	a, err := guest.EnsureAssets()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkguest:", err)
		os.Exit(1)
	}
	if *sh {
		fmt.Printf("KERNEL=%s\nINITRD=%s\nKERNEL_VERSION=%s\n", a.Kernel, a.Initrd, a.KernelVersion)
		return
	}
	fmt.Println(a.Kernel)
	fmt.Println(a.Initrd)
}

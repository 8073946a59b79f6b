package main

import (
	"fmt"
	"os"
	"testing"
)

// runner lets the test/guest helpers, written for tests, run in a plain
// program: it logs, collects cleanups and exits on a fatal error. Methods
// it does not override are never called by those helpers.
type runner struct {
	testing.TB
	cleanups []func()
	failed   bool
}

// newRunner returns a runner for main.
func newRunner() *runner { return &runner{} }

func (r *runner) Helper()                           {}
func (r *runner) Name() string                      { return "demo" }
func (r *runner) Failed() bool                      { return r.failed }
func (r *runner) Cleanup(f func())                  { r.cleanups = append(r.cleanups, f) }
func (r *runner) Log(args ...any)                   { fmt.Fprintln(os.Stderr, args...) }
func (r *runner) Logf(format string, args ...any)   { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (r *runner) Error(args ...any)                 { r.failed = true; r.Log(args...) }
func (r *runner) Errorf(format string, args ...any) { r.failed = true; r.Logf(format, args...) }
func (r *runner) Fatal(args ...any)                 { r.Error(args...); r.exit() }
func (r *runner) Fatalf(format string, args ...any) { r.Errorf(format, args...); r.exit() }
func (r *runner) Skip(args ...any)                  { r.Fatal(append([]any{"cannot run:"}, args...)...) }
func (r *runner) TempDir() string {
	d, err := os.MkdirTemp("", "l2tpv3-netdev-demo-")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// finish runs the cleanups, newest first, and sets the exit status.
func (r *runner) finish() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
	if r.failed {
		os.Exit(1)
	}
}

// exit ends the program after a fatal error, cleaning up first.
func (r *runner) exit() {
	r.finish()
	os.Exit(1)
}

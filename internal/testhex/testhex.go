// Package testhex reads the golden bytes tests spell out in hex.
package testhex

import (
	"encoding/hex"
	"strings"
	"testing"
)

// Decode decodes s, hex digits with spaces allowed between them, failing t
// on anything else.
func Decode(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

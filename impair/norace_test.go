//go:build !race

package impair_test

// million is the frames each statistics test runs (10^5 under -race).
const million = 1_000_000

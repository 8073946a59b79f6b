//go:build race

package impair_test

// million is 10^5 under the race detector, which slows the statistics
// tests tenfold; plain runs use 10^6 frames.
const million = 100_000

package backend

import (
	"io"
	"log/slog"
)

// discardLogger is a logger for tests that check behaviour, not logs.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

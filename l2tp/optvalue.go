package l2tp

import (
	"math"
	"strconv"
	"time"
)

// parseValue reads val as the given kind of option, naming key and the raw
// value in any error.
func parseValue(key, val string, kind optKind) (optValue, error) {
	v := optValue{raw: val}
	var err error
	switch kind {
	case kindString, kindIgnored:
	case kindBool:
		v.on, err = parseBool(key, val)
	case kindPort:
		v.num, err = parsePort(key, val)
	case kindTOS:
		if v.on = val == "inherit"; !v.on {
			v.num, err = parseNumber(key, val, 8)
		}
	case kindTTL:
		v.num, err = parseNumber(key, val, 8)
		if err == nil && v.num == 0 {
			err = cfgErr(key, "%s=%s: must be 1..255 (leave it out for the system's default)", key, val)
		}
	case kindU32:
		v.num, err = parseNumber(key, val, 32)
	case kindU64:
		v.num, err = parseNumber(key, val, 64)
	case kindOffset:
		v.num, err = parseNumber(key, val, 64)
		if err == nil && v.num > MaxOffset {
			err = cfgErr(key, "%s=%s: must be 0..%d", key, val, MaxOffset)
		}
	case kindMTU:
		v.num, err = parseNumber(key, val, 64)
		if err == nil && (v.num < MinUnderlayMTU || v.num > MaxUnderlayMTU) {
			err = cfgErr(key, "%s=%s: must be %d..%d", key, val, MinUnderlayMTU, MaxUnderlayMTU)
		}
	case kindOversize:
		v.oversize, err = parseOversize(key, val)
	case kindL2Spec:
		v.spec, err = parseL2Spec(key, val)
	case kindSeq:
		v.seq, err = parseSeq(key, val)
	case kindMillis:
		v.num, err = parseMillis(key, val)
	}
	return v, err
}

// parseBool reads QEMU's boolean spellings.
func parseBool(key, val string) (bool, error) {
	switch val {
	case "on", "yes", "true":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, cfgErr(key, "%s=%q: not a boolean (on/off, yes/no, true/false)", key, val)
}

// parseNumber reads a decimal or 0x-hex unsigned number of at most bits bits.
// A decimal with a leading zero is refused: QEMU would read it as octal.
func parseNumber(key, val string, bits int) (uint64, error) {
	digits, base := val, 10
	if len(val) > 2 && (val[:2] == "0x" || val[:2] == "0X") {
		digits, base = val[2:], 16
	}
	n, err := strconv.ParseUint(digits, base, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return 0, cfgErr(key, "%s=%q: wider than %d bits", key, val, bits)
		}
		return 0, cfgErr(key, "%s=%q: not a number", key, val)
	}
	if base == 10 && len(val) > 1 && val[0] == '0' {
		return 0, cfgErr(key, "%s=%q: leading zero (QEMU would read octal): write it in decimal or 0x hex", key, val)
	}
	if bits < 64 && n > math.MaxUint64>>(64-bits) {
		return 0, cfgErr(key, "%s=%s: wider than %d bits", key, val, bits)
	}
	return n, nil
}

// parsePort reads a decimal UDP port 1..65535 (no service names).
func parsePort(key, val string) (uint64, error) {
	n, err := strconv.ParseUint(val, 10, 16)
	if err != nil {
		return 0, cfgErr(key, "%s=%q: not a port number (decimal 1..65535)", key, val)
	}
	if n == 0 {
		return 0, cfgErr(key, "%s=0: must be 1..65535", key)
	}
	return n, nil
}

// parseL2Spec reads the kernel's l2spec_type names.
func parseL2Spec(key, val string) (L2SpecType, error) {
	switch val {
	case "default":
		return L2SpecDefault, nil
	case "none":
		return L2SpecNone, nil
	}
	return 0, cfgErr(key, "%s=%q: must be default or none", key, val)
}

// parseSeq reads the kernel's seq names.
func parseSeq(key, val string) (SeqMode, error) {
	for m := SeqNone; m <= SeqBoth; m++ {
		if val == m.String() {
			return m, nil
		}
	}
	return 0, cfgErr(key, "%s=%q: must be none, send, recv or both", key, val)
}

// parseOversize reads the oversize= policy names.
func parseOversize(key, val string) (Oversize, error) {
	for o := OversizeFragment; o <= OversizeDrop; o++ {
		if val == o.String() {
			return o, nil
		}
	}
	return 0, cfgErr(key, "%s=%q: must be fragment or drop", key, val)
}

// parseMillis reads a duration as the kernel's options give it, plain
// milliseconds ("50"), or with a unit ("50ms", "1s", "1.5s"); at least 1ms.
func parseMillis(key, val string) (uint64, error) {
	if last := val[len(val)-1]; last >= '0' && last <= '9' {
		n, err := parseNumber(key, val, 32)
		if err == nil && n == 0 {
			err = cfgErr(key, "%s=0: leave it out for no reorder window", key)
		}
		return n * uint64(time.Millisecond), err
	}
	d, err := time.ParseDuration(val)
	if err != nil || d < time.Millisecond {
		return 0, cfgErr(key, "%s=%q: not a duration of at least 1ms (50, 50ms, 1s)", key, val)
	}
	return uint64(d), nil
}

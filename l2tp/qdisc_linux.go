package l2tp

import (
	"encoding/binary"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Some queueing disciplines cut a UDP GSO message into its datagrams when
// it is larger than they take whole (tbf above its max size, which tc sets
// to 2047 bytes unless told otherwise; taprio; cake with split-gso), queue
// those that fit and drop the rest, and still report the message as sent:
// behind a full one, GSO loses frames without a trace. The sender therefore
// asks, when it probes GSO, whether the device toward the peer has one.

// gsoCuttingQdiscs are the qdisc kinds that segment GSO messages.
var gsoCuttingQdiscs = []string{"tbf", "taprio", "cake"}

// cutsGSO reports whether the device the kernel routes peer through has a
// qdisc (root or below) that cuts GSO messages; false when it cannot tell.
func cutsGSO(peer sockaddr) bool {
	ifindex, err := routeDevice(peer)
	if err != nil || ifindex == 0 {
		return false
	}
	kinds, err := qdiscKinds(ifindex)
	if err != nil {
		return false
	}
	for _, k := range kinds {
		for _, c := range gsoCuttingQdiscs {
			if k == c {
				return true
			}
		}
	}
	return false
}

// routeDevice asks the kernel (RTM_GETROUTE) which device it routes peer
// through and returns its index.
func routeDevice(peer sockaddr) (int, error) {
	ip := peer.ap.Addr()
	family, addr := unix.AF_INET, ip.AsSlice()
	if !ip.Is4() {
		family = unix.AF_INET6
	}
	body := make([]byte, unix.SizeofRtMsg, unix.SizeofRtMsg+unix.SizeofRtAttr+16)
	body[0], body[1] = byte(family), byte(8*len(addr)) // rtm_family, rtm_dst_len
	body = appendAttr(body, unix.RTA_DST, addr)
	msgs, err := netlinkAsk(unix.RTM_GETROUTE, 0, body)
	if err != nil {
		return 0, err
	}
	for i := range msgs {
		if msgs[i].Header.Type != unix.RTM_NEWROUTE {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&msgs[i])
		if err != nil {
			return 0, err
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4 {
				return int(binary.NativeEndian.Uint32(a.Value)), nil
			}
		}
	}
	return 0, nil
}

// qdiscKinds lists the kinds of every qdisc on device ifindex (a dump of
// RTM_GETQDISC, filtered here).
func qdiscKinds(ifindex int) ([]string, error) {
	const sizeofTcMsg = 20 // family, pads, ifindex, handle, parent, info
	msgs, err := netlinkAsk(unix.RTM_GETQDISC, unix.NLM_F_DUMP, make([]byte, sizeofTcMsg))
	if err != nil {
		return nil, err
	}
	var kinds []string
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWQDISC || len(m.Data) < sizeofTcMsg ||
			int(int32(binary.NativeEndian.Uint32(m.Data[4:]))) != ifindex {
			continue
		}
		for a := m.Data[sizeofTcMsg:]; len(a) >= unix.SizeofRtAttr; {
			l := int(binary.NativeEndian.Uint16(a))
			if l < unix.SizeofRtAttr || l > len(a) {
				break
			}
			if binary.NativeEndian.Uint16(a[2:]) == unix.TCA_KIND {
				v := a[unix.SizeofRtAttr:l]
				for len(v) > 0 && v[len(v)-1] == 0 {
					v = v[:len(v)-1]
				}
				kinds = append(kinds, string(v))
			}
			a = a[min(len(a), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
		}
	}
	return kinds, nil
}

// appendAttr appends a route attribute (rtattr) of type typ to b.
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	l := unix.SizeofRtAttr + len(v)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%unix.RTA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// netlinkAsk sends one rtnetlink request (typ, extra flags, body) and
// returns the answer's messages, up to NLMSG_DONE for a dump.
func netlinkAsk(typ, flags uint16, body []byte) ([]syscall.NetlinkMessage, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 1}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	req := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	h := (*unix.NlMsghdr)(unsafe.Pointer(&req[0]))
	h.Len, h.Type, h.Flags, h.Seq = uint32(unix.NLMSG_HDRLEN+len(body)), typ, unix.NLM_F_REQUEST|flags, 1
	req = append(req, body...)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var out []syscall.NetlinkMessage
	for {
		buf := make([]byte, 64<<10) // the messages keep slices of it
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
						return nil, unix.Errno(-e)
					}
				}
				return out, nil
			}
			out = append(out, m)
		}
		if flags&unix.NLM_F_DUMP == 0 && len(out) > 0 {
			return out, nil
		}
	}
}

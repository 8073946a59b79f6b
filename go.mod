module github.com/l2tpv3-netdev/l2tpv3-netdev

go 1.26.8

require golang.org/x/sys v0.49.0

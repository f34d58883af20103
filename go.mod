module github.com/ovs-dns-forwarder/ovs-dns-forwarder

go 1.26.8

require (
	github.com/miekg/dns v1.1.73
	golang.org/x/net v0.57.0
	golang.org/x/sys v0.49.0
)

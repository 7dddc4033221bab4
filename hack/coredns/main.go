// A slim CoreDNS for the local cluster's DNS: coremain plus only the plugins a cluster DNS
// needs, built the documented way for an external main (coremain.Run with
// dnsserver.Directives set in init). There is deliberately no `forward` (nor `grpc`, `etcd`,
// cloud DNS) plugin: the local cluster answers cluster.local and the reverse zones from the
// API server and never sends a DNS query off the machine. A Corefile naming a plugin that is
// not compiled in fails to start with "Unknown directive".
//
// hack/cluster-binaries.sh copies this file into a generated module under .cache/ that
// requires github.com/coredns/coredns at the pinned version and builds it there.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// directives is upstream's plugin.cfg order (core/dnsserver/zdirectives.go) restricted to
// the plugins imported above. Order matters: a plugin sees every request before the
// plugins after it, so e.g. cache sits in front of kubernetes.
var directives = []string{
	"reload",
	"bind",
	"ready",
	"health",
	"prometheus", // package plugin/metrics
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
	"loop",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}

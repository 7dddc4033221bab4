// The custom-metrics-apiserver test adapter (sigs.k8s.io/custom-metrics-apiserver/test-adapter)
// with one change: upstream's main serves the metric write endpoint on ":8080", i.e. on every
// interface and a fixed port. The local e2e cluster binds to loopback only and picks free
// ports, so this main takes --write-address (default 127.0.0.1:8080). Everything else, the
// fake provider and its /write-metrics routes included, is the upstream package.
//
// hack/cluster-binaries.sh copies this file into a generated module under .cache/ that
// requires sigs.k8s.io/custom-metrics-apiserver at the pinned version and builds it there.
package main

import (
	"context"
	"net/http"
	"os"
	"time"

	"github.com/emicklei/go-restful/v3"
	"k8s.io/component-base/logs"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"sigs.k8s.io/custom-metrics-apiserver/pkg/apiserver/metrics"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	fakeprov "sigs.k8s.io/custom-metrics-apiserver/test-adapter/provider"
)

type adapter struct {
	basecmd.AdapterBase
	writeAddress string
}

func main() {
	logs.InitLogs()
	defer logs.FlushLogs()

	cmd := &adapter{}
	cmd.Name = "custom-metrics-test-adapter"
	cmd.Flags().StringVar(&cmd.writeAddress, "write-address", "127.0.0.1:8080",
		"host:port of the plain-HTTP endpoint that accepts POST /write-metrics/...")
	logs.AddFlags(cmd.Flags())
	if err := cmd.Flags().Parse(os.Args); err != nil {
		klog.Fatalf("unable to parse flags: %v", err)
	}

	client, err := cmd.DynamicClient()
	if err != nil {
		klog.Fatalf("unable to construct dynamic client: %v", err)
	}
	mapper, err := cmd.RESTMapper()
	if err != nil {
		klog.Fatalf("unable to construct discovery REST mapper: %v", err)
	}
	testProvider, webService := fakeprov.NewFakeProvider(client, mapper)
	cmd.WithCustomMetrics(testProvider)
	cmd.WithExternalMetrics(testProvider)

	if err := metrics.RegisterMetrics(legacyregistry.Register); err != nil {
		klog.Fatalf("unable to register metrics: %v", err)
	}

	container := restful.NewContainer()
	container.Add(webService)
	go func() {
		server := &http.Server{
			Addr:              cmd.writeAddress,
			Handler:           container,
			ReadHeaderTimeout: 3 * time.Second,
		}
		klog.Fatal(server.ListenAndServe())
	}()
	if err := cmd.Run(context.Background()); err != nil {
		klog.Fatalf("unable to run custom metrics adapter: %v", err)
	}
}

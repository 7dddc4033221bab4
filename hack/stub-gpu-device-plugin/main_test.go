package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func TestAllocateReturnsOnlyVisibleDevicesEnv(t *testing.T) {
	p := NewPlugin(3, "stub-gpu-")
	resp, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{"stub-gpu-0", "stub-gpu-2"}},
			{DevicesIds: []string{"stub-gpu-1"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 2 {
		t.Fatalf("want 2 container responses, got %d", len(resp.ContainerResponses))
	}
	want := []string{"stub-gpu-0,stub-gpu-2", "stub-gpu-1"}
	for i, cr := range resp.ContainerResponses {
		if !reflect.DeepEqual(cr.Envs, map[string]string{"NVIDIA_VISIBLE_DEVICES": want[i]}) {
			t.Errorf("container %d: envs %v, want NVIDIA_VISIBLE_DEVICES=%s only", i, cr.Envs, want[i])
		}
		if len(cr.Mounts)+len(cr.Devices)+len(cr.Annotations)+len(cr.CdiDevices) != 0 {
			t.Errorf("container %d: want no mounts, devices, annotations or CDI devices: %v", i, cr)
		}
	}
}

func TestAllocateRejectsUnknownDevice(t *testing.T) {
	p := NewPlugin(1, "stub-gpu-")
	_, err := p.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{"stub-gpu-1"}}},
	})
	if err == nil {
		t.Fatal("want an error for a device the plugin does not have")
	}
}

// fakeKubelet is a registration server that, like the kubelet, connects back to the plugin's
// endpoint on Register and reads the first ListAndWatch answer.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	dir  string
	regs chan registration
	srv  *grpc.Server
}

type registration struct {
	req     *pluginapi.RegisterRequest
	devices []*pluginapi.Device
	err     error
}

func startFakeKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{dir: dir, regs: make(chan registration, 4), srv: grpc.NewServer()}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(ln) }()
	return k
}

func (k *fakeKubelet) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	go func() { // the kubelet also connects back asynchronously
		r := registration{req: req}
		conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, req.Endpoint),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var stream grpc.ServerStreamingClient[pluginapi.ListAndWatchResponse]
			stream, err = pluginapi.NewDevicePluginClient(conn).ListAndWatch(ctx, &pluginapi.Empty{})
			if err == nil {
				var resp *pluginapi.ListAndWatchResponse
				if resp, err = stream.Recv(); err == nil {
					r.devices = resp.Devices
				}
			}
		}
		r.err = err
		k.regs <- r
	}()
	return &pluginapi.Empty{}, nil
}

func (k *fakeKubelet) expectRegistration(t *testing.T) registration {
	t.Helper()
	select {
	case r := <-k.regs:
		if r.err != nil {
			t.Fatalf("connecting back to the plugin: %v", r.err)
		}
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("no registration within 15s")
	}
	return registration{}
}

func TestRegistersAndRegistersAgainAfterKubeletRestart(t *testing.T) {
	dir, err := os.MkdirTemp("", "dp") // short: unix socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := Config{Devices: 2, ResourceName: "nvidia.com/gpu", IDPrefix: "stub-gpu-", PluginDir: dir, SocketName: "stub-gpu.sock"}

	kubelet := startFakeKubelet(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()

	r := kubelet.expectRegistration(t)
	if r.req.ResourceName != "nvidia.com/gpu" || r.req.Version != pluginapi.Version || r.req.Endpoint != "stub-gpu.sock" {
		t.Fatalf("unexpected RegisterRequest %v", r.req)
	}
	var ids []string
	for _, d := range r.devices {
		if d.Health != pluginapi.Healthy {
			t.Errorf("device %s is %s", d.ID, d.Health)
		}
		ids = append(ids, d.ID)
	}
	if !reflect.DeepEqual(ids, []string{"stub-gpu-0", "stub-gpu-1"}) {
		t.Fatalf("ListAndWatch devices %v", ids)
	}

	// A kubelet restart: it stops, wipes the sockets in the directory, and listens again.
	kubelet.srv.Stop()
	for _, name := range []string{"kubelet.sock", "stub-gpu.sock"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	kubelet = startFakeKubelet(t, dir)
	r = kubelet.expectRegistration(t)
	if len(r.devices) != 2 {
		t.Fatalf("after re-registration: devices %v", r.devices)
	}
	defer kubelet.srv.Stop()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil on a clean stop", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := os.Stat(filepath.Join(dir, "stub-gpu.sock")); !os.IsNotExist(err) {
		t.Errorf("plugin socket left behind after stop (stat: %v)", err)
	}
}

func TestRegistersWhenKubeletStartsAfterThePlugin(t *testing.T) {
	dir, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := Config{Devices: 1, ResourceName: "nvidia.com/gpu", IDPrefix: "stub-gpu-", PluginDir: dir, SocketName: "stub-gpu.sock"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = Run(ctx, cfg) }()
	time.Sleep(300 * time.Millisecond) // the plugin finds no kubelet.sock and waits
	kubelet := startFakeKubelet(t, dir)
	defer kubelet.srv.Stop()
	if r := kubelet.expectRegistration(t); len(r.devices) != 1 || r.devices[0].ID != "stub-gpu-0" {
		t.Fatalf("devices %v", r.devices)
	}
}

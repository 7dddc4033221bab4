// stub-gpu-device-plugin advertises N fake `nvidia.com/gpu` devices to a kubelet through the
// device plugin API (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), so that a real node in the
// local cluster can schedule and start GPU pods without a GPU.
//
// The devices are named stub-gpu-0 .. stub-gpu-<N-1> and are always Healthy. Allocate gives a
// container nothing but the environment variable NVIDIA_VISIBLE_DEVICES=<allocated ids,
// comma-separated>: no device nodes, no mounts, no annotations, no CDI devices.
//
// Lifecycle, as real device plugins do it: serve the DevicePlugin service on a unix socket in
// the kubelet's device-plugin directory, then call Register on the kubelet's socket
// (<dir>/kubelet.sock). A restarting kubelet deletes every socket in that directory and
// recreates kubelet.sock; the plugin watches the directory and, when kubelet.sock is created
// again, restarts its server and registers again. SIGTERM or SIGINT stops it cleanly (exit 0,
// its socket removed).
//
// The directory is not derived from the kubelet's --root-dir: kubelet 1.37 hard-codes
// /var/lib/kubelet/device-plugins/ (pluginapi.KubeletSocket in
// pkg/kubelet/cm/devicemanager/manager.go), hence the default of --device-plugin-dir.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

const (
	// VisibleDevicesEnv is the only thing Allocate hands to a container.
	VisibleDevicesEnv = "NVIDIA_VISIBLE_DEVICES"
	kubeletSocketName = "kubelet.sock"
	// registerRetry is how often an unregistered plugin tries again even without a
	// kubelet.sock event (covers a kubelet that was not serving yet when the event came).
	registerRetry = 5 * time.Second
)

// Config is what the flags set.
type Config struct {
	Devices      int
	ResourceName string
	IDPrefix     string
	PluginDir    string
	SocketName   string
}

// Plugin implements the DevicePlugin gRPC service for a fixed set of healthy devices.
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	devices []*pluginapi.Device
	known   map[string]bool
	stop    chan struct{} // closed when the current server generation stops
}

// NewPlugin returns a plugin advertising n devices named prefix0 .. prefix<n-1>.
func NewPlugin(n int, prefix string) *Plugin {
	p := &Plugin{known: map[string]bool{}, stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		p.devices = append(p.devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
		p.known[id] = true
	}
	return p
}

// GetDevicePluginOptions: no PreStartContainer, no GetPreferredAllocation.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the device list once (it never changes) and then holds the stream open
// until the kubelet goes away or this server generation stops.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices}); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
	case <-p.stop:
	}
	return nil
}

// Allocate answers each container request with NVIDIA_VISIBLE_DEVICES and nothing else.
func (p *Plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, creq := range req.ContainerRequests {
		for _, id := range creq.DevicesIds {
			if !p.known[id] {
				return nil, fmt.Errorf("allocate: unknown device %q", id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{VisibleDevicesEnv: strings.Join(creq.DevicesIds, ",")},
		})
	}
	return resp, nil
}

// PreStartContainer is never called (the options do not ask for it); answer it anyway.
func (p *Plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve starts one server generation on the plugin socket (replacing a stale socket file).
func serve(cfg Config) (*Plugin, *grpc.Server, error) {
	sock := filepath.Join(cfg.PluginDir, cfg.SocketName)
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, nil, err
	}
	p := NewPlugin(cfg.Devices, cfg.IDPrefix)
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Printf("device plugin server stopped: %v", err)
		}
	}()
	return p, srv, nil
}

func stopServer(p *Plugin, srv *grpc.Server) {
	if srv == nil {
		return
	}
	close(p.stop) // ends open ListAndWatch streams so GracefulStop can finish
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
}

// register calls Register on the kubelet's registration socket.
func register(ctx context.Context, cfg Config) error {
	conn, err := grpc.NewClient("unix://"+filepath.Join(cfg.PluginDir, kubeletSocketName),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     cfg.SocketName,
		ResourceName: cfg.ResourceName,
		Options:      &pluginapi.DevicePluginOptions{},
	})
	return err
}

// Run serves and registers until ctx is done, re-registering whenever the kubelet recreates
// kubelet.sock. It returns nil on a clean stop.
func Run(ctx context.Context, cfg Config) error {
	if err := os.MkdirAll(cfg.PluginDir, 0o750); err != nil {
		return err
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer watcher.Close()
	if err := watcher.Add(cfg.PluginDir); err != nil {
		return fmt.Errorf("watch %s: %w", cfg.PluginDir, err)
	}
	sock := filepath.Join(cfg.PluginDir, cfg.SocketName)
	kubeletSock := filepath.Join(cfg.PluginDir, kubeletSocketName)

	var (
		p          *Plugin
		srv        *grpc.Server
		registered bool
	)
	defer func() {
		stopServer(p, srv)
		_ = os.Remove(sock)
	}()
	restart := func() error {
		stopServer(p, srv)
		p, srv, registered = nil, nil, false
		p, srv, err = serve(cfg)
		if err != nil {
			return fmt.Errorf("serve on %s: %w", sock, err)
		}
		log.Printf("serving %d %s devices on %s", cfg.Devices, cfg.ResourceName, sock)
		return nil
	}
	tryRegister := func() {
		if err := register(ctx, cfg); err != nil {
			if ctx.Err() == nil {
				log.Printf("not registered yet (waiting for the kubelet at %s): %v", kubeletSock, err)
			}
			return
		}
		registered = true
		log.Printf("registered %s with the kubelet at %s", cfg.ResourceName, kubeletSock)
	}

	if err := restart(); err != nil {
		return err
	}
	tryRegister()
	ticker := time.NewTicker(registerRetry)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Printf("stopping")
			return nil
		case ev, ok := <-watcher.Events:
			if !ok {
				return errors.New("directory watch closed")
			}
			switch {
			case ev.Name == kubeletSock && ev.Has(fsnotify.Create):
				log.Printf("%s created: kubelet restarted, registering again", kubeletSock)
				if err := restart(); err != nil {
					return err
				}
				tryRegister()
			case ev.Name == sock && ev.Has(fsnotify.Remove) && srv != nil:
				// The kubelet's start-up cleanup removed our socket; kubelet.sock comes next.
				log.Printf("%s removed", sock)
				registered = false
			}
		case err, ok := <-watcher.Errors:
			if !ok {
				return errors.New("directory watch closed")
			}
			log.Printf("directory watch error: %v", err)
		case <-ticker.C:
			if !registered {
				if _, err := os.Stat(sock); err != nil {
					if err := restart(); err != nil {
						return err
					}
				}
				tryRegister()
			}
		}
	}
}

func main() {
	cfg := Config{}
	flag.IntVar(&cfg.Devices, "devices", 1, "number of stub GPUs to advertise")
	flag.StringVar(&cfg.ResourceName, "resource-name", "nvidia.com/gpu", "extended resource name")
	flag.StringVar(&cfg.IDPrefix, "id-prefix", "stub-gpu-", "device ids are this prefix plus 0..N-1")
	flag.StringVar(&cfg.PluginDir, "device-plugin-dir", pluginapi.DevicePluginPath,
		"the kubelet's device-plugin directory (kubelet.sock lives there; kubelet 1.37 hard-codes "+
			"it, independent of --root-dir)")
	flag.StringVar(&cfg.SocketName, "socket-name", "stub-gpu.sock", "this plugin's socket file in that directory")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if cfg.Devices < 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: stub-gpu-device-plugin [--devices N] [--device-plugin-dir DIR] ...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

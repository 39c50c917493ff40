package fakekubelet

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

const (
	leaseDuration     = 40 * time.Second
	leaseRenewPeriod  = 10 * time.Second
	kubeletWorkers    = 4
	kubeletVersion    = "v1.37.2"
	nodeLeaseNamspace = "kube-node-lease"
)

// fakeKubelet registers a Node, keeps its lease fresh and plays the part of the
// container runtime for the pods bound to it: it writes the status a real
// kubelet would, without running anything.
type fakeKubelet struct {
	client   kubernetes.Interface
	nodeName string
	hostIP   string
	pods     corelisters.PodLister
	queue    workqueue.TypedRateLimitingInterface[string]

	mu     sync.Mutex
	nextIP netip.Addr
	podIPs map[types.UID]string
}

// Run runs the fake kubelet until SIGTERM or SIGINT; args are its flags.
func Run(args []string) int {
	fs := flag.NewFlagSet("kubelet", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server")
	nodeName := fs.String("node-name", "localcluster-node", "name of the Node to register")
	hostIP := fs.String("node-ip", "127.0.0.1", "address reported as the node's and the pods' host IP")
	podCIDR := fs.String("pod-cidr", "10.244.0.0/16", "range that pod IPs are taken from")
	_ = fs.Parse(args)

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet: %v\n", err)
		return 1
	}
	config.QPS, config.Burst = 200, 400
	prefix, err := netip.ParsePrefix(*podCIDR)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubelet: --pod-cidr: %v\n", err)
		return 2
	}
	k := &fakeKubelet{
		client:   kubernetes.NewForConfigOrDie(config),
		nodeName: *nodeName,
		hostIP:   *hostIP,
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		nextIP:   prefix.Addr().Next(),
		podIPs:   map[types.UID]string{},
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if err := k.registerNode(ctx, *podCIDR); err != nil {
		fmt.Fprintf(os.Stderr, "kubelet: register node: %v\n", err)
		return 1
	}
	go k.renewLease(ctx)
	k.watchPods(ctx)
	fmt.Fprintf(os.Stderr, "kubelet: node %s ready\n", k.nodeName)
	<-ctx.Done()
	k.queue.ShutDown()
	return 0
}

func (k *fakeKubelet) registerNode(ctx context.Context, podCIDR string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("32"),
		corev1.ResourceMemory:           resource.MustParse("128Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("500Gi"),
		corev1.ResourcePods:             resource.MustParse("2000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: k.nodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": k.nodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "localcluster",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
	}
	if _, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	now := metav1.Now()
	condition := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	for attempt := 0; ; attempt++ {
		live, err := k.client.CoreV1().Nodes().Get(ctx, k.nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		live.Status = corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			Phase:       corev1.NodeRunning,
			Conditions: []corev1.NodeCondition{
				condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
				condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
				condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
				condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
			},
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: k.hostIP},
				{Type: corev1.NodeHostName, Address: k.nodeName},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion: kubeletVersion, OperatingSystem: "linux", Architecture: "amd64",
				ContainerRuntimeVersion: "localcluster://" + kubeletVersion, OSImage: "localcluster",
			},
		}
		_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, live, metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) || attempt > 5 {
			return err
		}
	}
}

// renewLease keeps the node's lease fresh; without it the node lifecycle
// controller marks the node NotReady and evicts its pods.
func (k *fakeKubelet) renewLease(ctx context.Context) {
	leases := k.client.CoordinationV1().Leases(nodeLeaseNamspace)
	for {
		now := metav1.NewMicroTime(time.Now())
		lease, err := leases.Get(ctx, k.nodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			node, nodeErr := k.client.CoreV1().Nodes().Get(ctx, k.nodeName, metav1.GetOptions{})
			if nodeErr != nil {
				break
			}
			lease = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{
					Name: k.nodeName, Namespace: nodeLeaseNamspace,
					OwnerReferences: []metav1.OwnerReference{{
						APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
					}},
				},
				Spec: coordinationv1.LeaseSpec{
					HolderIdentity: ptr(k.nodeName), LeaseDurationSeconds: ptr(int32(leaseDuration.Seconds())),
					RenewTime: &now,
				},
			}
			_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		case err == nil:
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "kubelet: renew lease: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(leaseRenewPeriod):
		}
	}
}

func (k *fakeKubelet) watchPods(ctx context.Context) {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "spec.nodeName=" + k.nodeName
		}))
	informer := factory.Core().V1().Pods()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	_, _ = informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	k.pods = informer.Lister()
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	for range kubeletWorkers {
		go func() {
			for k.processNext(ctx) {
			}
		}()
	}
}

func (k *fakeKubelet) processNext(ctx context.Context) bool {
	key, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(key)
	if err := k.syncPod(ctx, key); err != nil {
		if ctx.Err() == nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			fmt.Fprintf(os.Stderr, "kubelet: pod %s: %v\n", key, err)
		}
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

// syncPod brings one pod's status to what the simulated runtime says now, and
// schedules the next look when that status will change by itself.
func (k *fakeKubelet) syncPod(ctx context.Context, key string) error {
	namespace, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := k.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.DeletionTimestamp != nil {
		k.releaseIP(pod.UID)
		// The containers are not real, so they stop at once: honour deletion now.
		return k.client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr(int64(0)),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	now := time.Now()
	status, next := desiredStatus(pod, k.podIP(pod), k.hostIP, now)
	if !next.IsZero() {
		k.queue.AddAfter(key, next.Sub(now)+50*time.Millisecond)
	}
	if statusEqual(pod.Status, status) {
		return nil
	}
	updated := pod.DeepCopy()
	updated.Status = status
	_, err = k.client.CoreV1().Pods(namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

func (k *fakeKubelet) podIP(pod *corev1.Pod) string {
	if pod.Status.PodIP != "" {
		return pod.Status.PodIP
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if ip, ok := k.podIPs[pod.UID]; ok {
		return ip
	}
	ip := k.nextIP.String()
	k.nextIP = k.nextIP.Next()
	k.podIPs[pod.UID] = ip
	return ip
}

func (k *fakeKubelet) releaseIP(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.podIPs, uid)
}
